"""Batched primal-dual interior-point method on the homogeneous self-dual embedding.

The QP (per lane)::

    minimize  1/2 x'Qx + q'x   subject to  Ax = b,  Gx + s = h,  s >= 0

with duals ``y`` (equalities, free) and ``z >= 0`` (inequalities). Its
homogeneous embedding for quadratic objectives (the form used by Clarabel,
Goulart & Chen 2024) adds ``tau, kappa >= 0``::

    r_x   = Qx + A'y + G'z + q tau               = 0
    r_y   = Ax - b tau                            = 0
    r_z   = Gx + s - h tau                        = 0
    r_tau = kappa + q'x + b'y + h'z + x'Qx / tau  = 0
    s o z = 0,   tau kappa = 0.

A solution with tau > 0 gives the QP's optimum ``(x, y, z, s) / tau``; one with
tau = 0 < kappa gives a certificate: ``b'y + h'z < 0`` with ``A'y + G'z = 0``,
``z >= 0`` (primal infeasible) or ``q'x < 0`` with ``Qx = 0, Ax = 0, Gx <= 0``
(unbounded). So infeasibility is detected from the iterates of the same
method, lane by lane, with no phase one.

Newton step (Mehrotra predictor-corrector, as in CVXGEN and the paper's eqs.
9-10). Linearizing with right-hand sides ``d`` (``d = r`` for the affine
predictor, ``(1 - sigma) r`` plus the second-order terms for the corrector)::

    Q dx + A'dy + G'dz + q dtau                          = -d_x
    A dx - b dtau                                        = -d_y
    G dx + ds - h dtau                                   = -d_z
    dkappa + (q + 2 Q xi)'dx + b'dy + h'dz - xi'Q xi dtau = -d_tau    (xi = x / tau)
    z o ds + s o dz                                      = -d_s
    kappa dtau + tau dkappa                              = -d_kappa

Eliminating ``ds = -(d_s + s o dz) / z`` leaves the symmetric KKT matrix ``K``
of ``_kkt`` with ``W = s / z``, so ``[dx; dy; dz] = u2 + dtau u1`` where::

    K u1 = [-q; b; h],     K u2 = [-d_x; -d_y; -d_z + d_s / z],

(one factorization, three solves per iteration) and, eliminating ``dkappa``::

    dtau = (d_tau - d_kappa / tau + (q + 2 Q xi)'x2 + b'y2 + h'z2)
           / (kappa / tau + (x1 - xi)'Q(x1 - xi) + z1'W z1).

The denominator is written in this form (using ``K u1 = [-q; b; h]``) because
it is then visibly positive.

Everything below is written against the Array API: no Python branching on
array values, no in-place updates; the loop is ``ops.while_loop`` so the same
code runs eagerly and under ``jax.jit``. Lanes that have finished (any status)
are frozen by masking their step to zero.
"""

from __future__ import annotations

import math
import operator
from typing import Any, NamedTuple

from . import _kkt, _lanes
from ._kkt import mtv, mv, vdot
from ._problem import Problem
from ._types import Status


class Settings(NamedTuple):
    tol: float          # relative tolerance on residuals and gap
    polish_tol: float   # merit at which a lane stops for its first polish (>= tol; see run)
    tol_inf: float      # tolerance of the infeasibility certificates
    max_iter: int
    delta: float        # KKT regularization (relative, after Jacobi scaling)
    refine: int         # iterative refinement steps per interior-point solve
    polish_refine: int  # the same for the polish's and the derivatives' solves
    step_fraction: float
    patience: int       # iterations without progress before a nearly solved lane stalls
    centrality: float   # gamma of the neighbourhood min(s_i z_i, tau kappa) >= gamma mu (0: off)


def _check_tol(tol) -> float:
    """``tol`` as a float in (0, 1), or ``ValueError``."""
    value = None
    if not isinstance(tol, bool) and getattr(tol, "ndim", 0) == 0:
        try:
            value = float(tol)
        except (TypeError, ValueError):
            value = None
    if value is None or not (0.0 < value < 1.0):
        raise ValueError(f"tol must be a real number in (0, 1); received {tol!r} "
                         f"({type(tol).__name__}).")
    return value


def _check_max_iter(max_iter) -> int:
    """``max_iter`` as a positive int, or ``ValueError`` (no silent truncation of 2.5)."""
    try:
        value = operator.index(max_iter)
    except TypeError:  # 100.0 is fine, 2.5 is not
        value = None
        if isinstance(max_iter, float) and math.isfinite(max_iter) and max_iter.is_integer():
            value = int(max_iter)
    if isinstance(max_iter, bool) or value is None or value < 1:
        raise ValueError(f"max_iter must be a positive integer; received {max_iter!r} "
                         f"({type(max_iter).__name__}).")
    return value


