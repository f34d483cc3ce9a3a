"""One Mehrotra predictor-corrector step on the homogeneous self-dual embedding.

The QP (per lane)::

    minimize  1/2 x'Qx + q'x   subject to  Ax = b,  Gx + s = h,  s >= 0

with duals ``y`` (equalities) and ``z >= 0`` (inequalities). Its homogeneous
embedding for quadratic objectives (the form of Clarabel, Goulart & Chen 2024) adds
``tau, kappa >= 0``::

    r_x   = Qx + A'y + G'z + q tau               = 0
    r_y   = Ax - b tau                            = 0
    r_z   = Gx + s - h tau                        = 0
    r_tau = kappa + q'x + b'y + h'z + x'Qx / tau  = 0
    s o z = 0,   tau kappa = 0.

A solution with tau > 0 gives the QP's optimum ``(x, y, z, s) / tau``; one with
tau = 0 < kappa a certificate of infeasibility or unboundedness (``_terminate``),
lane by lane, with no phase one.

The state is one array, ``w = [x; y; z; tau; s; kappa]`` (B, n + m + 2p + 2):
``(tau, kappa)`` is simply the last complementarity pair, so the cone variables
``c = [z; tau; s; kappa]`` are one contiguous tail, and step lengths, centrality,
the complementarity terms, the update and the best iterate treat everything at once.
Below ``zt = [z; tau]``, ``v = [s; kappa]`` and ``u = [x; y; z; tau]``.

Newton step (Mehrotra predictor-corrector, as in CVXGEN and the paper's eqs. 9-10).
With right-hand sides ``f r`` (``f = 1`` for the affine predictor, ``1 - sigma`` for
the corrector) and complementarity terms ``d`` (B, p + 1)::

    Q dx + A'dy + G'dz + q dtau                          = -f r_x
    A dx - b dtau                                        = -f r_y
    G dx + ds - h dtau                                   = -f r_z
    dkappa + (q + 2 Q xi)'dx + b'dy + h'dz - xi'Q xi dtau = -f r_tau    (xi = x / tau)
    v o dzt + zt o dv                                    = -d

Eliminating ``dv = -(d + v o dzt) / zt`` leaves the symmetric KKT matrix ``K`` of
``_kkt`` with ``W = s / z``, so ``[dx; dy; dz] = u2 + dtau u1`` where::

    K u1 = [-q; b; h],     K u2 = [-f r_x; -f r_y; -f r_z + d_s / z]

(one factorization, two solves: ``u1`` shares the first with the predictor's ``u2``)
and, eliminating ``dkappa``::

    dtau = (f r_tau - d_kappa / tau + c'x2 + b'y2 + h'z2) / (kappa / tau + (x1 - xi)'Q(x1 - xi)
           + z1'W z1),      c = q + 2 Q xi,

a denominator visibly positive. With ``u1e = [u1; 1]`` and ``u2e = [u2; 0]`` the
whole direction of ``u`` is ``u2e + dtau u1e``. The predictor has ``f = 1`` and
``d = v o zt``; its step ``alpha_a`` to the boundary sets ``sigma = (1 - alpha_a)^3``
and the corrector ``d = v o zt + dv_a o dzt_a - sigma mu``, ``mu = v'zt / (p + 1)``.

The step is written against the Array API with fixed shapes: lanes that are no
longer running are frozen by selection (their direction, computed with a dummy
factor, may hold Inf or NaN), and nothing here reads a value on the host, so that
``jax.jit``, ``torch.compile`` and CUDA graphs can capture it.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from . import _kkt, _progress, _warm
from ._kkt import mtv, mv, vdot
from ._problem import Problem
from ._terminate import RUNNING, classify, lane_constants, residuals
from ._types import Status


class State(NamedTuple):
    """The interior point's loop state (all lanes; fixed shapes).

    Attributes
    ----------
    w : (B, n + m + 2p + 2)  ``[x; y; z; tau; s; kappa]``
    status : (B,) int32      ``RUNNING`` (-1) while running, else a ``Status``
    iterations : (B,) int32  steps taken
    boost : (B,)             the factor of the lane's KKT regularization ``Settings.delta``
                             (1 at the start and after each climb of the precision level);
                             it grows by ``Settings.shift_growth`` whenever the lane's
                             factorization fails
    worse : (B,) bool        the lane's last solve was less accurate than its merit needs
                             (the driver raises the precision level)
    progress : _progress.Progress   (its ``kept`` has the layout of ``w``)
    const : StepConstants
    retried : (B,) bool      the lane has been started afresh on the full-precision path
                             once already (``_pdipm``, the precision fallback)
    """

    w: Any
    status: Any
    iterations: Any
    boost: Any
    worse: Any
    progress: Any
    const: Any
    retried: Any


class Iterate(NamedTuple):
    """An iterate in the QP's blocks: x (B, n), y (B, m), z (B, p), s (B, p), tau (B,)."""

    x: Any
    y: Any
    z: Any
    s: Any
    tau: Any


