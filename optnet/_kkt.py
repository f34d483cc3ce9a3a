"""Batched solves with the symmetric (reduced) KKT matrix of the QP.

Both the interior-point iteration and the derivatives need solves with

        [ Q   A'  G' ] [dx]   [rx]
    K = [ A   0   0  ] [dy] = [ry]          W = diag(w) = diag(s / z) > 0
        [ G   0  -W  ] [dz]   [rz]

Derivation of the reduced solve
-------------------------------
The third row gives ``dz = W^{-1} (G dx - rz)``. Substituting into the first::

    H dx + A' dy = rx + G' W^{-1} rz =: r,      H = Q + G' W^{-1} G   (n x n, PSD)
    A dx         = ry.

With ``H`` positive definite, ``dx = H^{-1}(r - A' dy)`` and the equality rows give
the Schur complement system ``S dy = A H^{-1} r - ry`` with ``S = A H^{-1} A'``.

Regularization. ``Q`` may be only semidefinite (an LP has Q = 0) and ``A`` may
have dependent rows, so ``H`` or ``S`` can be singular although ``K`` is not
(or ``K`` is singular but the system consistent). Both are therefore shifted
relative to their diagonal:

    H_reg = H + delta D_H = D_H^{1/2} (D_H^{-1/2} H D_H^{-1/2} + delta I) D_H^{1/2},   D_H = diag(H)

(a shift of ``delta`` on the unit-diagonal, Jacobi-scaled matrix) and likewise
``S_reg``. The scaled matrix itself is never formed: Cholesky factorization and
triangular substitution commit the same relative rounding errors on ``H`` as on
``D^{-1/2} H D^{-1/2}`` (their error bounds are invariant under symmetric
diagonal scaling, Demmel 1989; van der Sluis 1969), so the 1e-12..1e12 spread
of ``W`` near the end of the iteration costs no accuracy that scaling would
save, and forming it would cost two passes over the (B, n, n) matrix.
That is the quasi-definite matrix ``K_reg = K + diag(delta D_H, -delta D_S, 0)``.
Its solution is corrected by iterative refinement against the exact ``K``:
``u <- u + K_reg^{-1}(r - K u)``, a proximal point iteration on the saddle-point
system that converges for any delta > 0 and gains ~log10(1/delta) digits per step
on well-posed systems.

Cost: one n x n Cholesky (plus an m x m one with equalities) per factorization;
each solve is triangular solves only.

Diagonal ``H``. Where ``Q`` is diagonal and every row of ``G`` has at most one nonzero
(bounds on the variables, ``G = -I`` in the OptNet paper's Sudoku layer), ``G'W^{-1}G``
is diagonal too: ``(G'W^{-1}G)_jj = sum_i G_ij^2 / w_i``, each row contributing to its one
column. Then ``H_reg`` is a vector, its "Cholesky factor" ``L_H`` its square root (stored
as a column (B, n, 1)), ``M = A' / L_H`` a row scaling and the solves with ``L_H``
divisions: O(n (m + p)) per factorization instead of O(n^2 p + n^3), and only the m x m
Schur complement is factored (``Problem.diagonal_h``, set where it holds).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from array_api_compat import array_namespace, is_torch_array

from ._ops import lane_shift
from ._problem import Problem

# PyTorch's CPU batched product of matrices with a few vectors is 1.5-4x faster with
# the vectors as rows times the transposed matrix than with them as columns (batch 128,
# 100 x 100, one or two vectors); XLA's is 30% slower that way and NumPy's the same.
# The layout is chosen by array type (array_api_compat's test imports no framework).


def _rows(M) -> bool:
    return is_torch_array(M) and M.device.type == "cpu"


def _shared(M, v) -> bool:
    """``M`` (1, r, c) is shared by the lanes of ``v`` (B > 1, ...): its products with
    them are then one product of two matrices (the lanes stacked as rows), where a
    batched product would multiply each lane's row or columns by the broadcast matrix
    separately (the OptNet paper's Sudoku layer, A of 40 x 64 and G = -I shared by 150
    lanes: 0.13 ms a product against 0.02 ms, on a CPU with torch)."""
    return M.shape[0] == 1 and v.shape[0] != 1


def mv(M, v):
    """Batched ``M @ v`` for M (1|B, r, c), v (B, c) -> (B, r)."""
    if _shared(M, v):
        return v @ M[0, ...].mT
    if _rows(M):
        return (v[..., None, :] @ M.mT)[..., 0, :]
    return (M @ v[..., None])[..., 0]


def mtv(M, v):
    """Batched ``M' @ v`` for M (1|B, r, c), v (B, r) -> (B, c)."""
    if _shared(M, v):
        return v @ M[0, ...]
    return (v[..., None, :] @ M)[..., 0, :]


