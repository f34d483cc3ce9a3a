"""The interior point's driver: the loop, the precision level, lane compaction.

The iteration itself is ``_step.step`` (the Mehrotra predictor-corrector on the
homogeneous embedding); its per-lane classification is ``_terminate`` and its
progress policy ``_progress``. This module owns everything around it:

- the loop: ``ops.while_loop`` on traced backends (JAX), a Python loop on eager ones
  that reads the loop's state on the host once every ``Settings.sync_every``
  iterations (whether any lane still runs, and whether the precision must climb: one
  small transfer), so that no host read interrupts the iterations in between;
- the precision level of the solves (``_kkt.solve_at``): it starts at 0 in mixed
  precision (float32 factors, see :func:`iteration_problem`) and at 1 otherwise, and
  climbs by one whenever a lane's solve is measured less accurate than its merit
  needs (``State.worse``): eager, the batch's level, at the next host read; traced,
  each lane's own level (an array (B,)), at once;
- on eager backends whose ``Ops.compile_step`` is set, the iteration as that compiled
  function (the loop, its host reads and the compaction stay in Python);
- lane compaction on eager backends: at a host read where at most 3/4 of the lanes
  still run, the loop goes on with those lanes alone (``_lanes``);
- the precision fallback: a lane that fails (NUMERICAL_ERROR) while the solves are
  reduced starts afresh once on the full-precision, refined path (:func:`_fall_back`);
- the final classification of lanes still running at ``max_iter``, and the resumption
  of lanes whose early polish missed the tolerance (:func:`resume`).

No other module edits the loop's state fields.
"""

from __future__ import annotations

from . import _kkt, _lanes, _progress
from ._problem import Problem
from ._settings import Settings, default_settings
from ._step import State, assess, initial_level, initial_state, step, top_level
from ._terminate import RUNNING, _norm
from ._types import Status

__all__ = ["RUNNING", "Settings", "State", "default_settings", "iteration_problem", "resume",
           "run", "start"]

def iteration_problem(xp, ops, prob: Problem, cfg: Settings, structure=None) -> Problem:
    """``prob`` as the interior point iterates it, on eager backends (one host read, once:
    a problem already ``examined`` is returned as it is):

    - with ``bound_rows`` where no row of ``G`` has two nonzeros (bounds on the
      variables), ``definite_diagonal`` where ``Q`` is diagonal with positive entries,
      and ``diagonal_h`` where ``H = Q + G'W^{-1}G`` is diagonal for every ``W`` (``Q``
      diagonal and ``bound_rows``): ``_kkt`` then factors a vector instead of an n x n
      matrix, and the polish eliminates the variables its active bounds fix;
    - else with ``factor_dtype`` float32 where a float64 problem should iterate in mixed
      precision (``Settings.mixed_min_n`` variables or more, on backends whose float32
      factorizations pay, ``Ops.narrow_factors``; only where every lane's data lie well
      inside float32's range, ``Settings.mixed_range``, so that the narrow products and
      solves can neither overflow nor lose data to underflow): the early interior-point
      directions need a few correct digits only, float32 factors give them at half the
      cost of the products forming ``H``, and the level climbs to float64 factors as soon
      as a solve is measured less accurate than the iteration needs. The polish and the
      derivatives factor in float64 regardless.

    Otherwise ``prob`` itself. On traced backends both choices would read the data on the
    host (a traced ``cond`` under ``vmap`` would run both branches): there ``structure``,
    the flags :func:`structure_of` computed where the data were concrete (a program that
    optnet compiles for given arrays: ``_solve``, ``adapters/torch_compiled``), or None,
    decides the first three (mixed precision is an eager choice).
    """
    if prob.examined:
        return prob
    if not ops.eager:
        return prob if structure is None else _structured(prob, *structure)
    bounds, diagonal, definite = _structure(xp, prob)
    flags = (xp.astype(bounds, xp.int32) + 2 * xp.astype(diagonal, xp.int32)
             + 4 * xp.astype(definite, xp.int32))
    if (ops.narrow_factors is not None and prob.dtype == xp.float64
            and prob.factor_dtype == xp.float64 and prob.n >= cfg.mixed_min_n
            and ops.narrow_factors(prob.device)):
        lo, hi = cfg.mixed_range
        one = xp.ones(prob.bad.shape, dtype=prob.dtype, device=prob.device)
        mat = _norm(xp, prob.Q, prob.device) * one
        vec = _norm(xp, prob.q, prob.device) * one
        for v, M in ((prob.h, prob.G), (prob.b, prob.A)):
            if v is not None:
                mat = xp.maximum(mat, _norm(xp, M, prob.device) * one)
                vec = xp.maximum(vec, _norm(xp, v, prob.device) * one)
        fits = (mat >= lo) & (mat <= hi) & (vec <= hi)
        flags = flags + 8 * xp.astype(xp.all(fits | prob.bad), xp.int32)
    flags = int(flags)
    prob = _structured(prob, bool(flags & 1), bool(flags & 2), bool(flags & 4))
    if flags & 8 and not prob.diagonal_h:
        return prob._replace(factor_dtype=xp.float32)
    return prob