def split(prob: Problem, w) -> Iterate:
    """The blocks of ``w = [x; y; z; tau; s; kappa]`` (views)."""
    n, m, p = prob.n, prob.m, prob.p
    N = n + m + p
    return Iterate(w[:, :n], w[:, n:n + m], w[:, n + m:N], w[:, N + 1:N + 1 + p], w[:, N])


def current(prob: Problem, st: State) -> Iterate:
    """The current iterate of ``st``."""
    return split(prob, st.w)


def kept(prob: Problem, st: State) -> Iterate:
    """The iterate of ``st`` with the best merit (``_progress``)."""
    return split(prob, st.progress.kept)


def assess(xp, prob: Problem, cfg, st: State):
    """Residuals, status (B,) and merit (B,) of the current iterate (``_terminate``)."""
    it = current(prob, st)
    kappa = st.w[:, -1]
    res = residuals(xp, prob, it.x, it.y, it.z, it.s, it.tau, kappa)
    status, merit = classify(xp, prob, st.const.lane, cfg, it.x, it.y, it.z, it.s, it.tau, kappa,
                             res)
    return res, status, merit


def _ratio(xp, c, dc):
    """Per lane, ``max(-dc / c)`` over the cone variables ``c``: the step to the boundary
    is its inverse (where it is positive)."""
    return xp.max(-dc / c, axis=-1)


def _keep_centred(xp, cfg, device, zt, v, dzt, dv, comp, mu, alpha):
    """Shorten the step so that the new iterate stays in the wide neighbourhood
    ``min(s_i z_i, tau kappa) >= gamma mu`` of the central path (``gamma =
    Settings.centrality``).

    Mehrotra's step to the boundary can leave one complementarity product far below
    the others; on ill-conditioned problems the iteration then cycles instead of
    converging. The largest of ``alpha * Settings.fractions`` that keeps the iterate
    centred is taken, all fractions at once (the smallest if none does). A lane that
    starts outside the neighbourhood must only not leave it further.
    """
    fr = xp.asarray(cfg.fractions, dtype=zt.dtype, device=device)
    a = alpha[:, None, None] * fr[:, None]                                  # (B, F, 1)
    prod = (v[:, None, :] + a * dv[:, None, :]) * (zt[:, None, :] + a * dzt[:, None, :])
    cen = xp.min(prod, axis=-1) / xp.mean(prod, axis=-1)                    # (B, F)
    floor = xp.clip(0.5 * xp.min(comp, axis=-1) / mu, max=cfg.centrality)
    best = xp.max(xp.where(cen >= floor[:, None], fr, cfg.fractions[0]), axis=-1)
    return alpha * best


def _accuracy(xp, prob: Problem, c, u1, Qx1):
    """Relative residual (B,) of ``K u1 = [-q; b; h]`` in its first two block rows, given
    ``Q x1``, each block row against the size of its own terms: the larger of
    ``|Q x1 + A'y1 + G'z1 + q| / max(|q|, |b|, |h|, |K u1|)`` and
    ``|A x1 - b| / max(1, |A x1|)``: against the size of ``h``, whose bounds can be 1e5
    times that of the equality rows, an equality block wrong in its leading digits would
    pass for accurate, and the iterate's equality residuals would then stop far above the
    tolerance while the merit, which measures them against ``h`` too, is met. The third row
    holds to rounding by the construction of ``z1`` (``_kkt.solve``)."""
    n, m = prob.n, prob.m
    kx = Qx1
    eq = None
    if prob.m:
        Ax1 = mv(prob.A, u1[:, :n])
        kx = kx + mtv(prob.A, u1[:, n:n + m])
        eq = _norm2(xp, Ax1 - prob.b, Ax1)
        eq = eq[0] / xp.clip(eq[1], min=1.0)
    if prob.p:
        kx = kx + mtv(prob.G, u1[:, n + m:])
    ex, bx = _norm2(xp, kx + prob.q, kx)
    err = ex / xp.maximum(bx, c.rhs_size)
    return err if eq is None else xp.maximum(err, eq)