def _rows_of(R):
    """The columns of R (B, c, k) as the rows of one (B k, c) matrix."""
    B, c, k = R.shape
    return array_namespace(R).reshape(R.mT, (B * k, c))


def _unstacked(P, B: int, k: int):
    """:func:`_rows_of` undone: P (B k, r) -> (B, r, k)."""
    return array_namespace(P).reshape(P, (B, k, P.shape[-1])).mT


def mm(M, R):
    """Batched ``M @ R`` for M (1|B, r, c), R (B, c, k) with few columns -> (B, r, k)."""
    if _shared(M, R):
        B, _, k = R.shape
        return _unstacked(_rows_of(R) @ M[0, ...].mT, B, k)
    return (R.mT @ M.mT).mT if _rows(M) else M @ R


def mtm(xp, M, R):
    """Batched ``M' @ R`` for M (1|B, r, c), R (B, r, k) with few columns -> (B, c, k)."""
    if _shared(M, R):
        B, _, k = R.shape
        return _unstacked(_rows_of(R) @ M[0, ...], B, k)
    return (R.mT @ M).mT if _rows(M) else xp.matrix_transpose(M) @ R


def vdot(xp, a, b):
    """Batched inner product over the last axis, (B, k) x (B, k) -> (B,) (one kernel)."""
    return xp.vecdot(a, b)


class Narrow(NamedTuple):
    """Float32 copies of ``Q`` (1|B, n, n) and ``G`` (1|B, p, n) (or None), made once per
    solve where the interior point factors in a narrower dtype than it iterates in (mixed
    precision): the narrow factorizations and solves are formed from them."""

    Q: Any
    G: Any


def narrow_copies(xp, prob: Problem) -> Narrow | None:
    """:class:`Narrow` copies of ``prob``'s data, or None where ``prob.factor_dtype`` is
    its iteration dtype."""
    if prob.factor_dtype == prob.dtype:
        return None
    fd = prob.factor_dtype
    return Narrow(xp.astype(prob.Q, fd), None if prob.G is None else xp.astype(prob.G, fd))


class KKTFactor(NamedTuple):
    """Factorization of ``K_reg`` for one value of ``w``.

    Attributes
    ----------
    L_H : opaque     Cholesky factor of ``H_reg`` (``ops.cholesky``).
    M : (B, n, m) or None   ``L_H^{-1} A'``.
    L_S : opaque or None    the same for ``S_reg``.
    w : (B, p) or None       ``s / z``.
    ok : (B,) bool           False where a Cholesky failed.
    winv : (B, p, 1) or None ``1 / w`` as a column (every solve scales by it).
    """

    L_H: Any
    M: Any
    L_S: Any
    w: Any
    ok: Any
    winv: Any = None


def diagonal_scale(xp, Mat):
    """(B, k) the diagonal of ``Mat`` (B, k, k), with 1 where it is not positive (normal):
    the scale of the relative shifts of ``ops.cholesky``."""
    d = xp.linalg.diagonal(Mat)
    return xp.where(d > xp.finfo(Mat.dtype).smallest_normal, d, 1.0)