def _structured(prob: Problem, bounds: bool, diagonal: bool, definite: bool) -> Problem:
    """``prob`` examined, with the flags of its structure (:func:`iteration_problem`)."""
    return prob._replace(examined=True, bound_rows=bounds, definite_diagonal=definite,
                         diagonal_h=bounds and diagonal)


def _structure(xp, prob: Problem):
    """0-d bools, over every lane: no row of ``G`` has two nonzeros; ``Q`` is diagonal;
    ``Q`` is diagonal with positive entries."""
    return structure_of(xp, prob.Q, prob.G if prob.p else None)


def known_structure(xp, Q, G, compute=None):
    """:func:`structure_of` of concrete ``Q`` and ``G`` as a tuple of three Python bools
    (one host read), or None where :func:`structure_readable` says it cannot be read.
    ``compute``: a function of ``(Q, G)`` to use instead (a compiled one)."""
    if not structure_readable(xp, Q, G):
        return None
    flags = (compute or (lambda Q, G: structure_of(xp, Q, G)))(Q, G)
    return tuple(bool(f) for f in flags)


def structure_readable(xp, Q, G) -> bool:
    """Whether :func:`structure_of` can read ``Q`` and ``G`` (None or an array) as given:
    real or integer arrays, ``Q`` (..., n, n), ``G`` (..., p, n). Callers skip it otherwise
    and leave the checks of ``canonicalize`` to say what is wrong."""
    def real(a):
        return xp.isdtype(a.dtype, ("real floating", "integral"))

    if Q.ndim < 2 or Q.shape[-1] != Q.shape[-2] or not real(Q):
        return False
    return G is None or (G.ndim >= 2 and G.shape[-1] == Q.shape[-1] and real(G))


def structure_of(xp, Q, G):
    """0-d bools over every lane of ``Q`` (..., n, n) and ``G`` (..., p, n) or None: no row
    of ``G`` has two nonzeros (bounds on the variables); ``Q`` is diagonal; ``Q`` is
    diagonal with positive entries. On the user's arrays as on the canonical problem
    (canonicalizing and equilibrating keep every zero); where a lane holds NaN the
    answer is False, the general path."""
    device = getattr(Q, "device", None)
    d = xp.linalg.diagonal(Q)
    # Diagonal: no nonzero (NaN counts as one) off the diagonal of any lane.
    diagonal = xp.count_nonzero(Q) == xp.count_nonzero(d)
    definite = diagonal & xp.all(d > 0.0)
    bounds = xp.asarray(True, device=device)
    if G is not None and G.shape[-2]:
        bounds = xp.all(xp.count_nonzero(G, axis=-1) <= 1)
    return bounds, diagonal, definite


def iterate(xp, ops, prob: Problem, cfg: Settings, st: State, level, defer: bool = False,
            narrow=None, last=None) -> State:
    """One iteration: classify the running lanes (``_terminate``), record their progress
    and stall those that make none (``_progress``), then step (``_step.step``).

    A lane that has taken ``max_iter`` steps ends MAX_ITER here, whatever the loop's own
    count: a resumed lane (:func:`resume`) goes on from the steps it took before.
    ``last`` (a 0-d bool array, traced): the loop's final pass, which only classifies, as
    :func:`_finish` would (no stall; a lane still running ends MAX_ITER), so that the
    program holds one classification, not two."""
    res, status, merit = assess(xp, prob, cfg, st)
    pr, stalled = _progress.update(xp, cfg, st.progress, merit, st.w, ~st.worse)
    out = st.iterations >= cfg.max_iter
    if last is not None:
        stalled, out = stalled & ~last, out | last
    status = xp.where(stalled & (status == RUNNING), int(Status.NUMERICAL_ERROR), status)
    status = xp.where((status == RUNNING) & out, int(Status.MAX_ITER), status)
    st = st._replace(status=xp.where(st.status == RUNNING, status, st.status), progress=pr)
    return step(xp, ops, prob, cfg, st, res, merit, level, defer, narrow)


def _falls_back(xp, prob: Problem, st: State):
    """(B,) bool: the lanes that :func:`_fall_back` starts afresh: NUMERICAL_ERROR (a
    factorization that kept failing, a stalled step or merit, a non-finite iterate) for
    the first time, and not for bad data (those lanes never ran)."""
    return (st.status == int(Status.NUMERICAL_ERROR)) & ~st.retried & ~prob.bad


