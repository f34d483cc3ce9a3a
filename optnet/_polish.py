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

Bounds. Where every row of ``G`` has at most one nonzero (``Problem.bound_rows``), an
active row ``g_i x_j = h_i`` fixes its variable, and the system is solved on the free
variables alone (:class:`Eliminated`): with ``X`` the fixed variables and ``F`` the
free ones, the block rows of the active bounds give ``u_X`` directly, the rest is the
equality-constrained system in ``u_F`` (``m`` rows instead of ``m + p``), and the bound
multipliers follow from the stationarity rows of ``X``. Fixed shapes again: ``Q``'s
rows and columns of ``X`` are replaced by the identity's and ``A``'s columns of ``X``
by zeros, which decouples ``u_X`` from the rest. Where ``Q`` is moreover diagonal with
positive entries (``Problem.definite_diagonal``: the OptNet paper's Sudoku layer,
``Q = 0.1 I``, ``G = -I``) the reduced ``Q`` is diagonal and positive definite: no
``rho`` term, and ``_kkt`` factors a vector and the m x m Schur complement only.

A lane keeps its polished point only if it is at least as good as the
interior-point one: multipliers nonnegative and inactive rows feasible (to the
tolerance), residuals no larger. Otherwise (a degenerate or misidentified
active set) it keeps the interior-point point.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from . import _kkt, _lanes
from ._kkt import mm, mtm, mtv, mv, vdot
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
    elim: object = None


class Eliminated(NamedTuple):
    """The active bounds of an :class:`ActiveSystem` whose variables are eliminated
    (module docstring; the active rows are the system's ``act``): gsq (B, n, 1)
    ``sum_i G_ij^2`` over the active rows of column j (1 where none); fixed (B, n) bool
    the variables some active row fixes. At most one active row per column
    (:func:`_eliminated_system`), so that ``gsq`` is that row's ``G_ij^2``."""

    gsq: object
    fixed: object


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


def _rho(xp, trQ, trE):
    """(B, 1) ``rho = tr Q / tr E'E`` (1 where either trace is zero): it balances ``Q``
    against ``rho E'E``; any positive value gives the same solution."""
    both = (trQ > 0) & (trE > 0)
    return xp.where(both, trQ / xp.where(both, trE, 1.0), 1.0)[:, None]


def active_system(xp, ops, prob: Problem, cfg, pt: Point, lanes, act=None) -> ActiveSystem:
    """Build and factor the active-set KKT system in ``lanes`` (B,) bool.

    ``act`` (B, p) bool: the active rows; None: ``z > s`` at ``pt``.
    """
    B = pt.x.shape[0]
    if act is None and prob.p:
        act = pt.z > pt.s
    if prob.p and prob.bound_rows:
        return _eliminated_system(xp, ops, prob, cfg, lanes, act)
    blocks, rhs = [], []
    if prob.m:
        blocks.append(xp.broadcast_to(prob.A, (B, prob.m, prob.n)))
        rhs.append(xp.broadcast_to(prob.b, (B, prob.m)))
    if prob.p:
        blocks.append(xp.where(act[:, :, None], prob.G, 0.0))
        rhs.append(xp.where(act, prob.h, 0.0))
    if not blocks:
        sub = prob._replace(G=None, h=None, A=None, b=None, m=0, p=0, diagonal_h=False)
        F = _kkt.factor(xp, ops, sub, None, cfg.delta, ~lanes, xp.asarray(True, device=prob.device))
        return ActiveSystem(sub, F, act, None)
    E = xp.concat(blocks, axis=-2) if len(blocks) > 1 else blocks[0]
    e = xp.concat(rhs, axis=-1) if len(rhs) > 1 else rhs[0]
    EtE = xp.matrix_transpose(E) @ E
    rho = _rho(xp, _trace(xp, prob.Q), _trace(xp, EtE))
    Qr = prob.Q + rho[:, :, None] * EtE
    qr = prob.q - rho * mtv(E, e)
    # (No narrow copies: the polish factors in the iteration dtype. Every array of more
    # than two dimensions in the system is then this function's own: see polish.)
    sub = prob._replace(Q=Qr, q=qr, G=None, h=None, A=E, b=e, m=E.shape[-2], p=0,
                        diagonal_h=False)

    F = _kkt.factor(xp, ops, sub, None, cfg.delta, ~lanes, xp.asarray(True, device=prob.device))
    return ActiveSystem(sub, F, act, rho)