def _shifted_cholesky(xp, ops, Mat, delta, skip, factor_dtype, overwrite=False, boost=None):
    """Cholesky of ``Mat + shift diag(Mat)``; the identity where ``skip``. ``overwrite``:
    ``Mat`` is a temporary the backend may overwrite.

    Without ``boost``, ``shift`` is ``delta``, raised (per lane, only where the
    factorization fails) to ``1e3 delta``, ``1e6 delta`` and ``1e9 delta``. With
    ``boost`` (B,) (the interior point's per-lane regularization factors): one try with
    ``boost * delta``, a lane's failure reported in ``ok`` (the interior point raises that
    lane's boost: no host read).
    """
    scale = diagonal_scale(xp, Mat)
    if factor_dtype != Mat.dtype and factor_dtype == xp.float32:
        # A narrower factor needs a shift above its own rounding level.
        delta = max(delta, 1e-7)
    return ops.cholesky(Mat, _shifts(delta, boost), factor_dtype, scale, skip,
                        overwrite=overwrite)


def _shifts(delta, boost):
    """The relative shifts a factorization tries (see :func:`_shifted_cholesky`)."""
    if boost is None:
        return (delta, 1e3 * delta, 1e6 * delta, 1e9 * delta)
    return (delta * boost,)


def factor(xp, ops, prob: Problem, w, delta, skip, high=None, boost=None,
           narrow: Narrow | None = None) -> KKTFactor:
    """Factor ``K_reg`` for all lanes (lanes with ``skip`` get a dummy factor).

    Parameters
    ----------
    w : (B, p) or None
        ``s / z`` (positive).
    delta : float
        Relative regularization.
    skip : (B,) bool
        Lanes that need no factorization (finished or bad); they get identities.
    high : bool, bool array (0-d or (B,)) or None
        For mixed precision (``prob.factor_dtype`` narrower than ``prob.dtype``):
        where True (lane by lane for a (B,) array), factor in the iteration dtype
        instead. None: always ``prob.factor_dtype``.
    boost : (B,) array or None
        Per-lane factors of ``delta``, one try (see ``_shifted_cholesky``); None: ``delta``
        raised where a factorization fails.
    narrow : Narrow or None
        The narrow copies of the data (made here where needed and not given).
    """
    if high is None or prob.factor_dtype == prob.dtype:
        return _factor(xp, ops, prob, w, delta, skip, prob.factor_dtype, boost, narrow)
    if isinstance(high, bool):
        return _factor(xp, ops, prob, w, delta, skip,
                       prob.dtype if high else prob.factor_dtype, boost, narrow)

    def in_dtype(dtype):
        F = _factor(xp, ops, prob, w, delta, skip, dtype, boost, narrow)
        if ops.eager:    # a Python branch: the narrow factor may stay narrow
            return F
        # Both branches of a traced cond must return one dtype.
        return F._replace(L_H=xp.astype(F.L_H, prob.dtype),
                          L_S=None if F.L_S is None else xp.astype(F.L_S, prob.dtype))

    if high.ndim == 0:
        return ops.cond(high, lambda: in_dtype(prob.dtype), lambda: in_dtype(prob.factor_dtype))
    # Lane by lane (a traced per-lane precision level): both factorizations, selected.
    wide, low = in_dtype(prob.dtype), in_dtype(prob.factor_dtype)

    def pick(a, b):
        if a is None:
            return None
        return xp.where(xp.reshape(high, (-1,) + (1,) * (a.ndim - 1)), a, b)

    return KKTFactor(*(pick(a, b) for a, b in zip(wide, low, strict=True)))