# The first polish is tried once the merit is below sqrt(tol), at most this: by then the
# active set is known on well-posed problems (the paper's batch: at 1e-5 every lane's
# polished point agreed with the one at 1e-10 to 2e-13; at 1e-4 one lane of 128 did not).
POLISH_TOL_CAP = 1e-5


def default_settings(xp, prob, tol=None, max_iter=None) -> Settings:
    """Dtype-aware defaults.

    float64: tol 1e-10. float32 factored, float64 iterated: tol 1e-6. float32
    throughout (a backend without float64): tol 3e-5 -- float32 residuals of n = 100
    problems level off near 1e-5 (at 1e-5, 6 of 128 of the paper's problems stalled
    there; at 3e-5 all 256 of two batches were solved, x within 1.4e-4 of float64).
    """
    single = prob.factor_dtype == xp.float32
    pure_single = prob.dtype == xp.float32
    if tol is None:
        tol = 3e-5 if pure_single else (1e-6 if single else 1e-10)
    if max_iter is None:
        max_iter = 100
    tol = _check_tol(tol)
    max_iter = _check_max_iter(max_iter)
    return Settings(
        tol=tol,
        # (Not where m + p > 4n: the polish's Schur complement, m + p rows, then costs
        # many iterations' n x n systems, and an early polish that misses costs a second
        # one; the many-rows class, n = 8, p = 500, ran 2x slower with it.)
        polish_tol=tol if prob.m + prob.p > 4 * prob.n
        else max(tol, min(math.sqrt(tol), POLISH_TOL_CAP)),
        tol_inf=max(tol, 1e-8) if not single else max(tol, 1e-5),
        max_iter=max_iter,
        delta=1e-7 if pure_single else 1e-15,
        # float64: the interior point's directions need no refinement unless rows
        # outnumber variables by far (the many-rows class, n = 8, p = 500, took 14 / 18
        # iterations without it, 12 / 15 with one step; the paper's batch and the
        # other hard classes took the same iterations and reached the same accuracy,
        # and a step costs more than the solve it refines: three products with Q or
        # G and two triangular solves against two and two). Where an unrefined solve
        # turns out less accurate than the iteration needs (measured each iteration,
        # see _iterate: a badly scaled problem, n = 150, p = 250, m = 30, stalled at
        # iteration 27 without refinement), refinement starts. The polish and the
        # derivatives, which must be accurate to working precision, refine twice.
        refine=4 if pure_single else (1 if prob.m + prob.p > 4 * prob.n else 0),
        # (5 where the polish factors in float32 too: without float64.)
        polish_refine=5 if pure_single else 2,
        step_fraction=0.99,
        patience=6,
        centrality=1e-2,
    )


class State(NamedTuple):
    """Loop state (all lanes; fixed shapes).

    x (B, n), y (B, m), z (B, p), s (B, p), tau (B,), kappa (B,),
    status (B,) int32 (-1 while running), iterations (B,) int32, k () int32,
    level () int32: how accurate the interior point's solves are. 0 (mixed
    precision only, where it starts): factor and solve in ``prob.factor_dtype``;
    1 (where the others start): factor in the iteration dtype, refine
    ``cfg.refine`` times; 2: the same, refining at least once. It rises by one
    whenever a solve is measured less accurate than the iteration needs (see
    ``_iterate``).
    best (B,): the smallest merit (largest scaled residual, see ``classify``)
    seen so far, and kept: the iterate ``(x, y, z, s, tau)`` that had it (where
    a lane ends unsolved, the polish starts from there); anchor (B,): the
    merit at the last halving, since (B,) int32: iterations since then -- a
    nearly solved lane that makes no progress for ``cfg.patience`` iterations
    has stalled. data_norm (B,): the largest absolute entry of the lane's
    ``Q``, ``A``, ``G`` (constant; computed once, the certificate tests use it).
    """

    x: Any
    y: Any
    z: Any
    s: Any
    tau: Any
    kappa: Any
    status: Any
    iterations: Any
    k: Any
    level: Any
    best: Any
    kept: Any
    anchor: Any
    since: Any
    data_norm: Any


class Residuals(NamedTuple):
    rx: Any
    ry: Any
    rz: Any
    rtau: Any
    Qx: Any
    Ax: Any     # A x, A'y, G x, G'z (None without the block): the stopping tests reuse them
    Aty: Any
    Gx: Any
    Gtz: Any
    pres: Any   # normalized (divided by tau), infinity norms, (B,)
    dres: Any
    gap: Any


RUNNING = -1


def _inf_norm(xp, v):
    if v is None or v.shape[-1] == 0:
        return None
    return xp.max(xp.abs(v), axis=-1)


def _max(xp, *vals):
    out = None
    for v in vals:
        if v is None:
            continue
        out = v if out is None else xp.maximum(out, v)
    return out


