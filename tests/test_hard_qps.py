"""Accuracy of ``optnet.solve`` on classical hard dense QP classes (:mod:`hard_qps`).

Every class of :data:`hard_qps.CLASSES` (rank-deficient and slightly
indefinite ``Q``, degenerate optima, redundant equalities, bad scaling, many
rows, many variables, duplicated/parallel rows with fixed and free variables)
is generated for a few seeds, solved with ``optnet.solve`` (NumPy backend,
float64, default settings) and compared with the reference solver
(:func:`hard_qps.reference_optimum`, built on ``reference.reference_solve``).

A problem passes when

* ``status == Status.SOLVED``;
* the relative objective error ``|f(x) - f_ref| / max(1, |x_ref'Q x_ref|,
  |q'x_ref|)`` is at most 1e-6 (:func:`hard_qps.objective_error`);
* the constraint violation ``max(|Ax - b|_inf / max(1, |Ax|_inf, |b|_inf),
  |max(Gx - h, 0)|_inf / max(1, |Gx|_inf, |h|_inf))`` is at most 1e-6
  (:func:`hard_qps.violation`).

Before that the test asserts that the reference solver solved the problem and
agrees with the optimum the generator built (relative objective difference at
most 1e-7), so that a broken generator fails loudly instead of blaming the
solver. ``x`` itself is not compared: on the degenerate classes the minimizer
need not be unique.

The big variants of the classes (n up to 300, up to 3000 rows) are marked
``slow``.
"""

from __future__ import annotations

import numpy as np
import pytest
from hard_qps import (
    CLASSES,
    INDEFINITE,
    SIZES,
    hard_batch,
    hard_problem,
    objective_error,
    problem_sizes,
    reference_optimum,
    violation,
)
from reference import SOLVED, kkt_residuals

import optnet

# The torch solves here test the torch iteration itself (see conftest.torch_native).
pytestmark = pytest.mark.usefixtures("torch_native")

TOL_OBJ = 1e-6         # relative objective error
TOL_VIOL = 1e-6        # relative constraint violation
# Reference solver vs the constructed optimum. Not tighter: on badly_scaled the reference
# point is infeasible by ~1e-11 (relative), which, times multipliers up to ~1e8, moves its
# objective by up to ~6e-8 (relative); a broken generator is off by far more.
TOL_GENERATOR = 1e-7
SEEDS = (0, 1, 2)
SLOW_SEEDS = (0, 1)
BATCH = 3

CASES = [(name, seed, "default") for name in CLASSES for seed in SEEDS] + [
    pytest.param(name, seed, "slow", marks=pytest.mark.slow)
    for name in CLASSES for seed in SLOW_SEEDS]


def _ids(val):
    return str(val)


def failures(name: str, problem: dict, sol, idx=()) -> list[str]:
    """Check one lane of an optnet solution against the reference.

    Parameters
    ----------
    name : str
        The class of the problem.
    problem : HardQP
        The problem of the lane.
    sol : optnet.QPSolution
        The (possibly batched) solution.
    idx : tuple
        The lane's index in the batch.

    Returns
    -------
    list of str
        Empty if the lane passes, else one line naming the failed checks.
    """
    ref = reference_optimum(name, problem)
    assert ref.status == SOLVED, f"generator bug: the reference solver says {ref.status!r}"
    assert ref.generator_error <= TOL_GENERATOR, (
        f"generator bug: the reference optimum differs from the constructed one by "
        f"{ref.generator_error:.2e} (relative)")
    status = int(np.asarray(sol.status)[idx])
    it = int(np.asarray(sol.iterations)[idx])
    x = np.asarray(sol.x)[idx]
    info = (f"iterations {it}, primal_residual {float(np.asarray(sol.primal_residual)[idx]):.2e},"
            f" dual_residual {float(np.asarray(sol.dual_residual)[idx]):.2e},"
            f" gap {float(np.asarray(sol.gap)[idx]):.2e}")
    out = []
    if status != optnet.Status.SOLVED:
        out.append(f"status {optnet.Status(status).name}")
    oerr = objective_error(problem, x, ref.x, ref.objective)
    if not oerr <= TOL_OBJ:
        out.append(f"objective relative error {oerr:.3e} > {TOL_OBJ:.0e}")
    viol = violation(problem, x)
    if not viol <= TOL_VIOL:
        out.append(f"constraint violation {viol:.3e} > {TOL_VIOL:.0e}")
    return [f"{'; '.join(out)} ({info})"] if out else []