def _factor(xp, ops, prob: Problem, w, delta, skip, factor_dtype, boost=None,
            narrow: Narrow | None = None) -> KKTFactor:
    if prob.diagonal_h:
        return _factor_diagonal(xp, ops, prob, w, delta, skip, factor_dtype, boost)
    Q, G = prob.Q, prob.G
    winv = None if w is None else (1.0 / w)[:, :, None]     # (B, p, 1), kept for the solves
    scale = winv
    if factor_dtype != prob.dtype:
        # Mixed precision: H is formed in the factor's precision too (its rounding is of
        # the order of the factorization's own; the product G'W^{-1}G is the costliest
        # part of a factorization, and twice as fast in float32).
        narrow = narrow_copies(xp, prob) if narrow is None else narrow
        Q, G = narrow
        scale = None if winv is None else xp.astype(winv, factor_dtype)
    H, fresh = Q, False
    if prob.p:
        # G'(W^{-1} G): the scaled copy keeps G's layout; Q is added in place to the
        # product, a new array (no third (B, n, n) array), which the Cholesky may overwrite.
        H = xp.matrix_transpose(G) @ (G * scale)
        H += Q
        fresh = True
    B = skip.shape[0]
    if H.shape[0] != B:
        H, fresh = xp.broadcast_to(H, (B, *H.shape[1:])), False
    L_H, ok = _shifted_cholesky(xp, ops, H, delta, skip, factor_dtype, fresh, boost)
    M = L_S = None
    if prob.m:
        At = xp.broadcast_to(xp.matrix_transpose(prob.A), (B, prob.n, prob.m))
        M = ops.solve_triangular(L_H, At, False)
        S = xp.matrix_transpose(M) @ M
        L_S, ok_S = _shifted_cholesky(xp, ops, S, delta, skip, factor_dtype, True, boost)
        ok = ok & ok_S
    return KKTFactor(L_H=L_H, M=M, L_S=L_S, w=w, ok=ok, winv=winv)


def _factor_diagonal(xp, ops, prob: Problem, w, delta, skip, factor_dtype,
                     boost=None) -> KKTFactor:
    """:func:`_factor` where ``H`` is diagonal (module docstring): the shifts of
    :func:`_shifted_cholesky` (:func:`_shifts`) on the vector ``diag(H)``, whose
    factorization succeeds where every shifted entry is positive and finite. ``L_H`` is held in
    ``factor_dtype`` as a Cholesky factor would be (the narrow solves use it as such)."""
    B, n = skip.shape[0], prob.n
    winv = None if w is None else (1.0 / w)[:, :, None]
    d = xp.linalg.diagonal(prob.Q)
    if prob.p:
        # sum_i G_ij^2 / w_i as one product (G * G is small where G is shared).
        d = d + mtv(prob.G * prob.G, winv[..., 0])
    d = xp.broadcast_to(d, (B, n))
    scale = xp.where(d > xp.finfo(d.dtype).smallest_normal, d, 1.0)
    Hr = ok = None
    for shift in _shifts(delta, boost):
        t = d + lane_shift(shift) * scale
        good = xp.all((t > 0) & (t < xp.inf), axis=-1)      # (NaN fails both)
        if Hr is None:
            Hr, ok = t, good
        else:
            Hr, ok = xp.where((good & ~ok)[:, None], t, Hr), ok | good
    if boost is None:
        # Where every shift failed, and in skipped lanes: the identity's factor.
        Hr = xp.where((ok & ~skip)[:, None], Hr, 1.0)
    ok = ok | skip
    L_H = xp.astype(xp.sqrt(Hr), factor_dtype)[:, :, None]
    M = L_S = None
    if prob.m:
        M = xp.broadcast_to(xp.matrix_transpose(prob.A), (B, n, prob.m)) / L_H
        S = xp.matrix_transpose(M) @ M
        L_S, ok_S = _shifted_cholesky(xp, ops, S, delta, skip, prob.factor_dtype, True, boost)
        ok = ok & ok_S
    return KKTFactor(L_H=L_H, M=M, L_S=L_S, w=w, ok=ok, winv=winv)