def _col(v):
    return None if v is None else v[..., None]


def _uncol(v):
    return None if v is None else v[..., 0]


def residuals(xp, prob: Problem, st: State) -> Residuals:
    x, y, z, s, tau, kappa = st.x, st.y, st.z, st.s, st.tau, st.kappa
    Qx = mv(prob.Q, x)
    rx = Qx + prob.q * tau[:, None]
    rtau = kappa + vdot(xp, prob.q, x) + vdot(xp, x, Qx) / tau
    ry = rz = Ax = Aty = Gx = Gtz = None
    if prob.m:
        Ax, Aty = mv(prob.A, x), mtv(prob.A, y)
        rx = rx + Aty
        ry = Ax - prob.b * tau[:, None]
        rtau = rtau + vdot(xp, prob.b, y)
    if prob.p:
        Gx, Gtz = mv(prob.G, x), mtv(prob.G, z)
        rx = rx + Gtz
        rz = Gx + s - prob.h * tau[:, None]
        rtau = rtau + vdot(xp, prob.h, z)
    pres = _max(xp, _inf_norm(xp, ry), _inf_norm(xp, rz))
    if pres is None:
        pres = xp.zeros_like(tau)
    pres = pres / tau
    dres = _inf_norm(xp, rx) / tau
    gap = (vdot(xp, s, z) if prob.p else xp.zeros_like(tau)) / (tau * tau)
    return Residuals(rx, ry, rz, rtau, Qx, Ax, Aty, Gx, Gtz, pres, dres, gap)


def classify(xp, prob: Problem, st: State, res: Residuals, cfg: Settings):
    """Per-lane status of the current iterate (RUNNING if none applies)."""
    x, y, z, s, tau = st.x, st.y, st.z, st.s, st.tau
    one = xp.ones_like(tau)
    xbar = x / tau[:, None]
    Qxbar = res.Qx / tau[:, None]
    xQx = vdot(xp, xbar, Qxbar)
    pobj = 0.5 * xQx + vdot(xp, prob.q, xbar)
    dobj = -0.5 * xQx
    scale_p = one
    scale_d = _max(xp, one, _inf_norm(xp, prob.q) * one, _inf_norm(xp, Qxbar))
    Aty = Gtz = None
    if prob.m:
        ybar = y / tau[:, None]
        dobj = dobj - vdot(xp, prob.b, ybar)
        Aty = res.Aty
        scale_p = _max(xp, scale_p, _inf_norm(xp, prob.b) * one,
                       _inf_norm(xp, res.Ax) / tau)
        scale_d = _max(xp, scale_d, _inf_norm(xp, Aty) / tau)
    if prob.p:
        zbar = z / tau[:, None]
        dobj = dobj - vdot(xp, prob.h, zbar)
        Gtz = res.Gtz
        scale_p = _max(xp, scale_p, _inf_norm(xp, prob.h) * one,
                       _inf_norm(xp, res.Gx) / tau, _inf_norm(xp, s) / tau)
        scale_d = _max(xp, scale_d, _inf_norm(xp, Gtz) / tau)
    gap = xp.maximum(res.gap, xp.abs(pobj - dobj))
    gap_scale = xp.maximum(one, xp.minimum(xp.abs(pobj), xp.abs(dobj)))
    merit = _max(xp, res.pres / scale_p, res.dres / scale_d, gap / gap_scale)
    solved = merit <= cfg.polish_tol

    eps = cfg.tol_inf
    # The certificate tests compare each product with the size of its data (so that
    # they do not change when the whole problem is scaled by 1e-8, say):
    # |A'y + G'z| against |[A; G]| |(y, z)|, b'y + h'z against |(b, h)| |(y, z)|,
    # and likewise for x.
    tiny = xp.finfo(tau.dtype).smallest_normal
    mat = st.data_norm
    rhs = xp.zeros_like(tau)
    if prob.m:
        rhs = xp.maximum(rhs, _inf_norm(xp, prob.b))
    if prob.p:
        rhs = xp.maximum(rhs, _inf_norm(xp, prob.h))
    # Primal infeasibility: (y, z) with A'y + G'z ~ 0 and b'y + h'z < 0.
    pinf = xp.zeros_like(solved)
    if prob.p or prob.m:
        ynorm = _max(xp, _inf_norm(xp, y), _inf_norm(xp, z))
        cert = Aty if Gtz is None else (Gtz if Aty is None else Aty + Gtz)
        resid = _inf_norm(xp, cert)
        bty = (vdot(xp, prob.b, y) if prob.m else 0.0) + (vdot(xp, prob.h, z) if prob.p else 0.0)
        pinf = (bty < -eps * ynorm * xp.maximum(rhs, tiny)) & (resid <= eps * ynorm * mat) \
            & (ynorm > 0)
    # Dual infeasibility (unboundedness): x with Qx ~ 0, Ax ~ 0, Gx <= ~0, q'x < 0.
    xnorm = _inf_norm(xp, x)
    qtx = vdot(xp, prob.q, x)
    qnorm = xp.maximum(_inf_norm(xp, prob.q) * xp.ones_like(tau), tiny)
    small = eps * xnorm * mat
    dinf = (qtx < -eps * xnorm * qnorm) & (_inf_norm(xp, res.Qx) <= small) & (xnorm > 0)
    if prob.m:
        dinf = dinf & (_inf_norm(xp, res.Ax) <= small)
    if prob.p:
        dinf = dinf & (xp.max(res.Gx, axis=-1) <= small)

    finite = xp.isfinite(tau) & xp.isfinite(res.pres) & xp.isfinite(res.dres) & xp.isfinite(gap)
    status = xp.full(tau.shape, RUNNING, dtype=xp.int32, device=prob.device)
    status = xp.where(dinf, int(Status.DUAL_INFEASIBLE), status)
    status = xp.where(pinf, int(Status.PRIMAL_INFEASIBLE), status)
    status = xp.where(solved, int(Status.SOLVED), status)
    status = xp.where(finite, status, int(Status.NUMERICAL_ERROR))
    return status, merit