def _eliminated_system(xp, ops, prob: Problem, cfg, lanes, act) -> ActiveSystem:
    """:func:`active_system` for bound rows: the active bounds' variables eliminated
    (module docstring). No (B, p, n) array is formed: the active rows are a mask on
    ``G``, which stays shared where it is."""
    B, n = act.shape[0], prob.n
    dtype, device = prob.dtype, prob.device
    G = prob.G
    # One active row per variable: a later active row on a column already fixed is taken
    # as inactive (the polished point then satisfies it or violates it, and the swaps add
    # it or not, as for any inactive row). Two active rows on one column are the two
    # bounds of a variable, contradictory unless they coincide; taken together, their
    # least-squares value would satisfy neither. ``before`` (1|B, p, p): row k < i has
    # its nonzero in the column of row i.
    on = xp.astype(G != 0.0, dtype)
    p = on.shape[-2]
    lower = xp.arange(p, device=device)[None, :] < xp.arange(p, device=device)[:, None]
    before = xp.astype(((on @ xp.matrix_transpose(on)) > 0.0) & lower, dtype)
    act = act & (mv(before, xp.astype(act, dtype)) == 0.0)
    gsq = mtv(G * G, xp.astype(act, dtype))                      # (B, n)
    fixed = gsq > 0.0
    free = ~fixed
    At = None if not prob.m else xp.where(free[:, None, :], prob.A, 0.0)
    rho = None
    diagonal = prob.definite_diagonal
    if diagonal:
        # A diagonal Q couples no variables: it serves as it is where it is shared, else
        # as a copy (the polish's swaps write the lanes of the system's arrays in place).
        Qt = prob.Q if prob.Q.shape[0] != B else prob.Q * 1.0
    else:
        eye = xp.astype(xp.eye(n, dtype=xp.bool, device=device), dtype)
        Qt = xp.where(fixed[:, :, None] | fixed[:, None, :], eye, prob.Q)
        if prob.m:
            # rho balances the free block of Q against A'A.
            AtA = xp.matrix_transpose(At) @ At
            trQ = xp.sum(xp.where(free, xp.linalg.diagonal(prob.Q), 0.0), axis=-1)
            rho = _rho(xp, trQ, _trace(xp, AtA))
            Qt = Qt + rho[:, :, None] * AtA
    b = None if not prob.m else xp.broadcast_to(prob.b, (B, prob.m))
    sub = prob._replace(Q=Qt, q=prob.q, G=None, h=None, A=At, b=b, p=0, diagonal_h=diagonal,
                        bound_rows=False)
    F = _kkt.factor(xp, ops, sub, None, cfg.delta, ~lanes, xp.asarray(True, device=device))
    el = Eliminated(gsq=xp.where(fixed, gsq, 1.0)[:, :, None], fixed=fixed)
    return ActiveSystem(sub, F, act, rho, el)


