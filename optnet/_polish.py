"""Active-set polishing of an interior-point solution, and the KKT residuals of a point.

An interior-point iterate approaches the optimum along the central path; its
accuracy is limited by the conditioning of the KKT solves as ``s / z`` spreads
over many orders of magnitude. Once the iteration has identified the active
set (rows with ``z_i > s_i``), the optimum is the solution of an
equality-constrained QP, which one well-conditioned KKT solve gives to working
precision (the polishing step of OSQP, Stellato et al. 2020, applied to an
interior-point iterate)::

    minimize 1/2 x'Qx + q'x   subject to   E x = e,   E = [A; G_act],  e = [b; h_act].

Fixed shapes: inactive rows are kept in ``E`` as zero rows (so their
multipliers come out exactly zero). The augmented Lagrangian term
``rho/2 |Ex - e|^2`` is added to the objective -- it does not move the solution
-- so that ``Q + rho E'E`` is positive definite whenever the KKT matrix is
nonsingular (LPs included), and the ``_kkt`` machinery applies with ``E`` in
the equality slot.

A lane keeps its polished point only if it is at least as good as the
interior-point one: multipliers nonnegative and inactive rows feasible (to the
tolerance), residuals no larger. Otherwise (a degenerate or misidentified
active set) it keeps the interior-point point.
"""

from __future__ import annotations

from typing import NamedTuple

from . import _kkt
from ._kkt import mtv, mv, vdot
from ._problem import Problem


class ActiveSystem(NamedTuple):
    """The equality-constrained KKT system on the active set, factored.

    ``sub`` is a :class:`Problem` with ``Q + rho E'E`` in the Q slot and ``E``
    (B, m + p, n) in the equality slot (inactive rows zero); ``F`` its
    factorization; ``act`` (B, p) the active rows; ``rho`` (B, 1). The
    derivatives (``_adjoint``) solve with it.
    """

    sub: object
    F: object
    act: object
    rho: object


class Point(NamedTuple):
    """A primal-dual point, canonical lane shapes: x (B, n), y (B, m), z (B, p), s (B, p)."""

    x: object
    y: object
    z: object
    s: object


def residuals(xp, prob: Problem, pt: Point):
    """Infinity-norm KKT residuals of a point, each (B,).

    Returns
    -------
    pres : ``max(|Ax - b|, |Gx + s - h|)``
    dres : ``|Qx + q + A'y + G'z|``
    gap : ``|s'z|``
    """
    x = pt.x
    r = mv(prob.Q, x) + prob.q
    pres = xp.zeros_like(x[:, 0])
    gap = xp.zeros_like(pres)
    if prob.m:
        r = r + mtv(prob.A, pt.y)
        pres = xp.maximum(pres, xp.max(xp.abs(mv(prob.A, x) - prob.b), axis=-1))
    if prob.p:
        r = r + mtv(prob.G, pt.z)
        pres = xp.maximum(pres, xp.max(xp.abs(mv(prob.G, x) + pt.s - prob.h), axis=-1))
        gap = xp.abs(vdot(xp, pt.s, pt.z))
    return pres, xp.max(xp.abs(r), axis=-1), gap


def _trace(xp, M):
    return xp.sum(xp.linalg.diagonal(M), axis=-1)


def active_system(xp, ops, prob: Problem, cfg, pt: Point, lanes) -> ActiveSystem:
    """Build and factor the active-set KKT system of ``pt`` in ``lanes`` (B,) bool."""
    B = pt.x.shape[0]
    act = pt.z > pt.s if prob.p else None
    blocks, rhs = [], []
    if prob.m:
        blocks.append(xp.broadcast_to(prob.A, (B, prob.m, prob.n)))
        rhs.append(xp.broadcast_to(prob.b, (B, prob.m)))
    if prob.p:
        blocks.append(xp.where(act[:, :, None], prob.G, 0.0))
        rhs.append(xp.where(act, prob.h, 0.0))
    if not blocks:
        sub = prob._replace(G=None, h=None, A=None, b=None, m=0, p=0)
        F = _kkt.factor(xp, ops, sub, None, cfg.delta, ~lanes, xp.asarray(True, device=prob.device))
        return ActiveSystem(sub, F, act, None)
    E = xp.concat(blocks, axis=-2) if len(blocks) > 1 else blocks[0]
    e = xp.concat(rhs, axis=-1) if len(rhs) > 1 else rhs[0]
    EtE = xp.matrix_transpose(E) @ E
    trQ, trE = _trace(xp, prob.Q), _trace(xp, EtE)
    # rho balances Q against E'E (any positive value gives the same solution).
    both = (trQ > 0) & (trE > 0)
    rho = xp.where(both, trQ / xp.where(both, trE, 1.0), 1.0)[:, None]
    Qr = prob.Q + rho[:, :, None] * EtE
    qr = prob.q - rho * mtv(E, e)
    sub = prob._replace(Q=Qr, q=qr, G=None, h=None, A=E, b=e, m=E.shape[-2], p=0)
    F = _kkt.factor(xp, ops, sub, None, cfg.delta, ~lanes,
                    xp.asarray(True, device=prob.device))
    return ActiveSystem(sub, F, act, rho)