def _mat_norm(xp, M, like):
    """Largest absolute entry of each lane's matrix M (1|B, r, c), as (B,) like ``like``."""
    v = xp.max(xp.abs(M), axis=(-2, -1))
    return v * xp.ones_like(like)


def data_norm(xp, prob: Problem, like):
    """(B,) largest absolute entry of each lane's ``Q``, ``A``, ``G`` (at least the
    smallest normal number), shaped like ``like``."""
    mat = _mat_norm(xp, prob.Q, like)
    if prob.m:
        mat = xp.maximum(mat, _mat_norm(xp, prob.A, like))
    if prob.p:
        mat = xp.maximum(mat, _mat_norm(xp, prob.G, like))
    return xp.maximum(mat, xp.finfo(like.dtype).smallest_normal)


def _max_step(xp, v, dv):
    """Largest alpha in (0, inf] with v + alpha dv >= 0, per lane; v, dv (B, k)."""
    ratio = xp.where(dv < 0, -v / xp.where(dv < 0, dv, -1.0), xp.inf)
    return xp.min(ratio, axis=-1)


def _step_length(xp, st: State, dz, ds, dtau, dkappa):
    a = xp.minimum(_max_step(xp, st.tau[:, None], dtau[:, None]),
                   _max_step(xp, st.kappa[:, None], dkappa[:, None]))
    if dz is not None:
        a = xp.minimum(a, xp.minimum(_max_step(xp, st.z, dz), _max_step(xp, st.s, ds)))
    return a


_FRACTIONS = (0.1, 0.25, 0.5, 0.75, 0.9, 1.0)


def _keep_centred(xp, st: State, dz, ds, dtau, dkappa, alpha, gamma):
    """Shorten the step so that the new iterate stays in the wide neighbourhood
    ``min(s_i z_i, tau kappa) >= gamma mu`` of the central path.

    Mehrotra's step to the boundary can leave one complementarity product far
    below the others; on ill-conditioned problems the iteration then cycles
    (the merit alternating between two values) instead of converging. The
    largest of ``alpha * _FRACTIONS`` that keeps the iterate centred is taken
    (the smallest fraction if none does); lanes are independent.
    """
    p1 = st.s.shape[-1] + 1

    def centrality(a):
        sz = (st.s + a[:, None] * ds) * (st.z + a[:, None] * dz)
        tk = (st.tau + a * dtau) * (st.kappa + a * dkappa)
        mu = (xp.sum(sz, axis=-1) + tk) / p1
        return xp.minimum(xp.min(sz, axis=-1), tk) / mu

    # A lane that starts outside the neighbourhood must only not leave it further.
    floor = xp.minimum(0.5 * centrality(xp.zeros_like(alpha)), gamma)
    out = alpha * _FRACTIONS[0]
    for f in _FRACTIONS[1:]:
        a = alpha * f
        out = xp.where(centrality(a) >= floor, a, out)
    return out


def _u2_rhs(prob, st, dx_, dy_, dz_, ds_):
    """Right-hand side of ``K u2 = [-d_x; -d_y; -d_z + d_s / z]`` as columns (B, size, 1)."""
    rz = _col(-dz_ + ds_ / st.z) if prob.p else None
    return _col(-dx_), _col(None if dy_ is None else -dy_), rz