@pytest.mark.parametrize(("name", "seed", "size"), CASES, ids=_ids)
def test_hard_qp(name, seed, size):
    """One problem of a hard class: SOLVED, objective and feasibility to 1e-6 (NumPy, float64).

    ``slightly_indefinite``: ``Q`` has eigenvalues down to about ``-1e-5 ||Q||``.
    optnet does not test convexity: it runs its interior-point method on the
    data as given and returns ``SOLVED`` with the KKT point of the given
    (indefinite) problem, which is the constructed minimizer ``x*``; that is
    what this test asserts, against ``x*`` and ``f(x*)``. (The reference
    solver, which requires a PSD ``Q``, is applied to the PSD part of ``Q``
    to check the generator: run on the indefinite data, Clarabel reports
    failure on some seeds, e.g. seed 2 at the default size.)
    """
    problem = hard_problem(name, seed, size)
    sol = optnet.solve(**problem, backend="numpy")
    assert np.asarray(sol.x).shape == (problem_sizes(problem)[0],)
    bad = failures(name, problem, sol)
    assert not bad, (f"{name} seed {seed} ({size}, n/p/m = {problem_sizes(problem)}):\n"
                     + "\n".join(bad))


@pytest.mark.parametrize("name", list(CLASSES))
def test_hard_batch(name):
    """Seeds 0, 1, 2 of a class in one batched call: every lane passes as on its own."""
    data = hard_batch(name, 0, BATCH)
    sol = optnet.solve(**data, backend="numpy")
    assert np.asarray(sol.status).shape == (BATCH,)
    bad = []
    for i in range(BATCH):
        bad += [f"lane {i} (seed {i}): {f}"
                for f in failures(name, hard_problem(name, i), sol, (i,))]
    assert not bad, f"{name}, batch of seeds 0..{BATCH - 1}:\n" + "\n".join(bad)


# Float32 data: the classes whose problems stay well posed once rounded to float32
# (redundant and duplicated rows stop being exactly redundant: the rounded problems of
# redundant_equalities and duplicate_parallel are infeasible or nearly so, and fail in
# float64 too; slightly_indefinite's reference needs the PSD part of the unrounded Q).
FLOAT32_CLASSES = ("psd_rank_deficient", "degenerate", "badly_scaled", "many_rows", "many_vars")
# Objective and violation, relative, for float32 data solved to the float32 default tol
# 1e-6 (the largest seen: 1e-7).
TOL32 = 1e-5
CASES32 = [(name, seed, "default") for name in FLOAT32_CLASSES for seed in SEEDS] + [
    pytest.param("badly_scaled", seed, "slow", marks=pytest.mark.slow) for seed in SLOW_SEEDS]


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize(("name", "seed", "size"), CASES32, ids=_ids)
def test_hard_qp_float32(name, seed, size, backend):
    """A hard problem in float32 (mixed precision: float32 factors while they serve, then
    float64 ones, refined once they too fall short), NumPy and torch backends: SOLVED,
    objective and feasibility to 1e-5 against the reference solver on the same rounded
    data. The slow badly_scaled seed 1 stalled (NUMERICAL_ERROR at iteration 23) while the
    float64 factors went unrefined."""
    from reference import SOLVED, reference_solve

    problem = {k: None if v is None else np.asarray(v, np.float32)
               for k, v in hard_problem(name, seed, size).items()}
    data = {k: None if v is None else v.astype(np.float64) for k, v in problem.items()}
    ref = reference_solve(**data)
    assert ref.status == SOLVED, ref.status
    sol = optnet.solve(**problem, backend=backend)
    x = np.asarray(sol.x)
    assert x.dtype == np.float32
    status = optnet.Status(int(sol.status))
    oerr = objective_error(data, x, ref.x, ref.objective)
    viol = violation(data, x)
    assert status == optnet.Status.SOLVED and oerr <= TOL32 and viol <= TOL32, (
        f"{name} seed {seed} ({size}): {status.name}, objective error {oerr:.2e}, "
        f"violation {viol:.2e}, iterations {int(sol.iterations)}")


def test_jax_float32_badly_scaled_seed_17_regression():
    """Pinned to one seed (so named): JAX, float32 badly_scaled seed 17. Its lane's early
    polish missed, the resumed lane stalled on unrefined solves, and the traced driver,
    with one precision level for the batch, could not restart it (NUMERICAL_ERROR); with a
    level per lane it falls back onto the top level alone and is solved. The mechanism
    itself is tested without depending on rounding in ``tests/test_fallback.py``."""
    jax = pytest.importorskip("jax")
    from reference import SOLVED, reference_solve

    before = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        problem = {k: None if v is None else np.asarray(v, np.float32)
                   for k, v in hard_problem("badly_scaled", 17).items()}
        data = {k: None if v is None else v.astype(np.float64) for k, v in problem.items()}
        ref = reference_solve(**data)
        assert ref.status == SOLVED, ref.status
        sol = optnet.solve(**problem, backend="jax")
        x = np.asarray(sol.x)
    finally:
        jax.config.update("jax_enable_x64", before)
    assert x.dtype == np.float32
    status = optnet.Status(int(sol.status))
    oerr = objective_error(data, x, ref.x, ref.objective)
    viol = violation(data, x)
    assert status == optnet.Status.SOLVED and oerr <= TOL32 and viol <= TOL32, (
        status.name, oerr, viol, int(sol.iterations))