def _fall_back(xp, prob: Problem, st: State, again=None) -> State:
    """The precision fallback: a lane that failed while the solves were reduced (float32
    factors, or float64 solves without refinement) starts again from the starting point,
    once, on the top level (full-precision factors, refined solves): eager, the driver
    moves the batch's level to the top at the host read where it makes the fallback;
    traced, the lane's own level moves (:func:`_run_traced`). No lane is reported
    failed by a reduced-precision path: a lane that fails again fails on the top level.
    A lane that reaches ``max_iter`` does not fall back (its iteration budget is spent).
    ``again`` (B,) bool: the lanes to start afresh (default :func:`_falls_back`)."""
    if again is None:
        again = _falls_back(xp, prob, st)
    w0 = st.const.w0
    pr = _progress.restart(xp, st.progress, again)
    return st._replace(
        w=xp.where(again[:, None], w0, st.w),
        status=xp.where(again, RUNNING, st.status),
        boost=xp.where(again, xp.ones_like(st.boost), st.boost),
        retried=st.retried | again,
        progress=pr._replace(best=xp.where(again, xp.inf, pr.best),
                             kept=xp.where(again[:, None], w0, pr.kept)))


def _finish(xp, prob: Problem, cfg: Settings, st: State, done: bool = False) -> State:
    """Lanes still running after the last step: MAX_ITER unless their final iterate is
    classified otherwise; the last iterate may be their best. ``done``: no lane is
    running (known on the host; traced, the loop's last pass classified them), nothing
    to do."""
    if done:
        return st
    _, final, merit = assess(xp, prob, cfg, st)
    running = st.status == RUNNING
    status = xp.where(running, xp.where(final == RUNNING, int(Status.MAX_ITER), final),
                      st.status)
    pr = _progress.keep_last(xp, st.progress, merit, st.w, running)
    return st._replace(status=xp.astype(status, xp.int32), progress=pr)


def _run_traced(xp, ops, prob: Problem, cfg: Settings, st: State, level, narrow):
    """The loop for traced backends, with a precision level per lane (``level`` (B,)):
    a lane whose solve fell short climbs at once, and a lane that fails below the top
    level falls back (:func:`_fall_back`) onto the top level, alone. Nothing a lane does
    changes another lane's arithmetic (a traced solve keeps every lane bit for bit that
    of a batch without its neighbours): the levels select refinement counts lane by lane
    (``_kkt.solve_at``)."""
    top = top_level(cfg)

    def cond(carry):
        st, _, k = carry
        return xp.any(st.status == RUNNING) & (k <= cfg.max_iter)

    def body(carry):
        st, level, k = carry
        # Pass max_iter + 1, if any, is :func:`_finish`'s classification (``last``).
        last = k >= cfg.max_iter
        st = iterate(xp, ops, prob, cfg, st, level, narrow=narrow, last=last)
        climb = st.worse & (level < top)
        again = _falls_back(xp, prob, st) & (level < top) & ~last
        st = _fall_back(xp, prob, st, again)
        # (``worse`` is spent: at the top level it has no use.)
        st = st._replace(worse=xp.zeros_like(st.worse),
                         boost=xp.where(climb, xp.ones_like(st.boost), st.boost))
        level = xp.where(again, top, xp.where(climb, level + 1, level))
        return st, xp.astype(level, xp.int32), k + 1

    k0 = xp.asarray(0, dtype=xp.int32, device=prob.device)
    level = xp.zeros(st.status.shape, dtype=xp.int32, device=prob.device) + level
    st, level, _ = ops.while_loop(cond, body, (st, level, k0))
    return st, level