def _norm2(xp, a, b):
    big = xp.max(xp.abs(xp.stack((a, b), axis=-1)), axis=1)
    return big[:, 0], big[:, 1]


def initial_level(prob: Problem) -> int:
    """The precision level a solve starts at: 0 (narrow factors) in mixed precision, else 1."""
    return 0 if prob.factor_dtype != prob.dtype else 1


def top_level(cfg) -> int:
    """The highest precision level (see :func:`_kkt.solve_at`, :func:`_kkt.refine_counts`):
    3 by default (no refinement, one step, ``Settings.refine_top`` steps)."""
    return len(_kkt.refine_counts(cfg))


def step(xp, ops, prob: Problem, cfg, st: State, res, merit, level, defer: bool = False,
         narrow=None) -> State:
    """One predictor-corrector step (module docstring) on the lanes of ``st`` still running.

    ``res``, ``merit``: the ``_terminate.Residuals`` and merit (B,) of the current iterate,
    whose classification ``st.status`` already holds. ``level``: the precision level of
    the solves, a Python int (eager) or a 0-d integer array (traced). ``defer``: the
    driver raises the level only some iterations after a lane's solve fell short
    (``State.worse``); such a lane waits for it instead of stepping along a direction
    known to be inaccurate. ``narrow``: the ``_kkt.Narrow`` copies of mixed precision.
    """
    n, m, p = prob.n, prob.m, prob.p
    N = n + m + p
    c = st.const
    w = st.w
    x, z, tau = w[:, :n], w[:, n + m:N], w[:, N]
    zt, v = w[:, n + m:N + 1], w[:, N + 1:]          # [z; tau], [s; kappa]
    cone = w[:, n + m:]                              # [zt; v]
    status = st.status
    active = status == RUNNING

    wt = v / zt                                      # [W; kappa / tau],  W = s / z
    F = _kkt.factor_at(xp, ops, prob, wt[:, :p] if p else None, cfg.delta, ~active, level,
                       st.boost, narrow)
    # A lane whose factorization failed waits for the next iteration with a larger
    # regularization of its own (the precision level, shared by the batch, climbs only
    # where float32 factors failed: below).
    failed = active & ~F.ok
    boost = xp.where(failed, cfg.shift_growth * st.boost, st.boost)
    status = xp.where(failed & (boost > cfg.shift_growth ** cfg.shift_raises),
                      int(Status.NUMERICAL_ERROR), status)
    active = active & F.ok

    # One solve with two right-hand sides: u1 and the predictor's u2 (f = 1, d = v o zt,
    # so that d_s / z = s).
    rhs2 = (-res.rx, -res.ry if m else None, v[:, :p] - res.rz if p else None)
    U = _kkt.solve_at(xp, ops, prob, cfg, F, level,
                      *(None if a is None else xp.stack((a, b), axis=-1)
                        for a, b in zip(c.rhs1, rhs2)), narrow)
    U = xp.concat((U, c.e1), axis=-2)                # rows [u; tau]: [1, 0]
    u1e, u2e = U[..., 0], U[..., 1]
    Qxi = res.Qx / tau[:, None]
    d1 = u1e[:, :n] - x / tau[:, None]
    Qd1 = mv(prob.Q, d1)
    z1e = u1e[:, n + m:]
    denom = vdot(xp, d1, Qd1) + vdot(xp, z1e * z1e, wt)
    cq = prob.q + 2.0 * Qxi
    cbh = xp.concat((cq, c.bh), axis=-1) if N > n else cq
    worse = st.worse
    if not isinstance(level, int) or level < top_level(cfg):
        # A direction with relative error err leaves residuals of about err behind: the
        # solves serve while err is well below the merit (docs/algorithm.md, precision).
        err = _accuracy(xp, prob, c, u1e[:, :N], Qd1 + Qxi)
        worse = active & (err > cfg.accuracy_margin * xp.clip(merit, min=cfg.polish_tol))
        if prob.factor_dtype != prob.dtype:
            # A float32 factorization that fails asks for float64 ones (at level 0).
            worse = worse | (failed & (level == 0))
        if defer:
            active = active & ~worse

    def direction(u2e, num):
        """``dw`` from ``u2e`` and the numerator of ``dtau`` (module docstring)."""
        du = u2e + (num / denom)[:, None] * u1e
        return du, du[:, n + m:]

    # Predictor (affine scaling): dv = -(d + v o dzt) / zt = -wt o (zt + dzt).
    comp = v * zt
    du_a, dzt_a = direction(u2e, res.rtau - w[:, -1] + vdot(xp, cbh, u2e[:, :N]))
    dv_a = -wt * (zt + dzt_a)
    alpha_a = 1.0 / xp.clip(_ratio(xp, cone, xp.concat((dzt_a, dv_a), axis=-1)), min=1.0)
    mu = xp.mean(comp, axis=-1)
    sigma = (1.0 - alpha_a) ** 3
    # Corrector: centring plus Mehrotra's second-order term.
    f = (1.0 - sigma)[:, None]
    d = comp + dv_a * dzt_a - (sigma * mu)[:, None]
    rhs = (-f * res.rx, -f * res.ry if m else None, d[:, :p] / z - f * res.rz if p else None)
    Uc = _kkt.solve_at(xp, ops, prob, cfg, F, level,
                       *(None if a is None else a[..., None] for a in rhs), narrow)
    u2c = xp.concat((Uc[..., 0], c.zero), axis=-1)
    du, dzt = direction(u2c, f[:, 0] * res.rtau - d[:, p] / tau + vdot(xp, cbh, u2c[:, :N]))
    dv = -(d + v * dzt) / zt
    dw = xp.concat((du, dv), axis=-1)
    frac = cfg.step_fraction
    alpha = frac / xp.clip(_ratio(xp, cone, dw[:, n + m:]), min=frac)
    if p and cfg.centrality > 0:
        alpha = _keep_centred(xp, cfg, prob.device, zt, v, dzt, dv, comp, mu, alpha)
    # A negligible step (or not a number): the lane has stalled, and would keep the whole
    # batch iterating to max_iter.
    stalled = active & ~(alpha > cfg.min_step)
    status = xp.where(stalled, int(Status.NUMERICAL_ERROR), status)
    active = active & ~stalled
    return State(w=xp.where(active[:, None], w + alpha[:, None] * dw, w), status=status,
                 iterations=st.iterations + xp.astype(active, xp.int32), boost=boost,
                 worse=worse, progress=st.progress, const=c, retried=st.retried)