def factor_at(xp, ops, prob: Problem, w, delta, skip, level, boost=None,
              narrow: Narrow | None = None) -> KKTFactor:
    """:func:`factor` at the interior point's precision ``level`` (a Python int, or an
    integer array, 0-d or (B,) lane by lane, where traced): level 0 factors in
    ``prob.factor_dtype`` (narrow, in mixed precision, from ``narrow``), higher levels in
    the iteration dtype."""
    return factor(xp, ops, prob, w, delta, skip, level > 0, boost, narrow)


def refine_counts(cfg) -> tuple:
    """The refinement steps of the interior point's solves at precision levels 1, 2, ...
    (level 0, mixed precision only, is the narrow solve): ``cfg.refine``, then at least
    one, then at least ``cfg.refine_top``; a level that would refine no more than the one
    below it is left out, so the top level is ``len(refine_counts(cfg))``."""
    counts = []
    for k in (cfg.refine, max(cfg.refine, 1), max(cfg.refine, cfg.refine_top)):
        if not counts or k > counts[-1]:
            counts.append(k)
    return tuple(counts)


def solve_at(xp, ops, prob: Problem, cfg, F: KKTFactor, level, rx, ry, rz,
             narrow: Narrow | None = None):
    """Solve ``K u = r`` at the interior point's precision ``level`` and return ``u``
    stacked, (B, n + m + p, k); blocks as in :func:`solve`.

    Level 0 (mixed precision only): one unrefined solve in the narrow dtype
    (:func:`solve_narrow`); level k >= 1: ``refine_counts(cfg)[k - 1]`` refinement steps.
    ``level`` a Python int chooses in Python; an array, by ``ops.cond`` (level 0) and a
    traced refinement count.
    """
    mixed = prob.factor_dtype != prob.dtype
    counts = refine_counts(cfg)

    def full(refine):
        return solve(xp, ops, prob, F, rx, ry, rz, refine)

    if isinstance(level, int):
        if level == 0 and mixed:
            out = solve_narrow(xp, ops, prob, F, rx, ry, rz, narrow)
        else:
            out = full(counts[min(max(level, 1), len(counts)) - 1])
    else:
        # Per lane: each lane's refinement count (a traced loop to the largest, the other
        # lanes' corrections masked), and in mixed precision its narrow or wide solve.
        steps = xp.asarray(counts, dtype=xp.int32, device=prob.device)
        at = xp.astype(xp.clip(xp.reshape(level, (-1,)) - 1, 0, len(counts) - 1), xp.int32)
        out = full(counts[0] if len(counts) == 1 else xp.take(steps, at))
        if mixed:
            low = xp.reshape(level == 0, (-1, 1, 1))
            out = tuple(None if a is None else xp.where(low, b, a)
                        for a, b in zip(out, solve_narrow(xp, ops, prob, F, rx, ry, rz, narrow)))
    blocks = [b for b in out if b is not None]
    return xp.concat(blocks, axis=-2) if len(blocks) > 1 else blocks[0]


def _solve_L(ops, prob: Problem, F: KKTFactor, r):
    """``L_H^{-1} r`` for r (B, n, k)."""
    return r / F.L_H if prob.diagonal_h else ops.solve_triangular(F.L_H, r, False)


def _solve_H(ops, prob: Problem, F: KKTFactor, r):
    """``H_reg^{-1} r`` for r (B, n, k)."""
    if prob.diagonal_h:
        return r / F.L_H / F.L_H
    return ops.solve_triangular(F.L_H, ops.solve_triangular(F.L_H, r, False), True)


