"""The forward pipeline on arrays of one backend: checks, interior point, polish, assembly.

Shared by ``optnet.solve`` and the framework adapters (which must not import
the public entry point). The backend module is passed in, never imported.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from . import _lanes, _pdipm, _scaling, _step, _warm
from ._kkt import diagonal_scale
from ._polish import Point, polish, residuals
from ._problem import ARG_NAMES, Problem, canonicalize
from ._types import QPSolution, Status


class Context(NamedTuple):
    """What the derivatives need: the canonical problem, the solution (canonical
    lane shapes), the per-lane status and the factored active-set KKT system."""

    xp: Any
    ops: Any
    asarray: Any
    prob: Problem
    cfg: Any
    x: Any
    y: Any
    z: Any
    s: Any
    status: Any
    system: Any


def context_only(sol: QPSolution) -> QPSolution:
    """``sol`` with its arrays dropped but for the ``context`` the derivatives need."""
    return QPSolution(*(None,) * (len(QPSolution._fields) - 1), context=sol.context)


def solve_arrays(be, args: dict, tol=None, max_iter=None, init=None,
                 structure=None) -> QPSolution:
    """Solve with backend module ``be``; ``args`` maps "Q".."b" to arrays of ``be`` or None;
    ``init`` (optional) maps "x" and optionally "z", "y" to arrays of ``be`` (a warm start,
    ``_warm``); ``structure`` (optional, traced backends): the three bools of
    ``_pdipm.structure_of`` on the concrete data of a program being compiled for them.

    Where ``be.route`` sends the inputs to another backend (``Backend.route``), that one
    solves and the solution comes back in ``be``'s arrays.
    """
    routed = be.route(args, init) if be.route is not None else None
    if routed is not None:
        other, other_args, other_init, back = routed
        return back(solve_arrays(other, other_args, tol, max_iter, other_init, structure))
    xp, ops = be.namespace, be.ops
    prob = canonicalize(xp, *(args[k] for k in ARG_NAMES),
                        has_float64=be.has_float64(getattr(args["Q"], "device", None)))
    cfg = _pdipm.default_settings(xp, prob, tol, max_iter)
    warm = None if init is None else _warm.lanes(xp, prob, init)
    with be.quiet():
        # Nonconvex lanes are set aside like lanes with bad data (never iterated).
        nonconvex = _nonconvex(xp, ops, prob, cfg.psd_tol) & ~prob.bad
        prob = prob._replace(bad=prob.bad | nonconvex)
        # The interior point runs on the equilibrated problem; everything after it
        # (polish, residuals, derivatives) on the original one.
        sprob, sc = _scaling.equilibrate(
            xp, prob, cfg, eager=ops.eager, while_loop=None if ops.eager else ops.while_loop)
        # Its structure (one host read, eager backends; given, or none, where traced) is
        # the original problem's too: the equilibration scales rows and columns, which
        # keeps every zero.
        sprob = _pdipm.iteration_problem(xp, ops, sprob, cfg, structure)
        prob = prob._replace(bound_rows=sprob.bound_rows,
                             definite_diagonal=sprob.definite_diagonal)
        warm = None if warm is None else _warm.scaled(warm, sc)
        if not ops.eager:
            fin, pol = _passes_traced(xp, ops, prob, sprob, sc, cfg, warm)
        else:
            st, level = _pdipm.run(xp, ops, sprob, cfg, warm=warm)
            fin = _final(xp, sprob, sc, st)
            pol = _polish_state(xp, ops, prob, cfg, fin, sc.e, strict=_early(cfg))
            fin, pol = _resume(xp, ops, prob, sprob, sc, cfg, st, level, fin, pol)
        pol = pol._replace(status=xp.where(nonconvex, int(Status.NONCONVEX), pol.status))
        return _assemble(xp, ops, prob, cfg, fin, pol, be.asarray)


class Polished(NamedTuple):
    """The polish of an interior-point state: the point (B lanes), the factored
    active-set system (for the derivatives), the status after the polish and the
    lanes whose polished point met the tolerance (``rescued``, (B,) bool)."""

    point: Point
    system: Any
    status: Any
    rescued: Any


def _early(cfg) -> bool:
    """Whether lanes stop for a first polish before ``cfg.tol`` (``_pdipm.run``)."""
    return cfg.polish_tol > cfg.tol


def _retry(xp, cfg, sprob: Problem, st, pol: Polished, strict):
    """The lanes that go on iterating after their polish (:func:`_resume`), and those of
    them that go on without the fast stall, both (B,) bool:

    - where the polish was ``strict`` (a bool, or a 0-d bool array where traced: lanes
      stopped early, at ``cfg.polish_tol``), lanes whose polished point missed ``cfg.tol``;
    - lanes that stalled near the tolerance (best merit within ``Settings.stall_near``
      times it, where ``_progress`` hands a lane over to the polish after
      ``Settings.stall_fast`` steps without progress) and that the polish did not rescue:
      where the active rows are nearly dependent the polish certifies nothing (no
      nonnegative multipliers on the guessed active set), but the interior point alone
      can still reach the tolerance. These go on with the ordinary patience
      (``Settings.patience``); a lane does so once.
    """
    near = (st.status == int(Status.NUMERICAL_ERROR)) & ~sprob.bad & ~st.progress.patient \
        & (st.progress.best <= cfg.stall_near * cfg.tol) & ~pol.rescued
    if strict is False:
        return near, near
    return ((st.status == int(Status.SOLVED)) & ~pol.rescued & strict) | near, near


def _resume(xp, ops, prob: Problem, sprob: Problem, sc, cfg, st, level, fin, pol: Polished):
    """The lanes of :func:`_retry` go on iterating to ``cfg.tol`` (from the state ``st``
    and precision ``level`` the first run ended with) and are polished again (see
    ``_pdipm.run``); a lane that the second polish leaves as :func:`_retry` says once more
    (it stalled fast near the tolerance after a missed early polish) goes on a second
    time. Returns the outcome (:class:`Final`; ``fin`` where no lane resumed) and polish.
    Eager backends (traced ones resume in :func:`_passes_traced`)."""
    strict = _early(cfg)
    cfg2 = cfg._replace(polish_tol=cfg.tol)
    for _ in range(2):
        retry, patient = _retry(xp, cfg, sprob, st, pol, strict)
        if not bool(xp.any(retry)):
            break
        st, _ = _pdipm.resume(xp, ops, sprob, cfg2, st, level, retry, patient)
        fin = _final(xp, sprob, sc, st)

        def polish_again(sub, a):
            return _polish_state(xp, ops, sub, cfg2, *a, strict=False)

        pol = _lanes.on_lanes(xp, ops, retry, polish_again, prob, (fin, sc.e), pol)
        strict = False
    return fin, pol


def _passes_traced(xp, ops, prob: Problem, sprob: Problem, sc, cfg, warm=None):
    """What :func:`_pdipm.run`, the polish and :func:`_resume` compute, as two passes of
    one loop for traced backends, so that the program holds one interior-point loop and
    one polish: pass 0 iterates every lane to ``cfg.polish_tol`` and polishes (strictly
    where that is looser than ``cfg.tol``); passes 1 and 2, entered only if some lane is to
    go on (:func:`_retry`), resume those lanes to ``cfg.tol`` and polish them again. (A
    ``cond`` around a second copy of the loop and the polish doubled the program, and
    XLA's compile time with it.) The pass's tolerance and strictness are arrays, not
    Python constants.

    Returns the outcome (:class:`Final`) and the polish (:class:`Polished`).
    """
    st0 = _pdipm.start(xp, ops, sprob, cfg, warm)
    # (each lane's own precision level: _pdipm._run_traced)
    level0 = xp.full(st0.status.shape, _step.initial_level(sprob), dtype=xp.int32,
                     device=prob.device)
    tols = xp.asarray([cfg.polish_tol, cfg.tol], dtype=sprob.dtype, device=prob.device)
    early = _early(cfg)

    def retry_of(st, pol, k):
        return _retry(xp, cfg, sprob, st, pol, (k == 1) if early else False)

    def one_pass(st, level, k, pol):
        first = k == 0
        retry, patient = retry_of(st, pol, k)
        retry, patient = retry & ~first, patient & ~first
        cfg_k = cfg._replace(polish_tol=tols[xp.minimum(k, 1)])
        st, level = _pdipm.resume(xp, ops, sprob, cfg_k, st, level, retry, patient)
        fin = _final(xp, sprob, sc, st)
        new = _polish_state(xp, ops, prob, cfg_k, fin, sc.e, strict=first if early else False)
        return st, level, fin, _lanes.where_lanes(xp, first | retry, new, pol, retry.shape[0])

    # The loop's carry needs a polish of the right structure before the first pass:
    # zeros of that structure (the polish traced abstractly, never run).
    fin0 = _final(xp, sprob, sc, st0)
    pol_leaves, pol_rebuild = _lanes.zeros_of(
        xp, ops, lambda: _polish_state(xp, ops, prob, cfg, fin0, sc.e, strict=True))
    fin_leaves, fin_rebuild = _lanes.split_arrays(fin0)

    def cond(carry):
        st, _, k, _, pol = carry
        pol = pol_rebuild(pol)
        return (k == 0) | ((k <= 2) & xp.any(retry_of(st, pol, k)[0]))

    def body(carry):
        st, level, k, _, pol = carry
        st, level, fin, pol = one_pass(st, level, k, pol_rebuild(pol))
        return (st, level, k + 1, _lanes.split_arrays(fin)[0], _lanes.split_arrays(pol)[0])

    k0 = xp.asarray(0, dtype=xp.int32, device=prob.device)
    _, _, _, fin, pol = ops.while_loop(cond, body, (st0, level0, k0, fin_leaves, pol_leaves))
    return fin_rebuild(fin), pol_rebuild(pol)


def _nonconvex(xp, ops, prob: Problem, psd_tol: float):
    """Lanes (B,) whose ``Q`` is not positive semidefinite beyond rounding.

    ``C Q C`` with ``C = diag(Q)^{-1/2}`` (1 where the diagonal is zero) has unit
    diagonal; it is PSD up to rounding if ``C Q C + psd_tol I`` has a Cholesky
    factor (``Settings.psd_tol``: eigenvalues of the unit-diagonal Q down to
    ``-psd_tol`` are taken for rounding errors). (A zero diagonal entry with a nonzero
    off-diagonal one in its row makes ``Q`` indefinite, and this test finds it.) A
    negative diagonal entry below ``-psd_tol`` times the largest one in size is caught
    even where the unit-diagonal test, which leaves non-positive entries unscaled,
    would pass it. One
    factorization per distinct ``Q``.
    """
    Q = prob.Q
    d = xp.linalg.diagonal(Q)
    # C Q C + psd_tol I = C (Q + psd_tol C^-2) C: the shift relative to the diagonal.
    no = xp.zeros((Q.shape[0],), dtype=xp.bool, device=prob.device)
    _, ok = ops.cholesky(Q, (psd_tol,), Q.dtype, diagonal_scale(xp, Q), no)
    ok = ok & xp.all(d >= -psd_tol * xp.max(xp.abs(d), axis=-1, keepdims=True), axis=-1)
    B = prob.bad.shape[0]
    return xp.broadcast_to(~ok, (B,)) if ok.shape[0] != B else ~ok


class Final(NamedTuple):
    """The interior point's outcome on the original problem: the last iterate and the best
    (``_step.Iterate``, unscaled), the status and iterations (B,)."""

    last: Any
    kept: Any
    status: Any
    iterations: Any


def _final(xp, sprob: Problem, sc, st) -> Final:
    """The interior point's state mapped from the equilibrated to the original problem."""
    def unscale(it):
        return it._replace(**dict(zip("xyzs", _scaling.unscale(xp, sc, it.x, it.y, it.z,
                                                               it.s))))

    return Final(unscale(_step.current(sprob, st)), unscale(_step.kept(sprob, st)),
                 st.status, st.iterations)


def _all_finite(xp, v):
    """(B,) bool: every entry of the lane's vector is finite (True for empty vectors)."""
    return xp.all(xp.isfinite(v), axis=-1)


def _certificates(xp, prob: Problem, st, status, x, y, z):
    """Put the infeasibility certificates into the failed lanes' ``x``, ``y``, ``z``.

    A lane classified infeasible stopped with ``tau ~ 0 < kappa``; its raw iterate
    (not divided by ``tau``) is the certificate, normalized here:

    - ``PRIMAL_INFEASIBLE``: ``(y, z)`` with ``z >= 0``, ``A'y + G'z ~ 0`` and
      ``b'y + h'z = -1`` (a Farkas vector); ``x`` and ``s`` stay NaN.
    - ``DUAL_INFEASIBLE``: ``x = d`` with ``Qd ~ 0``, ``Ad ~ 0``, ``Gd <= ~0`` and
      ``q'd = -1`` (a recession direction); ``y``, ``z``, ``s`` stay NaN.

    Rows with ``h = +inf`` are not constraints: their multiplier in a Farkas vector is 0.
    """
    pinf = status == int(Status.PRIMAL_INFEASIBLE)
    dinf = status == int(Status.DUAL_INFEASIBLE)
    st = st.last
    one = xp.ones_like(st.tau)
    cz = xp.where(prob.h_free, 0.0, st.z) if prob.p else st.z
    bty = xp.zeros_like(st.tau)
    if prob.m:
        bty = bty + xp.sum(prob.b * st.y, axis=-1)
    if prob.p:
        bty = bty + xp.sum(prob.h * cz, axis=-1)
    fp = xp.where(pinf & (bty < 0), -1.0 / xp.where(bty < 0, bty, -one), 0.0)[:, None]
    y = xp.where(pinf[:, None], fp * st.y, y)
    z = xp.where(pinf[:, None], fp * cz, z)
    qtx = xp.sum(prob.q * st.x, axis=-1)
    fd = xp.where(dinf & (qtx < 0), -1.0 / xp.where(qtx < 0, qtx, -one), 0.0)[:, None]
    x = xp.where(dinf[:, None], fd * st.x, x)
    return x, y, z


def _polish_state(xp, ops, prob: Problem, cfg, st, row_scale, strict: bool) -> Polished:
    """Polish the lanes of ``st`` (unscaled) that the interior point solved or left unsolved.

    ``strict`` (a bool, or a scalar bool array where traced): a SOLVED lane keeps its
    polished point only if it meets ``cfg.tol`` (it stopped at the looser
    ``cfg.polish_tol``); otherwise it keeps the polished point if it is no worse than the
    interior point's.
    """
    status = st.status
    solved = status == int(Status.SOLVED)
    # Lanes the interior point left unsolved (stalled or out of iterations) go on
    # from their best iterate: they get a polish too, and count as solved if the
    # polished point meets the tolerance.
    unsolved = (status == int(Status.MAX_ITER)) | (status == int(Status.NUMERICAL_ERROR))
    last, best = st.last, st.kept
    tau = xp.where(unsolved, best.tau, last.tau)
    pt = Point(*(xp.where(unsolved[:, None], k, v) / tau[:, None]
                 for v, k in zip(last[:4], best[:4])))
    finite = xp.isfinite(tau) & (tau > 0)
    for v in pt:
        finite = finite & _all_finite(xp, v)
    rescue = unsolved & ~prob.bad & finite
    pt = Point(*(xp.where(finite[:, None], v, 0.0) for v in pt))
    # The polish's first guess of the active rows is z > s on the equilibrated problem,
    # where rows are comparable (on the original data the test depends on row scaling):
    # z~ = z / e and s~ = e s, so z~ > s~ is z > e^2 s.
    act = None
    if prob.p:
        act = pt.z > (pt.s if row_scale is None else row_scale * row_scale * pt.s)
    if strict is not False:
        # A lane polished early whose guess has more than polish_max_active x n active
        # rows (the iterate does not yet tell the active rows from the nearly active
        # ones: 81 of 500 rows for n = 8 in the many-rows class) is not polished now but
        # iterates on. (Up to 2n: degenerate and duplicated rows legitimately make more
        # than n active.)
        plausible = finite
        if prob.p:
            plausible = plausible & (xp.sum(xp.astype(act, xp.int32), axis=-1) + prob.m
                                     <= cfg.polish_max_active * prob.n)
        if strict is True:
            rescue = rescue | (solved & plausible)
            solved = xp.zeros_like(solved)
        else:               # a traced flag (_passes_traced)
            rescue = rescue | (solved & plausible & strict)
            solved = solved & ~strict
    # The factored active-set system is kept for the derivatives.
    pt, system, rescued = polish(xp, ops, prob, cfg, pt, solved, rescue, act=act)
    status = xp.where(rescued, int(Status.SOLVED), status)
    # A lane the iteration called solved but whose point is not finite is a numerical
    # failure, never a SOLVED lane with a made-up point.
    status = xp.where((status == int(Status.SOLVED)) & ~finite & ~rescued,
                      int(Status.NUMERICAL_ERROR), status)
    return Polished(pt, system, status, rescued)


def _assemble(xp, ops, prob: Problem, cfg, st, pol: Polished, asarray) -> QPSolution:
    """The user's result from the final (unscaled) state and its polish."""
    pt, system, status = pol.point, pol.system, pol.status
    failed = (status == int(Status.PRIMAL_INFEASIBLE)) | (status == int(Status.DUAL_INFEASIBLE)) \
        | (status == int(Status.NUMERICAL_ERROR)) | (status == int(Status.NONCONVEX))
    nan = xp.asarray(xp.nan, dtype=prob.dtype, device=prob.device)
    x, y, z, s = (xp.where(failed[:, None], nan, v) for v in pt)
    x, y, z = _certificates(xp, prob, st, status, x, y, z)
    # A certificate that overflowed (data near the floating-point limit) certifies
    # nothing: such a lane is a numerical failure.
    broken = ((status == int(Status.PRIMAL_INFEASIBLE))
              & ~(_all_finite(xp, y) & _all_finite(xp, z))) \
        | ((status == int(Status.DUAL_INFEASIBLE)) & ~_all_finite(xp, x))
    status = xp.where(broken, int(Status.NUMERICAL_ERROR), status)
    x, y, z = (xp.where(broken[:, None], nan, v) for v in (x, y, z))
    if prob.p:
        # Rows with h = +inf: slack infinite, dual exactly zero.
        z = xp.where(prob.h_free, 0.0, z)
    ctx = Context(xp=xp, ops=ops, asarray=asarray, prob=prob, cfg=cfg, x=x, y=y, z=z, s=s,
                  status=status, system=system)
    pres, dres, gap = residuals(xp, prob, Point(x, y, z, s))
    s_out = xp.where(prob.h_free, xp.inf, s) if prob.p else s
    bs = prob.batch_shape

    def out(v, cast=True):
        v = xp.reshape(v, (*bs, *v.shape[1:]))
        return xp.astype(v, prob.out_dtype) if cast else v

    return QPSolution(
        x=out(x), z=out(z), y=out(y), s=out(s_out), status=out(status, False),
        iterations=out(st.iterations, False),
        primal_residual=out(xp.where(failed, nan, pres)),
        dual_residual=out(xp.where(failed, nan, dres)),
        gap=out(xp.where(failed, nan, gap)), context=ctx,
    )