# ---------------------------------------------------------------- the generators


def _tight(problem) -> np.ndarray:
    return problem.solution.s == 0.0


def _unit_rows(M) -> np.ndarray:
    """Rows scaled to unit norm, signs kept, rounded for exact comparisons."""
    return np.round(M / np.linalg.norm(M, axis=1, keepdims=True), 12)


def _check_psd_rank_deficient(problem, sizes):
    n, p, _ = problem_sizes(problem)
    assert np.linalg.matrix_rank(problem["Q"]) == sizes["rank"] < n
    assert np.linalg.eigvalsh(problem["Q"])[0] >= -1e-12 * np.linalg.norm(problem["Q"], 2)
    units = {tuple(r) for r in _unit_rows(problem["G"])}
    eye = np.eye(n)
    assert all(tuple(r) in units for r in np.vstack([eye, -eye])), "the box rows are missing"
    assert np.sum(_tight(problem)) == n - sizes["rank"]


def _check_slightly_indefinite(problem, sizes):
    ev = np.linalg.eigvalsh(problem["Q"])
    rel = ev[0] / np.max(np.abs(ev))
    assert -1.5e-5 <= rel <= -0.5e-5, rel
    # The symmetric part is the matrix itself (the indefiniteness is not an asymmetry).
    assert np.array_equal(problem["Q"], problem["Q"].T)


def _check_degenerate(problem, sizes):
    n = problem_sizes(problem)[0]
    tight = _tight(problem)
    G = problem["G"][tight]
    assert tight.sum() > n and np.linalg.matrix_rank(G) <= n
    assert np.any(problem.solution.z[tight] == 0.0), "no weakly active row"
    assert len({tuple(r) for r in G}) < tight.sum(), "no duplicated active row"


def _check_redundant_equalities(problem, sizes):
    A, b = problem["A"], problem["b"]
    m = A.shape[0]
    assert np.linalg.matrix_rank(A) == sizes["m_indep"] < m
    xls = np.linalg.lstsq(A, b, rcond=None)[0]
    assert np.max(np.abs(A @ xls - b)) <= 1e-10 * max(1.0, np.max(np.abs(b)))


def _check_badly_scaled(problem, sizes):
    coef = np.concatenate([np.abs(problem[k]).ravel() for k in ("Q", "G", "A")
                           if problem[k] is not None])
    coef = coef[coef > 0]
    assert coef.max() / coef.min() >= 1e9, coef.max() / coef.min()
    assert problem.solution.z.max() >= 1e4, problem.solution.z.max()


def _check_many_rows(problem, sizes):
    n, p, _ = problem_sizes(problem)
    assert n <= 10 and p >= 500
    assert np.mean(problem.solution.s < 1e-2) >= 0.3, "too few nearly active rows"


def _check_many_vars(problem, sizes):
    n, p, m = problem_sizes(problem)
    assert n >= 100 and n >= 5 * (m + p)
    assert np.linalg.cond(problem["Q"]) >= 1e5


def _check_duplicate_parallel(problem, sizes):
    n, p, m = problem_sizes(problem)
    G, h, A = problem["G"], problem["h"], problem["A"]
    units = _unit_rows(G)
    assert len({tuple(r) for r in G}) < p, "no duplicated row"
    assert len({tuple(r) for r in units}) < len({tuple(r) for r in G}), "no parallel row"
    eye = np.eye(n)

    def rows(r):
        return np.flatnonzero(np.all(G == r, axis=1))

    fixed = [j for j in range(n)
             if np.any(h[rows(eye[j])][:, None] == -h[rows(-eye[j])][None, :])]
    assert fixed, "no variable fixed by two inequalities"
    assert np.any(np.count_nonzero(A, axis=1) == 1), "no variable fixed by an equality"
    assert np.linalg.matrix_rank(A) < m, "no duplicated equality row"
    free = [j for j in range(n) if rows(eye[j]).size == 0 and rows(-eye[j]).size == 0]
    assert free, "no free variable"