class StepConstants(NamedTuple):
    """Per-lane constants of the step, computed once: lane (``_terminate.LaneConstants``),
    rhs_size (B,) ``max(|q|, |b|, |h|)``, rhs1 ``(-q, b, h)`` blocks (B, size) (None
    without the block), bh (B, m + p) ``[b; h]``, e1 (B, 1, 2) ``[1, 0]``, zero (B, 1),
    w0 (B, n + m + 2p + 2) where a lane that falls back starts again (``initial_state``)."""

    lane: Any
    rhs_size: Any
    rhs1: Any
    bh: Any
    e1: Any
    zero: Any
    w0: Any = None


def _constants(xp, prob: Problem, cfg) -> StepConstants:
    B = prob.bad.shape[0]
    kw = {"dtype": prob.dtype, "device": prob.device}

    def full(v, k):
        return None if v is None else xp.broadcast_to(v, (B, k))

    q, b, h = full(prob.q, prob.n), full(prob.b, prob.m), full(prob.h, prob.p)
    bh = [a for a in (b, h) if a is not None]
    size = xp.max(xp.abs(xp.concat((q, *bh), axis=-1)), axis=-1)
    bh = xp.concat(bh, axis=-1) if bh else xp.zeros((B, 0), **kw)
    e1 = xp.broadcast_to(xp.asarray([[[1.0, 0.0]]], **kw), (B, 1, 2))
    return StepConstants(lane=lane_constants(xp, prob, cfg.tol_inf),
                         rhs_size=xp.clip(size, min=xp.finfo(prob.dtype).smallest_normal),
                         rhs1=(-q, b, h), bh=bh, e1=e1, zero=xp.zeros((B, 1), **kw))