def _solve_eliminated(xp, ops, prob: Problem, system: ActiveSystem, rx, rnu, refine, lanes,
                      unrolled):
    """:func:`solve_active` with the active bounds' variables eliminated.

    With ``E = [A; G_act]`` and ``rnu = [r_A; r_G]``: the bound rows give
    ``u_X = G_act' r_G / gsq`` (one active row per column); the reduced system gives
    ``u_F`` and the equality multipliers ``v_A`` from ``rx - Q u_X`` and
    ``r_A - A u_X``; the bound multipliers ``v_G = G_act (t / gsq)`` from the
    stationarity residual ``t = rx - Q u - A'v_A`` of the fixed variables. (On a fixed
    variable's row the reduced ``Q`` is ``q_jj e_j``, with ``q_jj`` 1, or ``Q_jj`` where
    ``Q`` is diagonal.)
    """
    el, sub, m = system.elim, system.sub, prob.m
    act = system.act[:, :, None]
    fixed = el.fixed[:, :, None]
    ufix = mtm(xp, prob.G, xp.where(act, rnu[:, m:, :], 0.0)) / el.gsq
    qjj = xp.linalg.diagonal(sub.Q)[..., None]
    rxt = xp.where(fixed, qjj * ufix, rx - mm(prob.Q, ufix))
    rat = None
    if m:
        rat = rnu[:, :m, :] - mm(prob.A, ufix)
        if system.rho is not None:
            rxt = rxt + system.rho[:, :, None] * mtm(xp, sub.A, rat)
    u, va, _ = _kkt.solve(xp, ops, sub, system.F, rxt, rat, None, refine, lanes, unrolled)
    t = rx - mm(prob.Q, u)
    if m:
        t = t - mtm(xp, prob.A, va)
    vg = xp.where(act, mm(prob.G, t / el.gsq), 0.0)
    return u, (xp.concat((va, vg), axis=-2) if m else vg)


def solve_active(xp, ops, system: ActiveSystem, rx, rnu, refine, lanes, unrolled=False,
                 prob: Problem | None = None):
    """Solve ``[[Q, E'], [E, 0]] [u; v] = [rx; rnu]`` (rx (B, n, k), rnu (B, m+p, k) or None)
    with up to ``refine`` refinement steps, taken while they gain on some of ``lanes`` (B,)
    (``_kkt.solve``; all of them where ``lanes`` is None; ``unrolled``: as there).
    ``prob``: the problem of the system (needed where its bounds are eliminated).

    The factored matrix carries ``rho E'E`` in its leading block, so the
    right-hand side gets ``rho E' rnu`` added (the same solution, since
    ``E u = rnu``).
    """
    sub = system.sub
    if system.elim is not None:
        return _solve_eliminated(xp, ops, prob, system, rx, rnu, refine, lanes, unrolled)
    if rnu is None:
        u, _, _ = _kkt.solve(xp, ops, sub, system.F, rx, None, None, refine, lanes, unrolled)
        return u, None
    rx = rx + system.rho[:, :, None] * mtm(xp, sub.A, rnu)
    u, v, _ = _kkt.solve(xp, ops, sub, system.F, rx, rnu, None, refine, lanes, unrolled)
    return u, v


def meets_tol(xp, prob: Problem, pt: Point, tol):
    """Per lane (B,): does ``pt`` satisfy the KKT conditions to the tolerance?

    Primal residual against the size of ``b, Ax, h, Gx, s``, dual residual
    against ``q, Qx, A'y, G'z`` (the relative test of ``_terminate.classify``),
    ``s, z >= 0``, and complementarity ``s'z`` against ``max(1, |1/2 x'Qx + q'x|)``.
    (``classify`` also bounds the difference of the primal and dual
    objectives; for a point whose residuals are small that difference is
    ``s'z`` plus residual terms, and computing it directly loses all accuracy
    when the multipliers are large, as where rows are linearly dependent.)
    """
    x = pt.x
    one = xp.ones_like(x[:, 0])

    def norm(v):
        return xp.max(xp.abs(v), axis=-1)

    Qx = mv(prob.Q, x)
    pobj = 0.5 * vdot(xp, x, Qx) + vdot(xp, prob.q, x)
    scale_p = one
    scale_d = xp.maximum(xp.maximum(one, norm(prob.q) * one), norm(Qx))
    if prob.m:
        scale_p = xp.maximum(xp.maximum(scale_p, norm(prob.b) * one), norm(mv(prob.A, x)))
        scale_d = xp.maximum(scale_d, norm(mtv(prob.A, pt.y)))
    if prob.p:
        scale_p = xp.maximum(xp.maximum(scale_p, norm(prob.h) * one), norm(mv(prob.G, x)))
        scale_p = xp.maximum(scale_p, norm(pt.s))
        scale_d = xp.maximum(scale_d, norm(mtv(prob.G, pt.z)))
    pres, dres, sz = residuals(xp, prob, pt)
    gap_scale = xp.maximum(one, xp.abs(pobj))
    ok = (pres <= tol * scale_p) & (dres <= tol * scale_d) & (sz <= tol * gap_scale)
    if prob.p:
        ok = ok & (xp.min(pt.s, axis=-1) >= 0) & (xp.min(pt.z, axis=-1) >= 0)
    return ok