def _direction(xp, prob, st, u1, u2, dtau_, ds_, dkappa_):
    """Assemble one Newton direction from ``u1``, ``u2 = (x2, y2, z2)`` (see module doc)."""
    x2, y2, z2 = u2
    x1, y1, z1, denom, c = u1
    num = dtau_ - dkappa_ / st.tau + vdot(xp, c, x2)
    if prob.m:
        num = num + vdot(xp, prob.b, y2)
    if prob.p:
        num = num + vdot(xp, prob.h, z2)
    dtau = num / denom
    dx = x2 + dtau[:, None] * x1
    dy = dz = ds = None
    if prob.m:
        dy = y2 + dtau[:, None] * y1
    if prob.p:
        dz = z2 + dtau[:, None] * z1
        ds = -(ds_ + st.s * dz) / st.z
    dkappa = -(dkappa_ + st.kappa * dtau) / st.tau
    return dx, dy, dz, ds, dtau, dkappa


def _cat(xp, a, b):
    return None if a is None else xp.concat((a, b), axis=-1)


def _split(v, i):
    return None if v is None else v[..., i]


def _solve(xp, ops, prob: Problem, cfg: Settings, level, F, rx, ry, rz):
    """``_kkt.solve`` at the accuracy ``level`` asks (see ``State``): at level 0, one
    solve in the narrow dtype (``_kkt.solve_narrow``); at level 1, ``cfg.refine``
    refinement steps; at level 2, at least one."""
    def full():
        if cfg.refine:
            return _kkt.solve(xp, ops, prob, F, rx, ry, rz, cfg.refine)
        return ops.cond(level > 1, lambda: _kkt.solve(xp, ops, prob, F, rx, ry, rz, 1),
                        lambda: _kkt.solve(xp, ops, prob, F, rx, ry, rz, 0))

    if prob.factor_dtype == prob.dtype:
        return full()
    return ops.cond(level > 0, full, lambda: _kkt.solve_narrow(xp, ops, prob, F, rx, ry, rz))


def _u1_error(xp, prob: Problem, Qx1, x1, y1, z1):
    """Relative residual (B,) of ``K u1 = [-q; b; h]`` in its first two block rows, given
    ``Q x1``: ``max(|Q x1 + A'y1 + G'z1 + q|, |A x1 - b|) / max(|q|, |b|, |h|, |K u1|)``
    (``_kkt.relative_residual``).

    The third row holds to rounding by construction of ``z1`` (``_kkt.solve``; to the
    narrow dtype's rounding, 1e-7, for a narrow solve: below what the test looks for).
    """
    kx = Qx1
    pairs, hs = [], None
    if prob.m:
        kx = kx + mtv(prob.A, y1)
        pairs.append((mv(prob.A, x1), prob.b))
    if prob.p:
        kx = kx + mtv(prob.G, z1)
        hs = xp.max(xp.abs(prob.h), axis=-1)
    pairs.append((kx, -prob.q))
    return _kkt.relative_residual(xp, pairs, -1, hs)