def _run_eager(xp, ops, prob: Problem, cfg: Settings, st: State, level: int, narrow,
               fallback: bool):
    """The loop for eager backends: ``Settings.sync_every`` steps between host reads, and
    lane compaction (lanes are independent, so the result is that of the whole batch).

    At level 0 (float32 factors) the loop reads after every step: the climb to float64
    factors is then never late (a few steps with float32 factors past their accuracy
    spoil the iterate). From level 1 on, a lane whose solves fall short waits for the
    next read (``_step.step``, ``defer``). Once lanes of a batch have begun to finish,
    the loop reads after every step too: compacting the batch as it empties pays more
    than the reads cost (the paper's batch, n = p = 100, B = 128: 10% of the forward pass
    on NumPy).
    """
    B = st.status.shape[0]
    top = top_level(cfg)
    step_fn = iterate if ops.compile_step is None else ops.compile_step(iterate)
    idx, sub_prob, sub, sub_narrow = None, prob, st, narrow
    k, finishing = 0, False
    while k < cfg.max_iter:
        every = 1 if level == 0 or finishing else cfg.sync_every
        for _ in range(min(every, cfg.max_iter - k)):
            sub = step_fn(xp, ops, sub_prob, cfg, sub, level, defer=level > 0, narrow=sub_narrow)
            k += 1
        # One host read: the running lanes, whether some lane's solves fell short, and
        # whether some lane is to fall back (here, at the read: it costs the steps nothing).
        flags = xp.astype(xp.any(sub.worse), xp.int32)
        if fallback and level < top:
            # (A lane that fails on the top level would only take the same path again.)
            flags = flags + 2 * xp.astype(xp.any(_falls_back(xp, sub_prob, sub)), xp.int32)
        n_run, flags = divmod(int(4 * xp.sum(xp.astype(sub.status == RUNNING, xp.int32))
                                  + flags), 4)
        if flags // 2 and k < cfg.max_iter:
            sub, level = _fall_back(xp, sub_prob, sub), top
            sub = sub._replace(worse=xp.zeros_like(sub.worse), boost=xp.ones_like(sub.boost))
            n_run += 1      # (at least)
        elif flags % 2 and level < top:
            # A new precision, new factorizations: the regularization starts afresh.
            level += 1
            sub = sub._replace(worse=xp.zeros_like(sub.worse), boost=xp.ones_like(sub.boost))
        if n_run == 0 or k >= cfg.max_iter:
            break
        finishing = finishing or n_run < sub.status.shape[0]
        if B > 1 and 4 * n_run <= 3 * sub.status.shape[0]:
            st = sub if idx is None else _lanes.put_state(xp, st, sub, idx, B)
            idx = xp.nonzero(st.status == RUNNING)[0]
            sub_prob = _lanes.take_problem(xp, prob, idx, B)
            sub, sub_narrow = _lanes.take_state(xp, (st, narrow), idx, B)
    st = sub if idx is None else _lanes.put_state(xp, st, sub, idx, B)
    return st, level, n_run == 0


def resume(xp, ops, prob: Problem, cfg: Settings, st: State, level, lanes, patient=None):
    """Run again from a state and level returned by :func:`run`, the lanes ``lanes`` (B,)
    bool set running (their other lanes stay as they are); ``patient`` (B,) bool or None:
    lanes that go on without the fast stall (``_progress``).

    The resumed lanes' progress count starts afresh: their first iteration re-examines
    the iterate they stopped at, which is no lack of progress (counted as one, a single
    poor step after it made the lane stall: a badly scaled float32 problem, n = 150,
    p = 250, m = 30, ended NUMERICAL_ERROR so on torch).
    """
    start = st._replace(status=xp.where(lanes, RUNNING, st.status),
                        progress=_progress.restart(xp, st.progress, lanes, patient))
    return run(xp, ops, prob, cfg, start=start, level=level)


def start(xp, ops, prob: Problem, cfg: Settings, warm=None) -> State:
    """The state :func:`run` starts from without ``start`` (traced backends: the problem
    :func:`iteration_problem` leaves as it is)."""
    prob = iteration_problem(xp, ops, prob, cfg)
    return initial_state(xp, ops, prob, cfg, _kkt.narrow_copies(xp, prob), warm)


def run(xp, ops, prob: Problem, cfg: Settings, start: State | None = None, level=None,
        warm=None):
    """Run the interior-point loop. Returns the final ``State`` and precision level.

    A lane stops as SOLVED once its merit is below ``cfg.polish_tol``, which may be
    looser than ``cfg.tol``: the polish (``_polish``) then solves the active-set system
    exactly, and the lane counts as solved only if that point meets ``cfg.tol``; if it
    does not, the caller resumes the lane (``start``, ``level``: a state and level
    returned by ``run``, with the lanes to resume set RUNNING) with ``polish_tol = tol``.
    This spares the last iterations of the interior point, which only refine what the
    polish computes to working precision in one solve. ``warm``: a ``_warm.WarmPoint`` on
    ``prob`` to start from (``_step.initial_state``).
    """
    prob = iteration_problem(xp, ops, prob, cfg)
    # Mixed precision: the narrow copies of Q and G, made once (see _kkt.Narrow).
    narrow = _kkt.narrow_copies(xp, prob)
    st = initial_state(xp, ops, prob, cfg, narrow, warm) if start is None else start
    if level is None:
        level = initial_level(prob)
    # The precision fallback (_fall_back), eager: solves starting below the top (traced,
    # each lane's level decides).
    fallback = ops.eager and initial_level(prob) < top_level(cfg)
    if ops.eager:
        st, level, done = _run_eager(xp, ops, prob, cfg, st, int(level), narrow, fallback)
    else:
        level = xp.asarray(level, dtype=xp.int32, device=prob.device)
        st, level = _run_traced(xp, ops, prob, cfg, st, level, narrow)
        done = True     # (the loop's last pass classified every lane)
    return _finish(xp, prob, cfg, st, done), level