class _Attempt(NamedTuple):
    point: Point     # the polished point
    feasible: Any    # (B,) finite, factored, multipliers >= 0 and inactive rows feasible
    drop: Any        # (B, p) active rows with a negative multiplier (or None)
    add: Any         # (B, p) inactive rows that are violated (or None)


def _attempt(xp, ops, prob: Problem, cfg, pt: Point, system: ActiveSystem, lanes) -> _Attempt:
    """Solve the active-set system of ``system`` for a correction of ``pt``."""
    refine = cfg.polish_refine
    act = system.act
    # Residuals of the active-set KKT system at pt:
    #   [[Q, E'], [E, 0]] [x; nu] = [-q; e],  nu0 = [y; z on active rows].
    x0 = pt.x
    rx = -prob.q - mv(prob.Q, x0)
    rows = prob.m or prob.p
    if rows:
        parts = ([pt.y] if prob.m else []) + ([xp.where(act, pt.z, 0.0)] if prob.p else [])
        nu0 = xp.concat(parts, axis=-1) if len(parts) > 1 else parts[0]
        Etnu, Ex = _rows_products(xp, prob, system, nu0, x0)
        rx = rx - Etnu
        rnu = _rows_rhs(xp, prob, system) - Ex
        dx, dnu = solve_active(xp, ops, system, rx[..., None], rnu[..., None], refine,
                               lanes, prob=prob)
        nu = nu0 + dnu[..., 0]
    else:
        dx, _ = solve_active(xp, ops, system, rx[..., None], None, refine, lanes, prob=prob)
    x = x0 + dx[..., 0]
    ok = lanes & system.F.ok & xp.all(xp.isfinite(x), axis=-1)
    y, z, s = pt.y, pt.z, pt.s
    drop = add = None
    if rows:
        ok = ok & xp.all(xp.isfinite(nu), axis=-1)
        if prob.m:
            y = nu[:, : prob.m]
    if prob.p:
        zp = nu[:, prob.m:]
        sp = prob.h - mv(prob.G, x)
        hscale = xp.maximum(xp.max(xp.abs(prob.h), axis=-1), 1.0)[:, None]
        zscale = xp.maximum(xp.max(xp.abs(zp), axis=-1), 1.0)[:, None]
        drop = act & (zp < -cfg.tol * zscale)
        add = ~act & (sp < -cfg.tol * hscale)
        ok = ok & ~xp.any(drop | add, axis=-1)
        z = xp.where(act, xp.maximum(zp, 0.0), 0.0)
        s = xp.where(act, 0.0, xp.maximum(sp, 0.0))
    return _Attempt(Point(x, y, z, s), ok, drop, add)


def _rows_products(xp, prob: Problem, system: ActiveSystem, nu, x):
    """``E' nu`` (B, n) and ``E x`` (B, m + p) with the active-set rows ``E = [A; G_act]``."""
    if system.elim is None:
        return mtv(system.sub.A, nu), mv(system.sub.A, x)
    act, m = system.act, prob.m
    Etnu = mtv(prob.G, xp.where(act, nu[:, m:], 0.0))
    Ex = xp.where(act, mv(prob.G, x), 0.0)
    if m:
        Etnu = Etnu + mtv(prob.A, nu[:, :m])
        Ex = xp.concat((mv(prob.A, x), Ex), axis=-1)
    return Etnu, Ex