def _iterate(xp, ops, prob: Problem, cfg: Settings, st: State) -> State:
    """Check each running lane, then take one predictor-corrector step on those still running."""
    res = residuals(xp, prob, st)
    new_status, merit = classify(xp, prob, st, res, cfg)
    status = xp.where(st.status == RUNNING, new_status, st.status)
    # Progress: a lane whose merit has not halved in cfg.patience iterations has
    # stalled (typically the solves lost the accuracy the tolerance asks for);
    # it stops, and the polish may still recover it (see _pipeline).
    improved = merit < st.best
    best = xp.where(improved, merit, st.best)
    kept = tuple(xp.where(improved[:, None] if v.ndim == 2 else improved, v, k)
                 for v, k in zip((st.x, st.y, st.z, st.s, st.tau), st.kept))
    progress = merit < 0.5 * st.anchor
    anchor = xp.where(progress, merit, st.anchor)
    since = xp.where(progress, 0, st.since + 1)
    # Only nearly solved lanes (merit below tol^0.3: 1e-3 in float64) can stall: a
    # lane on its way to an infeasibility certificate has a growing merit.
    # Within a factor 100 of the tolerance, two iterations without progress are enough:
    # the iterate is as accurate as these solves make it, and the polish takes over.
    stuck = ((since >= cfg.patience) & (best <= cfg.tol ** 0.3)) \
        | ((since >= 2) & (best <= 100.0 * cfg.tol))
    status = xp.where((status == RUNNING) & stuck,
                      int(Status.NUMERICAL_ERROR), status)
    active = status == RUNNING

    w = st.s / st.z if prob.p else None
    if prob.p:
        w = xp.where(active[:, None], w, xp.ones_like(w))
    F = _kkt.factor(xp, ops, prob, w, cfg.delta, ~active, st.level > 0)
    status = xp.where(active & ~F.ok, int(Status.NUMERICAL_ERROR), status)
    active = status == RUNNING

    # One solve with two right-hand sides: u1 (K u1 = [-q; b; h], shared by the
    # predictor and the corrector) and the predictor's u2.
    B = st.tau.shape[0]
    q_full = xp.broadcast_to(prob.q, (B, prob.n))
    rhs1 = (_col(-q_full),
            _col(xp.broadcast_to(prob.b, (B, prob.m))) if prob.m else None,
            _col(xp.broadcast_to(prob.h, (B, prob.p))) if prob.p else None)
    ds_a = st.s * st.z if prob.p else None
    rhs2 = _u2_rhs(prob, st, res.rx, res.ry, res.rz, ds_a)
    both = _solve(xp, ops, prob, cfg, st.level, F,
                  *(_cat(xp, a, b) for a, b in zip(rhs1, rhs2)))
    u1 = tuple(_split(v, 0) for v in both)
    u2 = tuple(_split(v, 1) for v in both)
    level = st.level
    x1, y1, z1 = u1
    xi = st.x / st.tau[:, None]
    d1 = x1 - xi
    Qd1 = mv(prob.Q, d1)
    if prob.factor_dtype != prob.dtype or not cfg.refine:
        # Mixed precision: a direction with relative error err leaves residuals of
        # about err behind, so the narrow solves serve while err is well below the
        # merit; once they stop (K grows ill-conditioned as s / z spreads), factor
        # and solve in full precision. Paper's batch in float32: the switch comes after
        # 6 of 13 iterations (the worst lane's err reaching 0.84 times its merit).
        # Unrefined full-precision solves likewise turn refined (a badly scaled
        # problem, n = 150, p = 250, m = 30, stalled without: see default_settings).
        err = _u1_error(xp, prob, Qd1 + res.Qx / st.tau[:, None], x1, y1, z1)
        # Mixed precision climbs twice: the float64 factor's unrefined solves may
        # in turn fall short (the slow-size badly scaled problem in float32).
        worse = xp.any(active & (err > 1e-2 * xp.maximum(merit, cfg.polish_tol)))
        level = xp.where(worse & (level < 2), level + 1, level)
    denom = st.kappa / st.tau + vdot(xp, d1, Qd1)
    if prob.p:
        denom = denom + vdot(xp, z1 * z1, w)
    c = prob.q + 2.0 * res.Qx / st.tau[:, None]
    u1 = (x1, y1, z1, denom, c)

    p1 = prob.p + 1
    sz = vdot(xp, st.s, st.z) if prob.p else xp.zeros_like(st.tau)
    mu = (sz + st.tau * st.kappa) / p1

    # Predictor (affine scaling).
    aff = _direction(xp, prob, st, u1, u2, res.rtau, ds_a, st.tau * st.kappa)
    dx_a, dy_a, dz_a, dsl_a, dtau_a, dkappa_a = aff
    alpha_a = xp.minimum(_step_length(xp, st, dz_a, dsl_a, dtau_a, dkappa_a), 1.0)
    sigma = (1.0 - alpha_a) ** 3
    sig = sigma[:, None]

    # Corrector: centring plus Mehrotra's second-order term.
    one_m = (1.0 - sigma)
    ds_c = None
    if prob.p:
        ds_c = st.s * st.z + dsl_a * dz_a - sig * mu[:, None]
    dkappa_c = st.tau * st.kappa + dtau_a * dkappa_a - sigma * mu
    rhs_c = _u2_rhs(prob, st, one_m[:, None] * res.rx,
                    None if res.ry is None else one_m[:, None] * res.ry,
                    None if res.rz is None else one_m[:, None] * res.rz, ds_c)
    u2c = tuple(_uncol(v) for v in _solve(xp, ops, prob, cfg, st.level, F, *rhs_c))
    cor = _direction(xp, prob, st, u1, u2c, one_m * res.rtau, ds_c, dkappa_c)
    dx, dy, dz, dsl, dtau, dkappa = cor
    alpha = xp.minimum(cfg.step_fraction * _step_length(xp, st, dz, dsl, dtau, dkappa), 1.0)
    if prob.p and cfg.centrality > 0:
        alpha = _keep_centred(xp, st, dz, dsl, dtau, dkappa, alpha, cfg.centrality)
    # A lane whose step is negligible (or not a number) has stalled: it would make
    # no more progress, and would keep the whole batch iterating to max_iter.
    stalled = active & ~(alpha > 1e-10)
    status = xp.where(stalled, int(Status.NUMERICAL_ERROR), status)
    active = active & ~stalled
    a = alpha[:, None]
    # Finished lanes are frozen by selection, not by a zero step: their direction
    # (computed with a dummy factor) may hold Inf or NaN, and 0 * NaN is NaN.
    act = active[:, None]

    x = xp.where(act, st.x + a * dx, st.x)
    y = xp.where(act, st.y + a * dy, st.y) if prob.m else st.y
    z = xp.where(act, st.z + a * dz, st.z) if prob.p else st.z
    s = xp.where(act, st.s + a * dsl, st.s) if prob.p else st.s
    tau = xp.where(active, st.tau + alpha * dtau, st.tau)
    kappa = xp.where(active, st.kappa + alpha * dkappa, st.kappa)
    iterations = st.iterations + xp.astype(active, xp.int32)
    return State(x, y, z, s, tau, kappa, status, iterations, st.k + 1, level,
                 best, kept, anchor, since, st.data_norm)


