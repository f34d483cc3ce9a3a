"""Batched Cholesky on host memory by LAPACK ``potrf``, lane by lane (NumPy, PyTorch CPU).

Why not the frameworks' batched routines: for batch 128 of 100 x 100 matrices,
PyTorch's CPU ``cholesky_ex`` takes about 9-15 ms, of which 2-5 ms zero the upper
triangle (a copy through ``tril``), and NumPy's ``cholesky`` also writes the zeros;
calling ``potrf`` on each lane with ``clean=0`` takes 5-7 ms in float64 and 4-5 ms
in float32 (where PyTorch's takes as long as in float64). The Python loop costs
about 1.5 us a lane, so below 32 x 32 the frameworks' batched routines are faster
(``MIN_SIZE``). A temporary ``H`` is factored in place (``overwrite``); otherwise
each lane is copied just before it is factored, while it is in cache.

Layout: a C-ordered lane is the Fortran-ordered transpose of itself, and ``H`` is
symmetric, so ``potrf(lower=1)`` on ``lane.T`` (Fortran order, no copy) leaves
``L`` in the lower triangle of ``lane.T``: the C-ordered array holds ``L'`` in its
upper triangle. The other triangle keeps entries of ``H``; triangular solves
(LAPACK ``trtrs``/``trsm``) never read it.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import lapack

MIN_SIZE = 32

_POTRF = {np.dtype(np.float64): lapack.dpotrf, np.dtype(np.float32): lapack.spotrf}
_TRTRI = {np.dtype(np.float64): lapack.dtrtri, np.dtype(np.float32): lapack.strtri}


def supported(dtype, k: int) -> bool:
    """Whether :func:`factor_lanes` handles (k, k) matrices of NumPy ``dtype``."""
    return k >= MIN_SIZE and np.dtype(dtype) in _POTRF


def _in_place(routine, lane, **kw):
    """Run a LAPACK routine that overwrites its argument on ``lane.T`` (Fortran order)."""
    out, info = routine(lane.T, lower=1, **kw)
    if not np.shares_memory(out, lane):   # (the wrapper worked on a copy: write it back)
        lane[...] = out.T
    return info


def factor_lanes(H, shifts, scale, skip, invert: bool = False, overwrite: bool = False):
    """Cholesky factors of ``H + shift diag(scale)``, the first shift that works per lane.

    Parameters
    ----------
    H : (B, k, k) ndarray, float32 or float64
        Symmetric; read, never written unless ``overwrite``.
    shifts : tuple of float, increasing, or of one (B,) array (a shift per lane)
    scale : (B, k) ndarray, positive
    skip : (B,) bool ndarray
        Lanes not factored: their factor is the identity (``ok`` True).
    invert : bool
        Return the inverse of the factor instead (LAPACK ``trtri``, as many flops
        as the factorization), with zeros in the other triangle.
    overwrite : bool
        ``H`` is a temporary: factor it in place (if it is C-ordered and writable),
        and return it as ``U``.

    Returns
    -------
    U : (B, k, k) C-ordered ndarray of ``H``'s dtype
        Its upper triangle is ``L'`` (``H + shift diag(scale) = L L'``), or
        ``L^{-T}`` with ``invert``; its strict lower triangle is unspecified
        (zero with ``invert``). The identity where ``ok`` is False.
    ok : (B,) bool ndarray
        False where every shift failed or the factor is not finite.
    """
    B, k, _ = H.shape
    potrf, trtri = _POTRF[H.dtype], _TRTRI[H.dtype]
    in_place = overwrite and H.flags.c_contiguous and H.flags.writeable
    U = H if in_place else np.empty((B, k, k), dtype=H.dtype)
    d = U.reshape(B, k * k)[:, :: k + 1]     # the diagonals (a view)
    per_lane = np.ndim(shifts[0]) > 0
    if in_place:
        d0 = d.copy()
        d += (shifts[0][:, None] if per_lane else shifts[0]) * scale
    ok = np.zeros(B, dtype=bool)
    eye = np.eye(k, dtype=H.dtype)
    for i in range(B):
        lane = U[i]
        if skip[i]:
            lane[...] = eye
            ok[i] = True
            continue
        for j, shift in enumerate(shifts):
            shift = shift[i] if per_lane else shift
            if not in_place:
                lane[...] = H[i]
                d[i] += shift * scale[i]
            elif j:
                # potrf wrote the upper triangle and the diagonal only: rebuild the
                # lane from its strict lower triangle (H is symmetric) and d0.
                low = np.tril(lane, -1)
                lane[...] = low + low.T
                d[i] = d0[i] + shift * scale[i]
            if _in_place(potrf, lane, clean=0, overwrite_a=1) == 0:
                ok[i] = True
                break
        if ok[i] and invert:
            ok[i] = _in_place(trtri, lane, overwrite_c=1) == 0
    ok &= np.isfinite(d).all(axis=-1)
    if invert:
        U = np.triu(U)
    U[~ok] = eye
    return U, ok