def _rows_rhs(xp, prob: Problem, system: ActiveSystem):
    """``e = [b; h_act]`` (B, m + p) (inactive rows zero)."""
    if system.elim is None:
        return system.sub.b
    h = xp.where(system.act, prob.h, 0.0)
    if not prob.m:
        return h
    return xp.concat((xp.broadcast_to(prob.b, (h.shape[0], prob.m)), h), axis=-1)


def _take(xp, prob: Problem, keep, new: Point, old: Point) -> Point:
    k = keep[:, None]
    return Point(
        xp.where(k, new.x, old.x),
        xp.where(k, new.y, old.y) if prob.m else old.y,
        xp.where(k, new.z, old.z) if prob.p else old.z,
        xp.where(k, new.s, old.s) if prob.p else old.s,
    )


def polish(xp, ops, prob: Problem, cfg, pt: Point, solved, rescue, max_swaps: int = 3,
           act=None):
    """Polish the lanes where ``solved`` or ``rescue`` (B,) is True.

    The active-set system is solved for a correction of ``pt`` (not from
    scratch): where the active rows are linearly dependent (an equality written
    as two inequalities, say) the multipliers are not unique, and the correction
    keeps the interior point's (nonnegative) choice instead of the minimum-norm
    one, which may have negative entries.

    The first guess of the active set is ``act`` (B, p), by default ``z > s``. Near a degenerate row
    (``s`` and ``z`` both small when the iteration stops) that guess can be
    wrong; then the polished point has a negative multiplier or violates an
    inactive row, and the active set is corrected -- those rows swapped, as in
    a primal-dual active-set method -- and the system solved again, up to
    ``max_swaps`` times (only while some lane needs it).

    A ``solved`` lane keeps the polished point if it is no worse than ``pt``;
    a ``rescue`` lane (the interior point stalled or ran out of iterations)
    keeps it only if it meets the tolerance, and is then reported solved.

    Returns
    -------
    Point
        The polished point (the input point in lanes where polishing failed).
    ActiveSystem
        The factored active-set system of the accepted active set (the first
        guess where polishing failed); the derivatives reuse it.
    rescued : (B,) bool
        The ``rescue`` lanes whose polished point meets the tolerance.
    """
    lanes = solved | rescue
    if prob.p and not ops.eager:
        return _polish_traced(xp, ops, prob, cfg, pt, solved, rescue, max_swaps, act)
    system = active_system(xp, ops, prob, cfg, pt, lanes, act=act)
    att = _attempt(xp, ops, prob, cfg, pt, system, lanes)
    done, rescued = _accept(xp, prob, cfg, pt, att, solved, rescue)
    out = _take(xp, prob, done, att.point, pt)
    if not prob.p:
        return out, system, rescued
    # The swaps concern a few lanes (often none); on eager backends they run on those
    # alone. Every (B, ...) array of more than two dimensions in the system (Q + rho E'E,
    # E, the factors) was made by active_system: the swapped lanes are written in place
    # (a copy of all five costs 5 x 10 MB at batch 128, n = p = 100).
    def swaps(sub, a):
        return _swaps(xp, ops, sub, cfg, *a, max_swaps)

    return _lanes.on_lanes(xp, ops, lanes & ~done, swaps, prob,
                           (pt, solved, rescue, system, att, done, rescued, out),
                           (out, system, rescued), inplace=True)


def _accept(xp, prob: Problem, cfg, pt: Point, att: _Attempt, solved, rescue):
    """Which lanes keep the polished point, and which of them are rescued (both (B,))."""
    p0, d0, g0 = residuals(xp, prob, pt)
    p1, d1, _ = residuals(xp, prob, att.point)
    # A solved lane: the polished point has no gap; its residuals may be no
    # larger than the interior point's residuals and gap.
    better = solved & att.feasible & (xp.maximum(p1, d1) <= xp.maximum(xp.maximum(p0, d0), g0))
    rescued = rescue & att.feasible & meets_tol(xp, prob, att.point, cfg.tol)
    return better | rescued, rescued


