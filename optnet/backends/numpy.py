"""NumPy backend: LAPACK batched Cholesky; solves by multiplication with the factor's inverse.

NumPy has no batched triangular solve (SciPy's loops in Python, lane by lane,
once per call). Inverting each Cholesky factor once (LAPACK ``trtri``, n^3/3
flops, as much as the factorization) turns every later solve into one batched
matrix product. Multiplying by an explicit triangular inverse is less accurate
than substitution by a factor of about cond(L): the refinement of the polish's
and the derivatives' solves absorbs that, and the interior point's directions
need no more accuracy (with or without a refinement step, the same iterations
on the paper's batch and on the hard classes but the many-rows one, where the
interior point refines). From 32 x 32 on, the factor and its inverse are
computed lane by lane by LAPACK (``_lapack``).
"""

from __future__ import annotations

import types

import array_api_compat.numpy as xp
import numpy as np
from scipy.linalg import lapack

from .._ops import Ops
from . import _lapack
from ._eager import cholesky_per_lane, cond, while_loop


def _vecdot(a, b, /, *, axis=-1):
    """The inner product of a product and a sum: NumPy's own vecdot accumulates in an
    order that depends on the operands' memory layout (results would then differ, in the
    last bit, between a C- and an F-ordered input)."""
    return np.sum(a * b, axis=axis)


def _clip(x, /, min=None, max=None):
    """NumPy's clip (the compatibility layer's broadcasts and copies: ten times slower on
    the core's small arrays, whose bounds are Python numbers)."""
    return np.clip(x, min, max)


# array_api_compat's namespace with a layout-independent inner product and a lean clip.
namespace = types.SimpleNamespace(**{k: getattr(xp, k) for k in dir(xp) if not k.startswith("__")})
namespace.vecdot = _vecdot
namespace.clip = _clip


def _cholesky(H, shifts, factor_dtype, scale, skip, overwrite=False):
    """The factor is ``L^{-1}`` (B, k, k), in ``factor_dtype``."""
    if _lapack.supported(factor_dtype, H.shape[-1]):
        # potrf and trtri lane by lane (see _lapack); U holds L^{-T}.
        Hf = np.asarray(H, dtype=factor_dtype)
        U, ok = _lapack.factor_lanes(Hf, shifts, np.asarray(scale, dtype=factor_dtype),
                                     np.asarray(skip), invert=True,
                                     overwrite=overwrite or Hf is not H)
        return np.swapaxes(U, -1, -2), ok
    L, ok = cholesky_per_lane(xp, H, shifts, (np.linalg.LinAlgError,), factor_dtype, scale,
                              skip)
    Lf = L.astype(factor_dtype, copy=False)
    trtri = lapack.strtri if Lf.dtype == np.float32 else lapack.dtrtri
    inv = np.empty_like(Lf)
    for i in range(Lf.shape[0]):
        inv[i], info = trtri(Lf[i], lower=1)
        if info != 0:      # singular despite a successful factorization (cannot happen
            inv[i] = np.eye(Lf.shape[-1], dtype=Lf.dtype)   # for finite positive pivots)
            ok[i] = False
    return inv, ok      # in factor_dtype: a float32 factor solves in float32


def _solve_triangular(Linv, R, transpose):
    X = (np.swapaxes(Linv, -1, -2) if transpose else Linv) @ R.astype(Linv.dtype, copy=False)
    return X.astype(R.dtype, copy=False)


def quiet():
    """Silence floating-point warnings: NaN/Inf in a failed lane is reported by its status."""
    return np.errstate(all="ignore")


def asarray(a):
    """Convert any array (or nested sequence) to a NumPy array."""
    if isinstance(a, np.ndarray):
        return a
    if hasattr(a, "__dlpack__") and not hasattr(a, "__array__"):
        return np.from_dlpack(a)
    return np.asarray(a)


def _put_lanes(full, part, idx, inplace=False):
    dtype = np.result_type(full, part)                 # promoted as where() would
    if inplace and full.dtype == dtype and full.flags.writeable:
        full[idx] = part
        return full
    out = full.astype(dtype)                           # a copy
    out[idx] = part
    return out


ops = Ops(name="numpy", cholesky=_cholesky, solve_triangular=_solve_triangular,
          cond=cond, while_loop=while_loop, eager=True, put_lanes=_put_lanes,
          narrow_factors=lambda device: True)


def has_float64(device=None) -> bool:
    return True


def to_host(a):
    return np.asarray(a)