def initial_state(xp, ops, prob: Problem, cfg: Settings) -> State:
    """Start from the solution of the regularized least-squares system with W = I.

    Solves ``[Q A' G'; A 0 0; G 0 -I] [x; y; v] = [-q; b; h]`` (so ``s = -v`` is the
    slack of ``Gx + s = h`` and ``z = v``) and shifts ``s`` and ``z`` into the
    interior (the Clarabel/CVXOPT start). ``tau = kappa = 1``.
    """
    B = prob.bad.shape[0]
    dtype = prob.dtype
    w = xp.ones((B, prob.p), dtype=dtype, device=prob.device) if prob.p else None
    F = _kkt.factor(xp, ops, prob, w, cfg.delta, prob.bad)
    q_full = xp.broadcast_to(prob.q, (B, prob.n))
    rhs_y = _col(xp.broadcast_to(prob.b, (B, prob.m))) if prob.m else None
    rhs_z = _col(xp.broadcast_to(prob.h, (B, prob.p))) if prob.p else None
    level = xp.asarray(0, dtype=xp.int32, device=prob.device)
    x, y, v = (_uncol(t) for t in _solve(xp, ops, prob, cfg, level, F, _col(-q_full), rhs_y,
                                         rhs_z))
    if prob.m == 0:
        y = xp.zeros((B, 0), dtype=dtype, device=prob.device)
    if prob.p:
        # A component that is positive but negligible (a row with no strictly
        # feasible point makes v_i ~ 0) counts as on the boundary: it would
        # start the iteration with s_i z_i ~ 0 and a huge first dual step.
        floor = 1e-6 * xp.maximum(xp.max(xp.abs(v), axis=-1), 1.0)
        s, z = -v, v
        s = s + xp.where(xp.min(s, axis=-1) > floor, 0.0, 1.0 - xp.min(s, axis=-1))[:, None]
        z = z + xp.where(xp.min(z, axis=-1) > floor, 0.0, 1.0 - xp.min(z, axis=-1))[:, None]
    else:
        s = z = xp.zeros((B, 0), dtype=dtype, device=prob.device)
    ones = xp.ones((B,), dtype=dtype, device=prob.device)
    running = xp.full((B,), RUNNING, dtype=xp.int32, device=prob.device)
    status = xp.where(prob.bad | ~F.ok, int(Status.NUMERICAL_ERROR), running)
    # Keep bad lanes finite (their data were replaced; they never run).
    x = xp.where(prob.bad[:, None], 0.0, x)
    return State(x=x, y=y, z=z, s=s, tau=ones, kappa=ones, status=status,
                 iterations=xp.zeros((B,), dtype=xp.int32, device=prob.device),
                 k=xp.asarray(0, dtype=xp.int32, device=prob.device),
                 level=xp.asarray(0 if prob.factor_dtype != prob.dtype else 1, dtype=xp.int32,
                                  device=prob.device),
                 best=xp.full((B,), xp.inf, dtype=dtype, device=prob.device),
                 kept=(x, y, z, s, ones),
                 anchor=xp.full((B,), xp.inf, dtype=dtype, device=prob.device),
                 since=xp.zeros((B,), dtype=xp.int32, device=prob.device),
                 data_norm=data_norm(xp, prob, ones))


def _run_compacting(xp, ops, prob: Problem, cfg: Settings, st: State) -> State:
    """The loop of ``run`` for eager backends, iterating only the lanes still running.

    Each iteration costs the same per lane, finished or not; here the loop
    works on a subset that is re-selected (``_lanes``) whenever at most 3/4 of
    it is still running. Lanes are independent, so the result is the same as
    iterating the whole batch.
    """
    B = st.tau.shape[0]
    idx, sub_prob, sub = None, prob, st
    while True:
        running = sub.status == RUNNING
        n_run = int(xp.sum(xp.astype(running, xp.int32)))
        if n_run == 0 or int(sub.k) >= cfg.max_iter:
            break
        if 4 * n_run <= 3 * sub.tau.shape[0]:
            if idx is not None:
                st = _lanes.put_state(xp, st, sub, idx, B)
            else:
                st = sub
            idx = xp.nonzero(st.status == RUNNING)[0]
            sub_prob = _lanes.take_problem(xp, prob, idx, B)
            sub = _lanes.take_state(xp, st, idx, B)
        sub = _iterate(xp, ops, sub_prob, cfg, sub)
    return sub if idx is None else _lanes.put_state(xp, st, sub, idx, B)