def _swaps(xp, ops, prob: Problem, cfg, pt: Point, solved, rescue, system: ActiveSystem,
           att: _Attempt, done, rescued, out: Point, max_swaps: int):
    """Swap the offending rows of the lanes not yet done and solve again (see ``polish``):
    passes 1 .. ``max_swaps`` of :func:`_passes`, after the first guess's attempt."""
    return _passes(xp, ops, prob, cfg, pt, solved, rescue, 1, max_swaps, system.act,
                   att.drop, att.add, done, rescued, out, system)


def _passes(xp, ops, prob: Problem, cfg, pt: Point, solved, rescue, k0: int, max_swaps: int,
            act, drop, add, done, rescued, out: Point, system: ActiveSystem):
    """The polish's passes ``k0 .. max_swaps`` as one loop. Pass 0 solves on the active set
    ``act`` as it is; pass k > 0 swaps the rows ``drop`` / ``add`` of the lanes not yet
    ``done`` and solves again (only while some lane needs it).

    The loop carries, lane by lane, the factored system of the active set each lane last
    accepted (pass 0's for every lane, or ``system`` where the loop starts later), which
    the derivatives reuse: no system is built and factored again after the loop.
    """
    lanes = solved | rescue
    sys_leaves, sys_rebuild = _lanes.split_arrays(system)
    n_sys = len(sys_leaves)
    # Loop state: (pass, act tried last, its drop/add, done, rescued, output point,
    # accepted system).
    state = (xp.asarray(k0, device=prob.device), act, drop, add, done, rescued,
             *out, *sys_leaves)

    def cond(st):
        k, _, _, _, dn = st[:5]
        return (k == 0) | ((k <= max_swaps) & xp.any(lanes & ~dn))

    def body(st):
        return _pass(xp, ops, prob, cfg, pt, solved, rescue, True, st, sys_rebuild)

    state = ops.while_loop(cond, body, state)
    return Point(*state[6:10]), sys_rebuild(state[10:10 + n_sys]), state[5]


def _pass(xp, ops, prob: Problem, cfg, pt: Point, solved, rescue, valid, st, sys_rebuild):
    """One pass of :func:`_passes` on the lanes of ``st`` (its loop state: each lane's pass,
    ``act`` tried last, its ``drop`` / ``add``, done, rescued, output point, accepted
    system's leaves), those of them where ``valid`` (True, or a (B,) mask); returns the
    next state."""
    k, act, drop, add, dn, rs = st[:6]
    cur = Point(*st[6:10])
    sys_ok = sys_rebuild(st[10:])
    first = k == 0
    pending = valid & (solved | rescue) & ~dn
    act = xp.where((pending & ~first)[:, None], (act & ~drop) | add, act)
    sys_k = active_system(xp, ops, prob, cfg, pt, pending, act)
    a = _attempt(xp, ops, prob, cfg, pt, sys_k, pending)
    ok, res_k = _accept(xp, prob, cfg, pt, a, solved, rescue)
    ok = ok & pending
    nxt = _take(xp, prob, ok, a.point, cur)
    sys_ok = _lanes.where_lanes(xp, ok | first, sys_k, sys_ok, act.shape[0])
    return (k + 1, act, a.drop, a.add, dn | ok, rs | (res_k & ok), *nxt,
            *_lanes.split_arrays(sys_ok)[0])