def _check_near_lp(problem, sizes):
    n, p, m = problem_sizes(problem)
    Q, G, h, A, b = (problem[k] for k in ("Q", "G", "h", "A", "b"))
    assert np.linalg.matrix_rank(Q) == sizes.get("rank", 5) < n
    assert np.linalg.matrix_rank(A) == m - sizes.get("m_dep", 2)
    # b is zero up to rounding against the size of the terms |A| |x*|.
    terms = np.abs(A) @ np.abs(problem.solution.x)
    assert np.max(np.abs(b)) <= 1e-13 * np.max(terms)
    nz = np.abs(A[A != 0])
    assert np.quantile(nz, 0.02) >= 0.1 and np.quantile(nz, 0.98) <= 150.0 * 3
    # Most rows are variable bounds, some of them wide (|x_i| <= 1e4, never active).
    single = np.count_nonzero(G, axis=1) == 1
    assert single.mean() >= 0.6
    wide = single & np.isclose(h, 1e4, rtol=1e-12, atol=0.0)
    assert np.any(wide) and not np.any(_tight(problem)[wide])
    units = _unit_rows(G)
    assert len({tuple(r) for r in units}) < len({tuple(r) for r in G}), "no scaled row copy"


STRUCTURE = {
    "near_lp": _check_near_lp,
    "psd_rank_deficient": _check_psd_rank_deficient,
    "slightly_indefinite": _check_slightly_indefinite,
    "degenerate": _check_degenerate,
    "redundant_equalities": _check_redundant_equalities,
    "badly_scaled": _check_badly_scaled,
    "many_rows": _check_many_rows,
    "many_vars": _check_many_vars,
    "duplicate_parallel": _check_duplicate_parallel,
}


def test_every_class_is_checked():
    """Each class has a structure check (and INDEFINITE names real classes)."""
    assert set(STRUCTURE) == set(CLASSES) == set(SIZES)
    assert INDEFINITE <= set(CLASSES)


@pytest.mark.parametrize("name", list(CLASSES))
@pytest.mark.parametrize("seed", SEEDS)
def test_generator(name, seed):
    """The generator is seeded, builds its class, and the constructed point is a KKT point.

    Same seed, same arrays; float64, no batch dimension; ``None`` only in
    pairs; the constructed ``(x*, y*, z*, s*)`` has KKT residuals at rounding
    level; plus the class-specific structure (rank, eigenvalues, tight rows,
    redundancy, scaling, sizes, duplicates).
    """
    problem = hard_problem(name, seed)
    again = hard_problem(name, seed)
    for k, a in problem.items():
        assert (a is None) == (again[k] is None)
        if a is not None:
            assert a.dtype == np.float64 and np.array_equal(a, again[k])
            assert np.all(np.isfinite(a))
    assert (problem["G"] is None) == (problem["h"] is None)
    assert (problem["A"] is None) == (problem["b"] is None)
    n = problem_sizes(problem)[0]
    assert problem["Q"].shape == (n, n) and problem["q"].shape == (n,)
    ks = problem.solution
    assert np.all(ks.z >= 0) and np.all(ks.s >= 0) and np.all(ks.z * ks.s == 0)
    res = kkt_residuals(problem["Q"], problem["q"], problem["G"], problem["h"],
                        problem["A"], problem["b"], ks.x, ks.y, ks.z, ks.s)
    assert res.worst() <= 1e-13, res
    STRUCTURE[name](problem, SIZES[name]["default"])


def test_rounding_level_indefiniteness_is_not_nonconvex():
    """Q with eigenvalues down to -1e-5 |Q| (rounding) is never flagged NONCONVEX (30 seeds);
    the same Q with that eigenvalue at -1e-1 |Q| always is."""
    for seed in range(30):
        P = hard_problem("slightly_indefinite", seed)
        sol = optnet.solve(P["Q"], P["q"], P["G"], P["h"], P["A"], P["b"])
        assert int(sol.status) == int(optnet.Status.SOLVED), (seed, int(sol.status))
        w, V = np.linalg.eigh(P["Q"])
        w = np.where(w < 0, -0.1 * np.max(np.abs(w)), w)
        Q = (V * w) @ V.T
        sol = optnet.solve(Q, P["q"], P["G"], P["h"], P["A"], P["b"])
        assert int(sol.status) == int(optnet.Status.NONCONVEX), (seed, int(sol.status))