def _solve_reg(xp, ops, prob: Problem, F: KKTFactor, rx, ry, rz):
    """One solve with ``K_reg``; all right-hand sides (B, size, k); ``rz`` None means zero."""
    r = rx
    if prob.p:
        winv = F.winv
        if rz is not None:
            r = r + mtm(xp, prob.G, winv * rz)
    if prob.m:
        # S dy = A H^{-1} r - ry, with A H^{-1} r = M' L_H^{-1} r.
        t = _solve_L(ops, prob, F, r)
        rhs = xp.matrix_transpose(F.M) @ t - ry
        dy = ops.solve_triangular(F.L_S, ops.solve_triangular(F.L_S, rhs, False), True)
        dx = _solve_H(ops, prob, F, r - mtm(xp, prob.A, dy))
    else:
        dy = ry
        dx = _solve_H(ops, prob, F, r)
    dz = None
    if prob.p:
        Gdx = mm(prob.G, dx)
        dz = winv * (Gdx if rz is None else Gdx - rz)
    return dx, dy, dz


def solve_narrow(xp, ops, prob: Problem, F: KKTFactor, rx, ry, rz, narrow: Narrow | None = None):
    """One unrefined solve with a narrow factor (mixed precision), entirely in
    ``prob.factor_dtype``: right-hand sides, products with the :class:`Narrow` copies
    and triangular solves; the result is returned in ``prob.dtype``.

    Its accuracy is the narrow dtype's (relative to the conditioning of ``K``), which
    is what the early interior-point iterations need; ``_pdipm`` measures it and
    factors in full precision once it no longer suffices.
    """
    fd = prob.factor_dtype

    def nar(v):
        return None if v is None else xp.astype(v, fd)

    Q, G = narrow_copies(xp, prob) if narrow is None else narrow
    sub = prob._replace(Q=Q, G=G, A=nar(prob.A), b=nar(prob.b))
    out = _solve_reg(xp, ops, sub, F._replace(w=nar(F.w), M=nar(F.M), winv=nar(F.winv)),
                     nar(rx), nar(ry), nar(rz))
    return tuple(None if v is None else xp.astype(v, prob.dtype) for v in out)


def apply_K(xp, prob: Problem, w, dx, dy, dz, z_row: bool = True):
    """``K @ [dx; dy; dz]`` with the exact (unregularized) K; blocks (B, size, k).

    ``z_row=False`` leaves out the third block row (returned as None).
    """
    ox = mm(prob.Q, dx)
    oy = oz = None
    if prob.m:
        ox = ox + mtm(xp, prob.A, dy)
        oy = mm(prob.A, dx)
    if prob.p:
        ox = ox + mtm(xp, prob.G, dz)
        if z_row:
            oz = mm(prob.G, dx) - w[:, :, None] * dz
    return ox, oy, oz


def solve(xp, ops, prob: Problem, F: KKTFactor, rx, ry, rz, refine: int, lanes=None,
          unrolled: bool = False):
    """Solve ``K [dx; dy; dz] = [rx; ry; rz]`` with up to ``refine`` refinement steps.

    Parameters
    ----------
    rx : (B, n, k)   ry : (B, m, k) or None   rz : (B, p, k) or None
        Right-hand sides (k columns solved at once).
    refine : int, or an int array (B,) on traced backends
        Refinement steps (lane by lane for an array). All are taken unless ``lanes`` is
        given.
    lanes : (B,) bool or None
        The lanes whose solution matters. Given, an eager backend stops refining
        once no lane of ``lanes`` gains from another step (see ``_refined_enough``).
    unrolled : bool
        Traced backends take the steps in one ``ops.while_loop`` unless ``unrolled``
        (a linear map JAX is to transpose, as the derivatives' solves, has no loop).

    Returns
    -------
    dx : (B, n, k), dy : (B, m, k) or None, dz : (B, p, k) or None
    """
    sol = _solve_reg(xp, ops, prob, F, rx, ry, rz)
    if not (ops.eager or unrolled):
        return _refine_traced(xp, ops, prob, F, rx, ry, sol, refine)
    last = None
    for _ in range(refine):
        # The third block row needs no refinement: _solve_reg sets dz = W^{-1}(G dx - rz),
        # so rz - (G dx - W dz) is a rounding error of that very product, relative to
        # |W dz|; its correction would be W^{-1} times it, a rounding error of dz. Taking
        # it as zero spares two products with G per step (G dx here, G'(W^{-1} rz) in
        # the correction); dz of the sum is still W^{-1}(G dx - rz) up to rounding.
        kx, ky, _ = apply_K(xp, prob, F.w, *sol, z_row=False)
        if lanes is not None and ops.eager:
            done, last = _refined_enough(xp, prob, lanes, last, (kx, rx), (ky, ry))
            if done:
                break
        corr = _solve_reg(xp, ops, prob, F, rx - kx, ry - ky if prob.m else None, None)
        sol = tuple(None if a is None else a + c for a, c in zip(sol, corr, strict=False))
    return sol