def solve_active(xp, ops, system: ActiveSystem, rx, rnu, refine):
    """Solve ``[[Q, E'], [E, 0]] [u; v] = [rx; rnu]`` (rx (B, n, k), rnu (B, m+p, k) or None).

    The factored matrix carries ``rho E'E`` in its leading block, so the
    right-hand side gets ``rho E' rnu`` added (the same solution, since
    ``E u = rnu``).
    """
    sub = system.sub
    if rnu is None:
        u, _, _ = _kkt.solve(xp, ops, sub, system.F, rx, None, None, refine)
        return u, None
    rx = rx + system.rho[:, :, None] * (xp.matrix_transpose(sub.A) @ rnu)
    u, v, _ = _kkt.solve(xp, ops, sub, system.F, rx, rnu, None, refine)
    return u, v


def polish(xp, ops, prob: Problem, cfg, pt: Point, solved):
    """Polish the lanes where ``solved`` (B,) is True.

    Returns
    -------
    Point
        The polished point (the input point in lanes where polishing failed).
    ActiveSystem
        The factored active-set system (reused by the derivatives).
    """
    system = active_system(xp, ops, prob, cfg, pt, solved)
    sub = system.sub
    refine = cfg.refine + 1
    if sub.m == 0:
        x, _ = solve_active(xp, ops, system, -prob.q[..., None], None, refine)
        x = x[..., 0]
        ok = solved & system.F.ok & xp.all(xp.isfinite(x), axis=-1)
        return Point(xp.where(ok[:, None], x, pt.x), pt.y, pt.z, pt.s), system
    x, nu = solve_active(xp, ops, system, -prob.q[..., None], sub.b[..., None], refine)
    x, nu = x[..., 0], nu[..., 0]
    y = nu[:, : prob.m] if prob.m else pt.y
    z, s = pt.z, pt.s
    act = system.act
    ok = solved & system.F.ok & xp.all(xp.isfinite(x), axis=-1) & xp.all(xp.isfinite(nu), axis=-1)
    if prob.p:
        zp = nu[:, prob.m:]
        sp = prob.h - mv(prob.G, x)
        hscale = xp.maximum(xp.max(xp.abs(prob.h), axis=-1), 1.0)
        zscale = xp.maximum(xp.max(xp.abs(zp), axis=-1), 1.0)
        ok = ok & (xp.min(zp, axis=-1) >= -cfg.tol * zscale)
        ok = ok & (xp.min(xp.where(act, 0.0, sp), axis=-1) >= -cfg.tol * hscale)
        z = xp.where(act, xp.maximum(zp, 0.0), 0.0)
        s = xp.where(act, 0.0, xp.maximum(sp, 0.0))
    new = Point(x, y, z, s)
    p0, d0, g0 = residuals(xp, prob, pt)
    p1, d1, g1 = residuals(xp, prob, new)
    # The polished point has no gap; its residuals may be no larger than the
    # interior point's residuals and gap.
    ok = ok & (xp.maximum(p1, d1) <= xp.maximum(xp.maximum(p0, d0), g0))
    k = ok[:, None]
    return Point(
        xp.where(k, new.x, pt.x),
        xp.where(k, new.y, pt.y) if prob.m else pt.y,
        xp.where(k, new.z, pt.z) if prob.p else pt.z,
        xp.where(k, new.s, pt.s) if prob.p else pt.s,
    ), system