def test_badly_scaled_lane_among_well_scaled_ones():
    """Only one lane of the batch needs equilibration (on eager backends only that lane is
    equilibrated): every lane gets what it gets when solved alone."""
    from strategies import feasible_lane, stack_lanes

    bad = hard_problem("badly_scaled", 1)
    n, p, m = problem_sizes(bad)
    rng = np.random.default_rng(5)
    lanes_ = [{k: bad[k] for k in ("Q", "q", "G", "h", "A", "b")}]
    lanes_ += [feasible_lane(rng, n, p, m) for _ in range(3)]
    data = stack_lanes(lanes_)
    args = [data[k] for k in ("Q", "q", "G", "h", "A", "b")]
    for backend in ("numpy", "torch"):
        sol = optnet.solve(*args, backend=backend)
        status = np.asarray(sol.status)
        assert np.all(status == int(optnet.Status.SOLVED)), (backend, status)
        x = np.asarray(sol.x)
        for i, lane in enumerate(lanes_):
            alone = optnet.solve(*(lane[k] for k in ("Q", "q", "G", "h", "A", "b")),
                                 backend=backend)
            xa = np.asarray(alone.x)
            assert np.linalg.norm(x[i] - xa) <= 1e-9 * max(1.0, np.linalg.norm(xa)), (backend, i)


@pytest.mark.parametrize("eager", [True, False], ids=["eager", "traced"])
def test_lanes_resumed_after_the_early_polish(monkeypatch, eager):
    """badly_scaled seeds 0..7 in one batch: some lanes reach the early-polish merit with a
    polished point that misses the tolerance; they iterate on and pass like the others, in
    the eager loop (resumed lanes polished alone) and in the traced one (the second pass of
    ``_pipeline._passes_traced`` over the whole batch, exercised here with the NumPy
    backend's ops marked not eager)."""
    from optnet import _pdipm
    from optnet.backends import numpy as numpy_backend

    if not eager:
        monkeypatch.setattr(numpy_backend, "ops", numpy_backend.ops._replace(eager=False))
    resumed = []
    resume = _pdipm.resume

    def spy(xp, ops, prob, cfg, st, level, lanes, *rest):
        resumed.append(int(np.sum(lanes)))
        return resume(xp, ops, prob, cfg, st, level, lanes, *rest)

    monkeypatch.setattr(_pdipm, "resume", spy)
    count = 8
    data = hard_batch("badly_scaled", 0, count)
    sol = optnet.solve(**data, backend="numpy")
    assert max(resumed, default=0) >= 1, resumed     # the path under test was taken
    # Every lane carries the polished point: residuals and gap at rounding level of its data
    # (a resumed lane left at the early-polish merit has residuals ~1e-4, a gap ~1).
    size = np.stack([np.max(np.abs(data[k]), axis=(-2, -1) if data[k].ndim == 3 else -1)
                     for k in ("Q", "q", "G", "h", "A", "b")]).max(axis=0)
    for name in ("primal_residual", "dual_residual", "gap"):
        got = np.asarray(getattr(sol, name))
        assert np.all(got <= 1e-12 * np.maximum(1.0, size)), (name, got, size)
    bad = []
    for i in range(count):
        bad += [f"lane {i}: {f}"
                for f in failures("badly_scaled", hard_problem("badly_scaled", i), sol, (i,))]
    assert not bad, "\n".join(bad)


def test_resumed_lanes_progress_count_starts_afresh(monkeypatch):
    """The lanes resumed after a missed early polish start with no iterations counted
    against their progress (``since`` 0, no anchor): their first resumed iteration
    re-examines the iterate they stopped at. Counted as a lack of progress, one poor step
    after it was enough for the stall rule (two iterations without progress within 100x
    the tolerance): the float32 badly_scaled slow seed 1 ended NUMERICAL_ERROR on torch."""
    from optnet import _pdipm

    starts = []
    run = _pdipm.run

    def spy(xp, ops, prob, cfg, start=None, level=None, **kw):
        if start is not None:
            starts.append(start)
        return run(xp, ops, prob, cfg, start=start, level=level, **kw)

    monkeypatch.setattr(_pdipm, "run", spy)
    data = hard_batch("badly_scaled", 0, 8)
    sol = optnet.solve(**data, backend="numpy")
    assert starts, "no lane was resumed"        # the path under test was taken
    st = starts[0]
    resumed = np.asarray(st.status) == _pdipm.RUNNING
    assert resumed.any() and not resumed.all()
    assert np.all(np.asarray(st.progress.since)[resumed] == 0)
    assert np.all(np.isinf(np.asarray(st.progress.anchor)[resumed]))
    assert np.all(np.isfinite(np.asarray(st.progress.anchor)[~resumed]))
    assert np.all(np.asarray(sol.status) == int(optnet.Status.SOLVED))