def _refine_traced(xp, ops, prob: Problem, F: KKTFactor, rx, ry, sol, refine):
    """The refinement steps of :func:`solve` as one ``ops.while_loop``: one correction in
    the program whatever their number. ``refine`` an int, or an int array (B,) (or (1,)):
    lane by lane, the loop running to the largest count and the corrections of lanes past
    their own count dropped (so that a lane's result depends on its count alone)."""
    per_lane = not isinstance(refine, int)

    def body(carry):
        k, dx, dy, dz = carry
        kx, ky, _ = apply_K(xp, prob, F.w, dx, dy, dz, z_row=False)
        cx, cy, cz = _solve_reg(xp, ops, prob, F, rx - kx, ry - ky if prob.m else None, None)
        take = xp.reshape(k < refine, (-1, 1, 1)) if per_lane else None

        def add(a, c):
            if a is None:
                return None
            return a + c if take is None else xp.where(take, a + c, a)

        return (k + 1, add(dx, cx), add(dy, cy), add(dz, cz))

    if not per_lane and refine == 0:
        return sol
    k0 = xp.asarray(0, dtype=xp.int32, device=prob.device)

    def more(c):
        # (``any``, not ``max``: a batch may have no lanes)
        return xp.any(c[0] < refine) if per_lane else c[0] < refine

    _, *sol = ops.while_loop(more, body, (k0, *sol))
    return tuple(sol)


def relative_residual(xp, pairs, axis, scale=None):
    """Per lane, ``max |k - r| / max(|k|, |r|, scale)`` over the pairs ``(k, r)`` of
    ``K u`` and its right-hand side (maxima over ``axis`` and over the pairs).

    ``scale`` (broadcasting to the result) enlarges the denominator, e.g. with the size
    of a block row that is not compared.
    """
    top = big = None
    for k, r in pairs:
        e = xp.max(xp.abs(k - r), axis=axis)
        c = xp.maximum(xp.max(xp.abs(k), axis=axis), xp.max(xp.abs(r), axis=axis))
        top = e if top is None else xp.maximum(top, e)
        big = c if big is None else xp.maximum(big, c)
    if scale is not None:
        big = xp.maximum(big, scale)
    return top / xp.maximum(big, xp.finfo(top.dtype).smallest_normal)


def _refined_enough(xp, prob: Problem, lanes, last, xrow, yrow):
    """Whether a refinement step would gain nothing, and the residuals (B,) it measured.

    A lane's relative residual is ``relative_residual`` of the first two block rows
    (``xrow``, ``yrow``: pairs ``(K u, r)``; the third row is exact, see ``solve``). A
    step gains nothing on a lane whose residual is at the rounding level of forming it,
    ``(n + m) eps``, or fell by less than half in the last step (the step's own
    rounding then dominates). On the paper's batch (float64, n = 100, m + p = 100 rows in
    the polish: threshold 4.4e-14) the polish's first solve leaves at most 5.6e-14 and
    one step 4.1e-14, so the second step is not taken.
    """
    err = relative_residual(xp, (xrow, yrow) if prob.m else (xrow,), (-2, -1))
    gains = lanes & (err > (prob.n + prob.m) * xp.finfo(err.dtype).eps)
    if last is not None:
        gains = gains & (err < 0.5 * last)
    return not bool(xp.any(gains)), err