# float64 problems with at least this many variables iterate in mixed precision on
# backends whose float32 factorizations pay (``Ops.narrow_factors``). Measured on a
# 2-core CPU (torch, batch 128, n = p, forward, medians of 5, alternating processes):
# n = 32 0.08-0.10 -> 0.09-0.11 s (slower), n = 40 and 50 within noise to 25% faster,
# n = 100 0.39-0.51 -> 0.36-0.38 s, n = 200 (batch 32) 1.58-1.75 -> 1.05-1.06 s; NumPy
# n = 100 0.61-0.62 -> 0.54 s. Same iterations, same accuracy (paper batch: 9.7e-14
# against 1.1e-13 from a reference solve).
MIXED_MIN_N = 64
# ... and only when every lane's data lie well inside float32's range, so that the
# narrow products and solves can neither overflow nor lose a lane's data to underflow
# (largest entry of each lane's matrices within [1e-10, 1e10], of its vectors <= 1e10).
MIXED_RANGE = (1e-10, 1e10)


def iteration_problem(xp, ops, prob: Problem) -> Problem:
    """``prob`` with ``factor_dtype`` float32 where a float64 problem should iterate in
    mixed precision (see ``MIXED_MIN_N``, ``State.level``): the early interior-point
    directions need a few correct digits only, float32 factors give them at half the
    cost of the products forming ``H``, and the level climbs to float64 factors as soon
    as a solve is measured less accurate than the iteration needs. The polish and the
    derivatives factor in float64 regardless. Otherwise ``prob`` itself.

    Eager backends only: the choice reads the data's range on the host (and a traced
    ``cond`` under ``vmap`` would run both precisions).
    """
    if not (ops.eager and ops.narrow_factors is not None and prob.dtype == xp.float64
            and prob.factor_dtype == xp.float64 and prob.n >= MIXED_MIN_N
            and ops.narrow_factors(prob.device)):
        return prob
    lo, hi = MIXED_RANGE
    like = xp.zeros(prob.bad.shape, dtype=prob.dtype, device=prob.device)
    mat = data_norm(xp, prob, like)
    vec = _max(xp, *(_inf_norm(xp, v) for v in (prob.q, prob.h, prob.b) if v is not None))
    fits = (mat >= lo) & (mat <= hi)
    if vec is not None:
        fits = fits & (vec * xp.ones_like(like) <= hi)
    if not bool(xp.all(fits | prob.bad)):
        return prob
    return prob._replace(factor_dtype=xp.float32)


def run(xp, ops, prob: Problem, cfg: Settings, start: State | None = None):
    """Run the interior-point loop. Returns the final ``State`` and ``Residuals``.

    A lane stops as SOLVED once its merit is below ``cfg.polish_tol``, which may
    be looser than ``cfg.tol``: the polish (``_polish``) then solves the
    active-set system exactly, and the lane counts as solved only if that point
    meets ``cfg.tol``; if it does not, the caller resumes the lane (``start``:
    a state returned by ``run``, with the lanes to resume set RUNNING) with
    ``polish_tol = tol``. This spares the last iterations of the interior point
    (about a quarter of them on the paper's batch), which only refine what the
    polish computes to working precision in one solve.
    """
    prob = iteration_problem(xp, ops, prob)
    if prob.factor_dtype != prob.dtype and prob.Qf is None:
        # Mixed precision: the narrow copies of Q and G, made once (see _kkt.solve_narrow).
        prob = prob._replace(Qf=xp.astype(prob.Q, prob.factor_dtype),
                             Gf=None if prob.G is None else xp.astype(prob.G, prob.factor_dtype))
    st = initial_state(xp, ops, prob, cfg) if start is None else start

    def cond(st):
        return xp.any(st.status == RUNNING) & (st.k < cfg.max_iter)

    def body(st):
        return _iterate(xp, ops, prob, cfg, st)

    if ops.eager and st.tau.shape[0] > 1:
        st = _run_compacting(xp, ops, prob, cfg, st)
    else:
        st = ops.while_loop(cond, body, st)
    # Final check of the lanes still running after the last step.
    res = residuals(xp, prob, st)
    final, merit = classify(xp, prob, st, res, cfg)
    final = xp.where(final == RUNNING, int(Status.MAX_ITER), final)
    running = st.status == RUNNING
    status = xp.where(running, final, st.status)
    # The last iterate may be the best one yet.
    improved = running & (merit < st.best)
    kept = tuple(xp.where(improved[:, None] if v.ndim == 2 else improved, v, k)
                 for v, k in zip((st.x, st.y, st.z, st.s, st.tau), st.kept))
    return st._replace(status=xp.astype(status, xp.int32), kept=kept), res