def initial_state(xp, ops, prob: Problem, cfg, narrow=None, warm=None) -> State:
    """Start from the solution of the regularized least-squares system with W = I.

    Solves ``[Q A' G'; A 0 0; G 0 -I] [x; y; v] = [-q; b; h]`` (so ``s = -v`` is the
    slack of ``Gx + s = h`` and ``z = v``) and shifts ``s`` and ``z`` into the interior
    (the Clarabel/CVXOPT start). ``tau = kappa = 1``. With ``warm`` (a
    ``_warm.WarmPoint`` on this problem) lanes whose given point is finite start from it,
    pushed into the interior (``_warm.pushed``); the precision fallback still restarts
    from the cold start.
    """
    B = prob.bad.shape[0]
    kw = {"dtype": prob.dtype, "device": prob.device}
    c = _constants(xp, prob, cfg)
    w = xp.ones((B, prob.p), **kw) if prob.p else None
    level = initial_level(prob)
    F = _kkt.factor_at(xp, ops, prob, w, cfg.delta, prob.bad, level, narrow=narrow)
    sol = _kkt.solve_at(xp, ops, prob, cfg, F, level,
                        *(None if a is None else a[..., None] for a in c.rhs1), narrow)[..., 0]
    x, y, r = sol[:, :prob.n], sol[:, prob.n:prob.n + prob.m], sol[:, prob.n + prob.m:]
    if prob.p:
        # A component that is positive but negligible (a row with no strictly feasible
        # point makes r_i ~ 0) counts as on the boundary: it would start the iteration
        # with s_i z_i ~ 0 and a huge first dual step.
        floor = 1e-6 * xp.clip(xp.max(xp.abs(r), axis=-1), min=1.0)

        def interior(t):
            lo = xp.min(t, axis=-1)
            return t + xp.where(lo > floor, 0.0, 1.0 - lo)[:, None]

        s, z = interior(-r), interior(r)
    else:
        s = z = xp.zeros((B, 0), **kw)
    ones = xp.ones((B, 1), **kw)
    status = xp.where(prob.bad | ~F.ok, int(Status.NUMERICAL_ERROR),
                      xp.full((B,), RUNNING, dtype=xp.int32, device=prob.device))
    # Keep bad lanes finite (their data were replaced; they never run).
    x = xp.where(prob.bad[:, None], 0.0, x)
    w = xp.concat((x, y, z, ones, s, ones), axis=-1)
    def no():
        # A new array per field: fields that are one array would make a compiled step
        # (``Ops.compile_step``) specialize on that aliasing, and compile again without it.
        return xp.zeros((B,), dtype=xp.bool, device=prob.device)

    # The start of a lane that falls back (_pdipm): this one, or where its solve was not
    # finite, the plain interior point x = y = 0, z = s = 1, tau = kappa = 1.
    n, m = prob.n, prob.m
    plain = xp.concat((xp.zeros((B, n + m), **kw), xp.ones((B, w.shape[1] - n - m), **kw)),
                      axis=-1)
    finite = xp.all(xp.isfinite(w), axis=-1)
    w0 = xp.where(finite[:, None], w, plain)
    if warm is not None:
        w = xp.concat(_warm.pushed(xp, prob, cfg, warm, (x, y, z, s)), axis=-1)
        w = xp.where(prob.bad[:, None], w0, w)
    return State(w=w, status=status,
                 iterations=xp.zeros((B,), dtype=xp.int32, device=prob.device),
                 boost=xp.ones((B,), **kw), worse=no(),
                 progress=_progress.start(xp, w, prob.dtype, prob.device), const=c._replace(w0=w0),
                 retried=no())