def _polish_traced(xp, ops, prob: Problem, cfg, pt: Point, solved, rescue, max_swaps: int,
                   act=None):
    """:func:`polish` on traced backends: :func:`_passes` from pass 0, the first guess, so
    that the program holds one active-set system and one attempt instead of two (a sixth
    of the compiled JAX solve at n = p = 10); on batches of more than
    ``cfg.polish_block`` lanes, :func:`_passes_in_blocks`."""
    lanes = solved | rescue
    if act is None:
        act = pt.z > pt.s
    # The carry needs a system of the right structure before pass 0.
    sys0, rebuild = _lanes.zeros_of(
        xp, ops, lambda: active_system(xp, ops, prob, cfg, pt, lanes, act=act))
    B = act.shape[0]
    size = block_size(B, cfg)
    if size < B:
        return _passes_in_blocks(xp, ops, prob, cfg, pt, solved, rescue, max_swaps, act,
                                 rebuild(sys0), size)
    no, none = xp.zeros_like(act), xp.zeros_like(lanes)
    return _passes(xp, ops, prob, cfg, pt, solved, rescue, 0, max_swaps, act, no, no, none,
                   none, pt, rebuild(sys0))


def block_size(B: int, cfg) -> int:
    """Lanes of a block of :func:`_passes_in_blocks` for a batch of ``B``: the batch itself
    up to ``cfg.polish_block`` lanes (or where it is 0), else the batch in as few equal
    blocks as have at most ``max(polish_block, B / polish_blocks)`` lanes each (so that
    one block holds the lanes a batch commonly swaps, a fifth of them, and a large batch
    on a GPU is not cut into many small launches)."""
    if cfg.polish_block <= 0 or B <= cfg.polish_block:
        return B
    most = max(cfg.polish_block, -(-B // max(cfg.polish_blocks, 1)))
    return -(-B // -(-B // most))


def _passes_in_blocks(xp, ops, prob: Problem, cfg, pt: Point, solved, rescue, max_swaps: int,
                      act, system: ActiveSystem, size: int):
    """:func:`_passes` on blocks of ``size`` lanes: a traced loop cannot drop the lanes it
    is done with, but it can take the next ``size`` lanes that have a pass to make, solve
    them, and write them back. Lane by lane, the passes are those of :func:`_passes`: pass
    0 on the first guess ``act``, pass k > 0 (up to ``max_swaps``) on the rows swapped
    after pass k - 1, while the lane is not done and has rows to swap (without, its next
    pass would repeat its last); each lane carries its own pass number. Every lane makes
    pass 0 (the lanes outside ``solved | rescue`` as skipped lanes, with
    identity factors, as in :func:`_passes`), and a lane's system is pass 0's unless it
    accepted a later one.

    So a batch whose swaps concern a fifth of its lanes solves about 1.5 B active-set
    systems (the last block of a pass padded) where :func:`_passes` solves B per pass
    (three passes: 3 B).
    ``system``: zeros of the structure of an active-set system of the whole batch.
    """
    lanes = solved | rescue
    B = act.shape[0]
    sys_leaves, sys_rebuild = _lanes.split_arrays(system)
    no, none = xp.zeros_like(act), xp.zeros_like(lanes)
    # Loop state: (each lane's next pass, act it tried last, its drop/add, done, rescued,
    # output point, accepted system).
    state = (xp.zeros(B, dtype=xp.int32, device=prob.device), act, no, no, none, none,
             *pt, *sys_leaves)

    def todo(st):
        # A lane not done whose last attempt left no row to swap would solve the same
        # system again: it has no pass to make.
        k, _, drop, add, dn = st[:5]
        return (k == 0) | (lanes & ~dn & (k <= max_swaps) & xp.any(drop | add, axis=-1))

    def cond(st):
        return xp.any(todo(st))

    def body(st):
        idx = _lanes.first_lanes(xp, todo(st), size)
        at = xp.minimum(idx, B - 1)
        new = _pass(xp, ops, _lanes.take_problem(xp, prob, at, B), cfg,
                    _lanes.take_state(xp, pt, at, B), xp.take(solved, at, axis=0),
                    xp.take(rescue, at, axis=0), idx < B, _lanes.take_state(xp, st, at, B),
                    sys_rebuild)
        return _lanes.put_state(xp, st, new, idx, B, ops)

    state = ops.while_loop(cond, body, state)
    return Point(*state[6:10]), sys_rebuild(state[10:]), state[5]
