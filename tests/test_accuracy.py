"""Accuracy of ``optnet.solve`` on feasible problems, against an independent reference.

Every lane of every problem is compared with :func:`reference.reference_solve`
(Clarabel + active-set polish, float64, on exactly the data the solver saw):
status ``SOLVED``, relative error of ``x`` and of the objective, and the KKT
residuals of the returned ``(x, y, z, s)`` (stationarity, primal feasibility,
complementarity, signs), all relative to the scale of the data.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import n_examples, to_numpy
from hypothesis import given, settings
from reference import SOLVED, kkt_residuals, objective, objective_scale, reference_solve
from strategies import (
    CORE_RANK,
    DEGENERATE_KINDS,
    batch_shape_of,
    cast,
    degenerate_lane,
    lanes,
    paper_problem,
    qp_specs,
)

import optnet

# Relative tolerances: x (||x - xref|| / max(1, ||xref||)), objective, KKT residuals.
TOL = {
    "float64": {"x": 1e-6, "obj": 1e-8, "kkt": 1e-8},
    "float32": {"x": 1e-3, "obj": 1e-3, "kkt": 1e-4},
}
FIELDS = ("x", "z", "y", "s", "status", "iterations", "primal_residual", "dual_residual", "gap")


def sizes(data: dict) -> tuple[int, int, int]:
    """Numbers of variables, inequality rows and equality rows of a problem."""
    n = data["q"].shape[-1]
    p = 0 if data["G"] is None else data["G"].shape[-2]
    m = 0 if data["A"] is None else data["A"].shape[-2]
    return n, p, m


def solve_numpy(data: dict, backend: str = "numpy", **kw) -> dict:
    """Solve with ``optnet`` and return every field of the solution as a NumPy array."""
    sol = optnet.solve(data["Q"], data["q"], data["G"], data["h"], data["A"], data["b"],
                       backend=backend, **kw)
    return {f: to_numpy(getattr(sol, f)) for f in FIELDS}


def accuracy_failures(data: dict, out: dict, dtype: str) -> list[str]:
    """Compare a solution lane by lane with the reference solver.

    Shapes and dtypes are asserted; accuracy failures are collected.

    Parameters
    ----------
    data : dict
        The problem (NumPy arrays).
    out : dict
        The solution fields as NumPy arrays (:func:`solve_numpy`).
    dtype : {"float64", "float32"}
        Selects the tolerances of :data:`TOL`.

    Returns
    -------
    list of str
        One line per failed check (empty if the solution is accurate).
    """
    tol = TOL[dtype]
    bs = batch_shape_of(data)
    n, p, m = sizes(data)
    assert out["x"].shape == bs + (n,)
    assert out["z"].shape == bs + (p,)
    assert out["s"].shape == bs + (p,)
    assert out["y"].shape == bs + (m,)
    assert out["status"].shape == bs
    for f in ("x", "z", "y", "s", "primal_residual", "dual_residual", "gap"):
        assert out[f].dtype == np.dtype(dtype), f
    failures = []
    for idx, lane in lanes(data):
        x, y, z, s = (out[f][idx] for f in ("x", "y", "z", "s"))
        status = int(out["status"][idx])
        if status != int(optnet.Status.SOLVED):
            failures.append(f"lane {idx}: status {optnet.Status(status).name}")
            continue
        ref = reference_solve(**lane)
        assert ref.status == SOLVED, f"generator bug: reference says {ref.status} in {idx}"
        if not np.all(np.isfinite(x)):
            failures.append(f"lane {idx}: non-finite x {x}")
            continue
        xerr = np.linalg.norm(x - ref.x) / max(1.0, np.linalg.norm(ref.x))
        if not xerr <= tol["x"]:
            failures.append(f"lane {idx}: x relative error {xerr:.3e} > {tol['x']:.0e}")
        obj = objective(lane["Q"], lane["q"], x)
        oerr = abs(obj - ref.objective) / objective_scale(lane["Q"], lane["q"], ref.x)
        if not oerr <= tol["obj"]:
            failures.append(f"lane {idx}: objective relative error {oerr:.3e} "
                            f"({obj!r} vs {ref.objective!r}) > {tol['obj']:.0e}")
        res = kkt_residuals(lane["Q"], lane["q"], lane["G"], lane["h"], lane["A"], lane["b"],
                            x, y, z, s)
        for name, val in res._asdict().items():
            if not val <= tol["kkt"]:
                failures.append(f"lane {idx}: KKT {name} residual {val:.3e} > {tol['kkt']:.0e}")
        if p:
            free = np.isposinf(lane["h"])
            if not (np.all(np.isposinf(s[free])) and np.all(z[free] == 0.0)):
                failures.append(f"lane {idx}: rows with h = +inf have s = {s[free]}, "
                                f"z = {z[free]} (want +inf and exactly 0)")
            if not np.all(np.isfinite(s[~free])):
                failures.append(f"lane {idx}: non-finite slack on a finite row")
    return failures


def assert_accurate(data: dict, out: dict, dtype: str) -> None:
    """Assert that :func:`accuracy_failures` finds nothing."""
    failures = accuracy_failures(data, out, dtype)
    assert not failures, "\n".join(failures)


# ---------------------------------------------------------------- random problems


@given(spec=qp_specs(dtypes=("float64",)))
def test_random_feasible_float64(spec):
    """Any feasible float64 problem (all kinds, sizes, batch layouts) matches the reference."""
    data = spec.build()
    assert_accurate(data, solve_numpy(data), "float64")


@given(spec=qp_specs(dtypes=("float32",)))
def test_random_feasible_float32(spec):
    """Any feasible float32 problem matches the reference (on the float32 data) to 1e-3."""
    data = spec.build()
    assert data["Q"].dtype == np.float32
    assert_accurate(data, solve_numpy(data), "float32")


@settings(max_examples=n_examples(10))
@given(spec=qp_specs(max_n=5, batch_shapes=[(), (2,)]))
def test_random_feasible_backends(backend, spec):
    """The same on every backend (small problems: array-api-strict is slow)."""
    data = spec.build()
    assert_accurate(data, solve_numpy(data, backend), "float64")


# ---------------------------------------------------------------- problem classes

SMALL = {"max_n": 6, "batch_shapes": [(), (3,)]}


@settings(max_examples=n_examples(12))
@given(spec=qp_specs(kinds=("lp",), **SMALL))
def test_lp(backend, spec):
    """Q = 0 (linear programs, bounded by a box)."""
    data = spec.build()
    assert np.all(data["Q"] == 0)
    assert_accurate(data, solve_numpy(data, backend), "float64")


@settings(max_examples=n_examples(12))
@given(spec=qp_specs(kinds=("psd",), min_n=2, **SMALL))
def test_rank_deficient_q(backend, spec):
    """Positive semidefinite, singular Q."""
    data = spec.build()
    assert np.all(np.linalg.matrix_rank(data["Q"]) < spec.n)
    assert_accurate(data, solve_numpy(data, backend), "float64")


@settings(max_examples=n_examples(12))
@given(spec=qp_specs(kinds=("pd",), ineq=False, eq=True, **SMALL))
def test_equality_only(backend, spec):
    """Equality constraints only: z and s are empty."""
    data = spec.build()
    assert data["G"] is None and data["A"] is not None
    out = solve_numpy(data, backend)
    assert_accurate(data, out, "float64")


@settings(max_examples=n_examples(12))
@given(spec=qp_specs(kinds=("pd",), ineq=True, eq=False, **SMALL))
def test_inequality_only(backend, spec):
    """Inequality constraints only: y is empty."""
    data = spec.build()
    assert data["A"] is None and data["G"] is not None
    assert_accurate(data, solve_numpy(data, backend), "float64")


@settings(max_examples=n_examples(12))
@given(spec=qp_specs(kinds=("pd",), ineq=False, eq=False, **SMALL))
def test_unconstrained(backend, spec):
    """No constraints: x = -Q^{-1} q."""
    data = spec.build()
    out = solve_numpy(data, backend)
    assert_accurate(data, out, "float64")
    Q, q = np.broadcast_arrays(data["Q"], data["q"][..., None])
    expected = -np.linalg.solve(Q, q)[..., 0]
    err = np.linalg.norm(out["x"] - expected, axis=-1) / np.maximum(
        1.0, np.linalg.norm(expected, axis=-1))
    assert np.all(err <= 1e-9), err


@settings(max_examples=n_examples(12))
@given(spec=qp_specs(min_n=1, max_n=1, batch_shapes=[(), (3,)]))
def test_one_variable(backend, spec):
    """n = 1, every kind of problem."""
    data = spec.build()
    assert_accurate(data, solve_numpy(data, backend), "float64")


def test_one_variable_by_hand(backend):
    """min 1/2 x^2 - 3x s.t. x <= 1, -x <= 5: x = 1, z = (2, 0), s = (0, 6)."""
    out = solve_numpy({"Q": np.array([[1.0]]), "q": np.array([-3.0]),
                       "G": np.array([[1.0], [-1.0]]), "h": np.array([1.0, 5.0]),
                       "A": None, "b": None}, backend)
    assert int(out["status"]) == optnet.Status.SOLVED
    np.testing.assert_allclose(out["x"], [1.0], rtol=0, atol=1e-9)
    np.testing.assert_allclose(out["z"], [2.0, 0.0], rtol=0, atol=1e-9)
    np.testing.assert_allclose(out["s"], [0.0, 6.0], rtol=0, atol=1e-9)
    assert out["y"].shape == (0,)


def test_equality_by_hand(backend):
    """min 1/2 |x|^2 + 1'x s.t. 1'x = 1 (n = 3): x = 1/3, y = -4/3 (the +A'y convention)."""
    out = solve_numpy({"Q": np.eye(3), "q": np.ones(3), "G": None, "h": None,
                       "A": np.ones((1, 3)), "b": np.array([1.0])}, backend)
    np.testing.assert_allclose(out["x"], np.full(3, 1 / 3), rtol=0, atol=1e-9)
    np.testing.assert_allclose(out["y"], [-4 / 3], rtol=0, atol=1e-9)
    assert out["z"].shape == (0,) and out["s"].shape == (0,)


# ---------------------------------------------------------------- batching


@settings(max_examples=n_examples(12))
@given(spec=qp_specs(max_n=5, batch_shapes=[(2, 3)]))
def test_shared_argument_equals_explicit_broadcast(backend, spec):
    """A shared (or partly broadcast) argument gives the same answer as its explicit copies."""
    data = spec.build()
    bs = batch_shape_of(data)
    full = {k: None if a is None else np.broadcast_to(
        a, bs + a.shape[a.ndim - CORE_RANK[k]:]).copy() for k, a in data.items()}
    out_shared = solve_numpy(data, backend)
    out_full = solve_numpy(full, backend)
    assert_accurate(data, out_shared, "float64")
    for f in ("x", "y", "z", "s"):
        np.testing.assert_allclose(out_shared[f], out_full[f], rtol=1e-9, atol=1e-9)


def test_broadcast_2x3_against_3(backend):
    """Batch dims (2, 3) for Q and (3,) for q and h, G and A shared, b (2, 3)."""
    rng = np.random.default_rng(7)
    n, p, m = 4, 5, 2
    M = rng.standard_normal((2, 3, n, n))
    Q = M @ np.swapaxes(M, -1, -2) / n + 0.1 * np.eye(n)
    q = rng.standard_normal((3, n))
    G = rng.standard_normal((p, n))
    A = rng.standard_normal((m, n))
    x0 = rng.standard_normal((2, 3, n))
    b = x0 @ A.T
    h = np.max(x0 @ G.T, axis=0) + rng.uniform(0.1, 1.0, (3, p))
    data = {"Q": Q, "q": q, "G": G, "h": h, "A": A, "b": b}
    out = solve_numpy(data, backend)
    assert out["x"].shape == (2, 3, n)
    assert out["status"].shape == (2, 3)
    assert_accurate(data, out, "float64")


@settings(max_examples=n_examples(20))
@given(spec=qp_specs(max_n=8, inf_rows=True))
def test_infinite_h_matches_reference(spec):
    """Rows with h = +inf are no constraint: s = +inf and z = 0 there (numpy)."""
    data = spec.build()
    assert_accurate(data, solve_numpy(data), "float64")


@settings(max_examples=n_examples(10))
@given(spec=qp_specs(max_n=5, batch_shapes=[(), (2,)], inf_rows=True))
def test_infinite_h_rows_removed(backend, spec):
    """Rows with h = +inf give the solution of the problem without those rows."""
    data = spec.build()
    out = solve_numpy(data, backend)
    assert_accurate(data, out, "float64")
    for idx, lane in lanes(data):
        keep = np.isfinite(lane["h"])
        reduced = dict(lane, G=lane["G"][keep], h=lane["h"][keep])
        if not keep.any():
            reduced.update(G=None, h=None)
        ref = solve_numpy(reduced, backend)
        assert int(ref["status"]) == optnet.Status.SOLVED
        np.testing.assert_allclose(out["x"][idx], ref["x"], rtol=1e-7, atol=1e-7)
        np.testing.assert_allclose(out["z"][idx][keep], ref["z"], rtol=1e-7, atol=1e-7)
        np.testing.assert_allclose(out["y"][idx], ref["y"], rtol=1e-7, atol=1e-7)
        assert np.all(np.isposinf(out["s"][idx][~keep]))
        assert np.all(out["z"][idx][~keep] == 0.0)


def test_all_rows_infinite_is_unconstrained(backend):
    """Every h = +inf: the unconstrained minimizer, z = 0, s = +inf."""
    rng = np.random.default_rng(3)
    Q = np.diag([1.0, 2.0, 4.0])
    q = rng.standard_normal(3)
    G = rng.standard_normal((4, 3))
    h = np.full(4, np.inf)
    out = solve_numpy({"Q": Q, "q": q, "G": G, "h": h, "A": None, "b": None}, backend)
    assert int(out["status"]) == optnet.Status.SOLVED
    np.testing.assert_allclose(out["x"], -q / np.diag(Q), rtol=1e-10, atol=1e-12)
    assert np.all(out["z"] == 0.0)
    assert np.all(np.isposinf(out["s"]))


# ---------------------------------------------------------------- degenerate problems

DEGENERATE_CASES = [(n, p, seed) for n in (2, 3, 5) for p in (0, 2, 4) for seed in range(4)]


@pytest.mark.parametrize("kind", DEGENERATE_KINDS)
def test_degenerate_problems(kind):
    """Feasible, bounded problems without the usual regularity (numpy).

    Redundant or implied constraints, no strictly feasible point, active
    constraints with zero multipliers, degenerate LP vertices: the duals may
    not be unique, but x is, and the problem must be SOLVED.
    """
    failures = []
    for n, p, seed in DEGENERATE_CASES:
        data = degenerate_lane(np.random.default_rng(seed), kind, n, p)
        failures += [f"degenerate_lane(default_rng({seed}), {kind!r}, {n}, {p}): {f}"
                     for f in accuracy_failures(data, solve_numpy(data), "float64")]
    assert not failures, f"{len(failures)} of {len(DEGENERATE_CASES)} failed:\n" + "\n".join(
        failures)


# ---------------------------------------------------------------- the paper's benchmark


def _paper(batch: int, dtype: str) -> None:
    rng = np.random.default_rng(2017 + batch)
    data = cast(paper_problem(rng, batch), dtype)
    out = solve_numpy(data)
    tol = {"float64": 1e-7, "float32": 1e-3}[dtype]
    assert np.all(out["status"] == int(optnet.Status.SOLVED)), out["status"]
    errs = []
    for idx, lane in lanes(data):
        ref = reference_solve(**lane)
        assert ref.status == SOLVED
        errs.append(np.linalg.norm(out["x"][idx] - ref.x) / max(1.0, np.linalg.norm(ref.x)))
    errs = np.array(errs)
    assert np.all(errs <= tol), f"x relative errors (max {errs.max():.3e}): {errs}"


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_paper_benchmark(dtype):
    """OptNet paper's random QPs, n = p = 100, batch 16 (numpy)."""
    _paper(16, dtype)


# Lanes of ``paper_problem(default_rng(0), 100000, n=5, p=5)`` on which plain Mehrotra
# steps misbehaved: the first two cycled to max_iter (the merit alternating between two
# values), the others took 60-100 iterations when the neighbourhood safeguard was applied
# strictly from a poorly centred starting point.
HARD_PAPER_LANES = [74421, 95501, 12767, 37080, 38289, 43183, 65664]


def test_paper_lanes_that_cycled():
    """Lanes once seen cycling converge quickly and agree with the reference solver."""
    full = paper_problem(np.random.default_rng(0), 100000, n=5, p=5)
    data = {k: None if v is None else v[HARD_PAPER_LANES] for k, v in full.items()}
    out = solve_numpy(data)
    assert np.all(out["status"] == int(optnet.Status.SOLVED)), out["status"]
    assert np.all(out["iterations"] <= 25), out["iterations"]
    for idx, lane in lanes(data):
        ref = reference_solve(**lane)
        assert ref.status == SOLVED
        err = np.linalg.norm(out["x"][idx] - ref.x) / max(1.0, np.linalg.norm(ref.x))
        assert err <= 1e-7, (idx, err)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_paper_benchmark_batch128(dtype):
    """OptNet paper's random QPs, n = p = 100, batch 128 (numpy)."""
    _paper(128, dtype)


@pytest.mark.parametrize("tol", [None, 1e-5, 3e-5, 1e-4])
def test_float32_throughout(monkeypatch, tol):
    """The float32-only path (a backend or device without float64, such as JAX without
    x64) on the paper's problems, n = p = 100: with the default tolerance every lane is
    SOLVED; with any tolerance, a SOLVED lane's point is finite, its reported residuals
    are small and it matches the reference to 1e-3. (A finished lane once turned NaN
    while frozen and came back SOLVED with x = 0.)"""
    from optnet.backends import numpy as numpy_backend

    monkeypatch.setattr(numpy_backend, "has_float64", lambda device=None: False)
    data = cast(paper_problem(np.random.default_rng(2017), 8), "float32")
    out = solve_numpy(data, tol=tol)
    solved = out["status"] == int(optnet.Status.SOLVED)
    if tol is None:
        assert np.all(solved), out["status"]
    assert np.any(solved), out["status"]
    for idx, lane in lanes(data):
        if not solved[idx]:
            continue
        assert np.all(np.isfinite(out["x"][idx])), (idx, out["x"][idx])
        assert out["primal_residual"][idx] <= 1e-3 * max(1.0, np.abs(lane["h"]).max()), idx
        ref = reference_solve(**lane)
        err = np.linalg.norm(out["x"][idx] - ref.x) / max(1.0, np.linalg.norm(ref.x))
        # x is as accurate as the tolerance allows: 1e-3 down to tol 3e-5 (the default).
        assert err <= max(1e-3, 30.0 * (tol or 0.0)), (idx, err)
