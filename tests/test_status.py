"""Per-lane status codes: infeasible, unbounded, non-finite data, iteration limit, ``check``.

A batch may mix good and bad problems; every lane must get its own status, the
bad lanes NaN solutions (infeasible ones a checked certificate instead), and the
good lanes exactly the answer they get when solved alone. Nearly infeasible and
nearly unbounded problems that are in fact solvable must be SOLVED.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import n_examples, to_numpy
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import DUAL_INFEASIBLE, PRIMAL_INFEASIBLE, SOLVED, objective, reference_solve
from strategies import (
    ARGS,
    CORE_RANK,
    feasible_lane,
    paper_problem,
    primal_infeasible_lane,
    stack_lanes,
    unbounded_lane,
)

import optnet
from optnet import Status

FIELDS = ("x", "z", "y", "s", "status", "iterations", "primal_residual", "dual_residual", "gap")
POINT = ("x", "y", "z", "s")
FAILED_FIELDS = ("x", "y", "z", "s", "primal_residual", "dual_residual", "gap")

# Lane kinds and the status each must get.
EXPECTED = {
    "ok": Status.SOLVED,
    "infeasible_ineq": Status.PRIMAL_INFEASIBLE,
    "infeasible_eq": Status.PRIMAL_INFEASIBLE,
    "infeasible_eq_ineq": Status.PRIMAL_INFEASIBLE,
    "unbounded_lp": Status.DUAL_INFEASIBLE,
    "unbounded_qp": Status.DUAL_INFEASIBLE,
}
N, P, M = 4, 6, 2


def make_lane(rng, kind: str, n: int = N, p: int = P, m: int = M) -> dict:
    """One problem of the given kind (a key of :data:`EXPECTED`)."""
    if kind == "ok":
        return feasible_lane(rng, n, p, m)
    if kind.startswith("infeasible_"):
        return primal_infeasible_lane(rng, n, p, m, kind.removeprefix("infeasible_"))
    if kind.startswith("unbounded_"):
        return unbounded_lane(rng, n, p, m, lp=kind == "unbounded_lp")
    raise ValueError(kind)


def solve_np(data: dict, backend: str = "numpy", **kw) -> dict:
    """Solve and return every field of the solution as a NumPy array."""
    sol = optnet.solve(*(data[k] for k in ARGS), backend=backend, **kw)
    return {f: to_numpy(getattr(sol, f)) for f in FIELDS}


def assert_same_point(batched: dict, i, alone: dict, rtol: float = 1e-12) -> None:
    """Lane ``i`` of a batched solution equals a single problem's solution to ``rtol``."""
    for f in POINT:
        a, b = batched[f][i], alone[f]
        assert np.all(np.isfinite(a)), (f, a)
        scale = max(1.0, float(np.max(np.abs(b), initial=0.0)))
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * scale, err_msg=f"{f}, lane {i}")


def assert_failed_lane(out: dict, i, data: dict | None = None) -> None:
    """Lane ``i`` failed: its arrays are NaN, except the certificate of an infeasible lane.

    With ``data`` (the lane's problem), a ``PRIMAL_INFEASIBLE`` lane must carry a Farkas
    vector in ``(y, z)`` and a ``DUAL_INFEASIBLE`` lane a recession direction in ``x``
    (see :func:`assert_certificate`); without it, every array must be NaN.
    """
    code = Status(int(out["status"][i]))
    cert = {Status.PRIMAL_INFEASIBLE: ("y", "z"), Status.DUAL_INFEASIBLE: ("x",)}
    keep = cert.get(code, ()) if data is not None else ()
    for f in FAILED_FIELDS:
        if f in keep:
            continue
        assert np.all(np.isnan(out[f][i])), f"{f} of lane {i} is {out[f][i]} (want NaN)"
    if keep:
        assert_certificate(code, data, *(out[f][i] for f in keep))


def assert_certificate(code: Status, lane: dict, *cert, tol: float = 1e-7) -> None:
    """Check an infeasibility certificate of one problem (float64 data).

    ``PRIMAL_INFEASIBLE``: ``(y, z)`` with ``z >= 0``, ``b'y + h'z = -1`` and
    ``|A'y + G'z|_inf <= tol * max(1, |(y, z)|_inf)``: no x can satisfy ``Ax = b, Gx <= h``
    since ``0 = (A'y + G'z)'x <= b'y + h'z < 0`` would follow.
    ``DUAL_INFEASIBLE``: ``d`` with ``q'd = -1`` and ``Qd``, ``Ad``, ``max(Gd, 0)`` within
    ``tol * max(1, |d|_inf)`` of zero: along ``d`` the objective decreases without bound.
    """
    Q, q, G, h, A, b = (None if lane[k] is None else np.asarray(lane[k], float) for k in ARGS)
    if code == Status.PRIMAL_INFEASIBLE:
        y, z = cert
        assert np.all(np.isfinite(y)) and np.all(np.isfinite(z)), (y, z)
        assert np.all(z >= 0), z
        n = q.shape[-1]
        lhs, value = np.zeros(n), 0.0
        if A is not None:
            lhs, value = lhs + A.T @ y, value + b @ y
        if G is not None:
            lhs, value = lhs + G.T @ z, value + h @ z
        scale = max(1.0, np.max(np.abs(y), initial=0.0), np.max(np.abs(z), initial=0.0))
        assert abs(value + 1.0) <= 1e-9, value
        assert np.max(np.abs(lhs)) <= tol * scale, lhs
    else:
        (d,) = cert
        assert np.all(np.isfinite(d)), d
        scale = max(1.0, np.max(np.abs(d)))
        assert abs(q @ d + 1.0) <= 1e-9, q @ d
        assert np.max(np.abs(Q @ d)) <= tol * scale, Q @ d
        if A is not None:
            assert np.max(np.abs(A @ d)) <= tol * scale, A @ d
        if G is not None:
            assert np.max(G @ d) <= tol * scale, G @ d


def check_mixed_batch(kinds: list, seed: int, backend: str) -> None:
    rng = np.random.default_rng(seed)
    lane_data = [make_lane(rng, k) for k in kinds]
    out = solve_np(stack_lanes(lane_data), backend)
    got = [Status(int(c)).name for c in out["status"]]
    want = [EXPECTED[k].name for k in kinds]
    assert got == want
    for i, (kind, lane) in enumerate(zip(kinds, lane_data, strict=True)):
        if kind == "ok":
            assert_same_point(out, i, solve_np(lane, backend))
            for f in ("primal_residual", "dual_residual", "gap"):
                assert np.isfinite(out[f][i]), f
        else:
            assert_failed_lane(out, i, lane)


REFERENCE_STATUS = {Status.SOLVED: SOLVED, Status.PRIMAL_INFEASIBLE: PRIMAL_INFEASIBLE,
                    Status.DUAL_INFEASIBLE: DUAL_INFEASIBLE}


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_generators_agree_with_reference(kind):
    """The reference solver confirms what each lane generator claims to make."""
    for seed in range(5):
        lane = make_lane(np.random.default_rng(seed), kind)
        assert reference_solve(**lane).status == REFERENCE_STATUS[EXPECTED[kind]], seed


@pytest.mark.parametrize("kind", sorted(set(EXPECTED) - {"ok"}))
def test_single_bad_problem(backend, kind):
    """Each kind of bad problem alone gets its status, its certificate and NaN elsewhere."""
    lane = make_lane(np.random.default_rng(1), kind)
    out = solve_np(lane, backend)
    assert out["status"].shape == ()
    assert Status(int(out["status"])) == EXPECTED[kind]
    assert_failed_lane(out, (), lane)


def test_mixed_batch(backend):
    """Infeasible and unbounded lanes among feasible ones (all arrays batched)."""
    kinds = ["ok", "infeasible_ineq", "ok", "unbounded_lp", "infeasible_eq", "ok",
             "unbounded_qp", "infeasible_eq_ineq"]
    check_mixed_batch(kinds, 0, backend)


@settings(max_examples=n_examples(25))
@given(kinds=st.lists(st.sampled_from(sorted(EXPECTED)), min_size=1, max_size=6),
       seed=st.integers(0, 2**32 - 1))
def test_mixed_batch_random(kinds, seed):
    """Any mixture of lane kinds, in any order (numpy)."""
    check_mixed_batch(kinds, seed, "numpy")


def test_bad_lanes_with_shared_q(backend):
    """Q and q shared; lanes 1 and 3 primal infeasible through their own G, h."""
    rng = np.random.default_rng(5)
    base = feasible_lane(rng, N, P, 0)
    G = np.stack([rng.standard_normal((P, N)) for _ in range(4)])
    x0 = rng.standard_normal(N)
    h = G @ x0 + rng.uniform(0.1, 1.0, (4, P))
    e1 = np.eye(N)[0]
    for i in (1, 3):
        G[i, 0], h[i, 0], G[i, 1], h[i, 1] = e1, -1.0, -e1, -1.0
    data = {"Q": base["Q"], "q": base["q"], "G": G, "h": h, "A": None, "b": None}
    out = solve_np(data, backend)
    assert [Status(int(c)) for c in out["status"]] == [
        Status.SOLVED, Status.PRIMAL_INFEASIBLE, Status.SOLVED, Status.PRIMAL_INFEASIBLE]
    for i in (0, 2):
        alone = solve_np(dict(data, G=G[i], h=h[i]), backend)
        assert_same_point(out, i, alone)
    for i in (1, 3):
        assert_failed_lane(out, i, dict(data, G=G[i], h=h[i]))


# ---------------------------------------------------------------- non-finite data

NONFINITE = [(k, v) for k in ARGS for v in ("nan", "inf", "-inf") if (k, v) != ("h", "inf")]


def _corrupt(a: np.ndarray, lane, value: float) -> np.ndarray:
    a = a.copy()
    idx = (lane,) + (0,) * (a.ndim - 1)
    a[idx] = value
    return a


@pytest.mark.parametrize(("arg", "value"), NONFINITE, ids=[f"{k}={v}" for k, v in NONFINITE])
def test_nonfinite_data_in_one_lane(arg, value):
    """NaN/Inf in one lane's data: NUMERICAL_ERROR there only (numpy)."""
    rng = np.random.default_rng(11)
    clean = stack_lanes([feasible_lane(rng, N, P, M) for _ in range(4)])
    data = dict(clean, **{arg: _corrupt(clean[arg], 2, float(value))})
    out = solve_np(data)
    ref = solve_np(clean)
    assert [Status(int(c)) for c in out["status"]] == [
        Status.SOLVED, Status.SOLVED, Status.NUMERICAL_ERROR, Status.SOLVED]
    assert_failed_lane(out, 2)
    for i in (0, 1, 3):
        assert_same_point(out, i, {f: ref[f][i] for f in POINT})


@pytest.mark.parametrize("arg", ["Q", "h"])
def test_nonfinite_data_in_one_lane_backends(backend, arg):
    """The same on every backend."""
    rng = np.random.default_rng(12)
    clean = stack_lanes([feasible_lane(rng, N, P, M) for _ in range(3)])
    data = dict(clean, **{arg: _corrupt(clean[arg], 0, np.nan)})
    out = solve_np(data, backend)
    assert [Status(int(c)) for c in out["status"]] == [
        Status.NUMERICAL_ERROR, Status.SOLVED, Status.SOLVED]
    assert_failed_lane(out, 0)
    for i in (1, 2):
        assert_same_point(out, i, solve_np({k: clean[k][i] for k in ARGS}, backend))


@pytest.mark.parametrize("arg", ARGS)
def test_nan_in_shared_argument(arg):
    """NaN in an argument shared by the batch: every lane NUMERICAL_ERROR."""
    rng = np.random.default_rng(13)
    data = stack_lanes([feasible_lane(rng, N, P, M) for _ in range(3)])
    shared = data[arg][0].copy()
    shared[(0,) * CORE_RANK[arg]] = np.nan
    data[arg] = shared
    out = solve_np(data)
    assert out["status"].shape == (3,)
    assert np.all(out["status"] == int(Status.NUMERICAL_ERROR)), out["status"]
    for i in range(3):
        assert_failed_lane(out, i)


def test_infinite_h_is_not_an_error():
    """+inf in h is "no constraint", not bad data."""
    rng = np.random.default_rng(14)
    data = feasible_lane(rng, N, P, M)
    data["h"][0] = np.inf
    out = solve_np(data)
    assert Status(int(out["status"])) == Status.SOLVED
    assert np.isposinf(out["s"][0]) and out["z"][0] == 0.0


def test_unbounded_with_infinite_h_rows(backend):
    """An unbounded LP with an ``h = +inf`` row: its ``z`` is 0 and ``s`` +inf (as the
    status explanation says), the other rows' NaN; ``x`` a descent direction."""
    Q = np.zeros((2, 2))
    q = np.array([-1.0, 0.0])
    G = np.array([[0.0, 1.0], [1.0, 0.0]])
    h = np.array([1.0, np.inf])
    sol = optnet.solve(Q, q, G, h, backend=backend)
    assert Status(int(to_numpy(sol.status))) == Status.DUAL_INFEASIBLE
    x, z, s = (to_numpy(v) for v in (sol.x, sol.z, sol.s))
    np.testing.assert_allclose(q @ x, -1.0, rtol=1e-8)
    assert G[0] @ x <= 1e-8
    assert np.isnan(z[0]) and z[1] == 0.0
    assert np.isnan(s[0]) and np.isposinf(s[1])
    assert "h = +inf" in Status.DUAL_INFEASIBLE.explanation


# ---------------------------------------------------------------- check=True


@pytest.mark.parametrize("kind", ["infeasible_ineq", "unbounded_lp"])
def test_check_raises(backend, kind):
    """check=True raises QPError naming the status of the failed lanes."""
    rng = np.random.default_rng(21)
    data = stack_lanes([make_lane(rng, "ok"), make_lane(rng, kind), make_lane(rng, "ok")])
    with pytest.raises(optnet.QPError, match=EXPECTED[kind].name):
        optnet.solve(*(data[k] for k in ARGS), backend=backend, check=True)


def test_check_raises_numerical_error():
    rng = np.random.default_rng(22)
    data = stack_lanes([feasible_lane(rng, N, P, M) for _ in range(2)])
    data["q"][1, 0] = np.nan
    with pytest.raises(optnet.QPError, match="NUMERICAL_ERROR"):
        optnet.solve(*(data[k] for k in ARGS), check=True)


def test_check_raises_names_every_status():
    """A batch with several kinds of failure names each of them."""
    rng = np.random.default_rng(23)
    data = stack_lanes([make_lane(rng, k) for k in ("ok", "infeasible_eq", "unbounded_qp")])
    with pytest.raises(optnet.QPError) as info:
        optnet.solve(*(data[k] for k in ARGS), check=True)
    msg = str(info.value)
    assert "PRIMAL_INFEASIBLE" in msg and "DUAL_INFEASIBLE" in msg


def test_check_passes_when_solved(backend):
    """check=True on solvable problems returns the same solution as check=False."""
    rng = np.random.default_rng(24)
    data = stack_lanes([feasible_lane(rng, N, P, M) for _ in range(3)])
    sol = optnet.solve(*(data[k] for k in ARGS), backend=backend, check=True)
    ref = solve_np(data, backend)
    assert np.all(to_numpy(sol.status) == int(Status.SOLVED))
    np.testing.assert_array_equal(to_numpy(sol.x), ref["x"])


# ---------------------------------------------------------------- iteration limit


def test_max_iter(backend):
    """max_iter=1: each lane is MAX_ITER (one iteration, finite best iterate) or, where
    polishing that iterate already met the tolerance, SOLVED with the right answer."""
    rng = np.random.default_rng(31)
    data = paper_problem(rng, 8, n=30, p=30)
    out = solve_np(data, backend, max_iter=1)
    full = solve_np(data, backend)
    status = out["status"]
    assert np.all(full["status"] == int(Status.SOLVED)), full["status"]
    assert set(status.tolist()) <= {int(Status.MAX_ITER), int(Status.SOLVED)}, status
    hit = status == int(Status.MAX_ITER)
    assert np.any(hit), status       # one iteration is not enough for most of these lanes
    assert np.all(out["iterations"] == 1), out["iterations"]
    for f in ("x", "z", "s", "primal_residual", "dual_residual", "gap"):
        assert np.all(np.isfinite(out[f])), f
    np.testing.assert_allclose(out["x"][~hit], full["x"][~hit], rtol=1e-7, atol=1e-7)
    with pytest.raises(optnet.QPError, match="MAX_ITER"):
        optnet.solve(*(data[k] for k in ARGS), backend=backend, max_iter=1, check=True)


def test_max_iter_bounds_resumed_lanes(backend, monkeypatch):
    """A lane whose early polish misses the tolerance resumes its iteration: its steps
    before and after count together against max_iter. (Every polished point is made to
    miss here, so that every lane resumes; then, with the limit the lanes need without
    resuming, the resumed steps alone would take them past it.)"""
    from optnet import _polish

    rng = np.random.default_rng(31)
    data = paper_problem(rng, 4, n=10, p=10)
    limit = int(np.min(solve_np(data, backend)["iterations"]))
    monkeypatch.setattr(_polish, "meets_tol",
                        lambda xp, prob, pt, tol: xp.zeros(pt.x.shape[:1], dtype=xp.bool))
    out = solve_np(data, backend, max_iter=limit)
    assert np.all(out["iterations"] <= limit), (out["iterations"], limit)
    assert set(out["status"].tolist()) <= {int(Status.MAX_ITER), int(Status.SOLVED)}


def test_max_iter_enough():
    """The same problems are solved with the default limit, in fewer than 100 iterations."""
    rng = np.random.default_rng(31)
    data = paper_problem(rng, 3, n=10, p=10)
    out = solve_np(data)
    assert np.all(out["status"] == int(Status.SOLVED))
    assert np.all((out["iterations"] > 1) & (out["iterations"] < 100))


def test_iterating_only_running_lanes_changes_nothing(monkeypatch):
    """Eager backends iterate only the lanes still running (re-selected as lanes finish);
    the answer is that of iterating the whole batch in lockstep, lane for lane."""
    from optnet.backends import numpy as numpy_backend

    rng = np.random.default_rng(41)
    data = paper_problem(rng, 24, n=20, p=20)
    data["h"][3] = -np.abs(data["h"][3]) - 1.0       # lane 3: x in an empty set ...
    data["G"][3] = np.abs(data["G"][3])
    data["G"][3, :, :] = 0.0
    data["Q"][5, 0, 0] = np.nan                       # lane 5: bad data
    out = solve_np(data)
    monkeypatch.setattr(numpy_backend, "ops", numpy_backend.ops._replace(eager=False))
    ref = solve_np(data)
    assert out["status"][3] == int(Status.PRIMAL_INFEASIBLE), out["status"]
    assert out["status"][5] == int(Status.NUMERICAL_ERROR), out["status"]
    assert len(set(out["iterations"].tolist())) > 2, out["iterations"]   # lanes finish apart
    np.testing.assert_array_equal(out["status"], ref["status"])
    np.testing.assert_array_equal(out["iterations"], ref["iterations"])
    for f in ("x", "z", "s"):
        np.testing.assert_allclose(out[f], ref[f], rtol=1e-12, atol=1e-14, err_msg=f)


# ---------------------------------------------------------------- nearly infeasible / unbounded

def _rel_objective_error(lane: dict, x, ref_x) -> float:
    f = objective(lane["Q"], lane["q"], np.asarray(x))
    f_ref = objective(lane["Q"], lane["q"], ref_x)
    return abs(f - f_ref) / max(1.0, abs(f_ref))


@pytest.mark.parametrize("width", [1e-2, 1e-5, 1e-8, 0.0])
@pytest.mark.parametrize("seed", range(3))
def test_nearly_infeasible_but_feasible(width, seed):
    """Feasible sets of width 1e-2 .. 0 (no interior) are SOLVED, not called infeasible.

    A slab ``c <= x_1 <= c + width`` through the optimum of a feasible problem, and an
    equality ``x_1 = c`` next to the inequality ``x_1 <= c + width``.
    """
    rng = np.random.default_rng(seed)
    base = feasible_lane(rng, N, P, M)
    c = reference_solve(**base).x[0]
    e1 = np.eye(N)[0]
    slab = {k: None if v is None else v.copy() for k, v in base.items()}
    slab["G"][0], slab["h"][0] = e1, c + width
    slab["G"][1], slab["h"][1] = -e1, -c
    pinned = {k: None if v is None else v.copy() for k, v in base.items()}
    pinned["A"][0], pinned["b"][0] = e1, c
    pinned["G"][0], pinned["h"][0] = e1, c + width
    for lane in (slab, pinned):
        ref = reference_solve(**lane)
        assert ref.status == SOLVED
        out = solve_np(lane)
        assert Status(int(out["status"])) == Status.SOLVED, int(out["status"])
        assert _rel_objective_error(lane, out["x"], ref.x) <= 1e-6


@pytest.mark.parametrize("radius", [1e1, 1e3, 1e5])
@pytest.mark.parametrize("lp", [True, False], ids=["lp", "qp"])
def test_nearly_unbounded_but_bounded(radius, lp):
    """An unbounded problem cut off at distance ``radius`` along its direction is SOLVED."""
    for seed in range(3):
        rng = np.random.default_rng(seed)
        lane = unbounded_lane(rng, N, P, M, lp=lp)
        # The same direction the generator drew first: q'd = -1, Qd = 0, Ad = 0, Gd <= 0.
        d = np.random.default_rng(seed).standard_normal(N)
        d /= np.linalg.norm(d)
        assert abs(lane["q"] @ d + 1.0) <= 1e-12
        x0 = np.linalg.lstsq(lane["G"], lane["h"] - 0.5, rcond=None)[0]
        lane = dict(lane, G=np.vstack([lane["G"], d]), h=np.append(lane["h"], d @ x0 + radius))
        ref = reference_solve(**lane)
        assert ref.status == SOLVED
        out = solve_np(lane)
        assert Status(int(out["status"])) == Status.SOLVED, (seed, int(out["status"]))
        assert _rel_objective_error(lane, out["x"], ref.x) <= 1e-6, seed


# ---------------------------------------------------------------- nonconvex Q

def test_nonconvex_lane_is_flagged(backend):
    """Q with a clearly negative eigenvalue: NONCONVEX there, NaN arrays, neighbours unchanged;
    a negative eigenvalue at the rounding level (-1e-7 relative) is tolerated."""
    rng = np.random.default_rng(21)
    lanes_ = [feasible_lane(rng, N, P, M) for _ in range(4)]
    U = np.linalg.qr(rng.standard_normal((N, N)))[0]
    lanes_[1]["Q"] = U @ np.diag([2.0, 1.0, 0.5, -1e-2]) @ U.T      # indefinite
    lanes_[2]["Q"] = U @ np.diag([2.0, 1.0, 0.5, -1e-7]) @ U.T      # rounding level
    data = stack_lanes(lanes_)
    out = solve_np(data, backend)
    assert [Status(int(c)) for c in out["status"]] == [
        Status.SOLVED, Status.NONCONVEX, Status.SOLVED, Status.SOLVED]
    assert_failed_lane(out, 1)
    for i in (0, 3):
        assert_same_point(out, i, solve_np({k: data[k][i] for k in ARGS}, backend))
    with pytest.raises(optnet.QPError, match="NONCONVEX"):
        optnet.solve(*(data[k] for k in ARGS), backend=backend, check=True)


def test_zero_diagonal_with_coupling_is_nonconvex():
    """``[[0, 1], [1, 0]]`` has a zero diagonal but eigenvalue -1."""
    out = solve_np({"Q": np.array([[0.0, 1.0], [1.0, 0.0]]), "q": np.ones(2),
                    "G": np.vstack([np.eye(2), -np.eye(2)]), "h": np.ones(4), "A": None, "b": None})
    assert Status(int(out["status"])) == Status.NONCONVEX


def _flaky_cholesky(monkeypatch, failing_calls):
    """Make the interior point's per-lane factorizations (one try with a (B,) shift) fail in
    lane 0 on their first ``failing_calls`` calls (before any lane finishes, so that lane 0
    is still the batch's first); every other factorization is left alone. Returns the list
    of lane 0's shifts on those calls."""
    from optnet.backends import numpy as numpy_backend

    inner = numpy_backend.ops.cholesky
    tries = []

    def flaky(H, shifts, factor_dtype, scale, skip, overwrite=False):
        L, ok = inner(H, shifts, factor_dtype, scale, skip, overwrite)
        if len(shifts) == 1 and not isinstance(shifts[0], float) and len(tries) < failing_calls:
            tries.append(float(np.asarray(shifts[0])[0]))
            ok = ok.copy()
            ok[0] = False
        return L, ok

    monkeypatch.setattr(numpy_backend, "ops", numpy_backend.ops._replace(cholesky=flaky))
    return tries


def _paper_batch(B=4, n=6):
    rng = np.random.default_rng(7)
    U = rng.uniform(size=(B, n, n))
    G = rng.standard_normal((B, 2 * n, n))
    h = np.einsum("bij,bj->bi", G, rng.standard_normal((B, n))) + rng.uniform(size=(B, 2 * n))
    return U.transpose(0, 2, 1) @ U + 1e-3 * np.eye(n), rng.standard_normal((B, n)), G, h


def test_a_failed_factorization_waits_with_a_larger_shift(monkeypatch):
    """A lane whose interior-point factorization fails waits one iteration and tries again
    with a 1000-fold shift (``Settings.shift_growth``): it is still SOLVED, after as many
    steps, and its neighbours are bit for bit those of a clean run."""
    args = _paper_batch()
    clean = optnet.solve(*args)
    tries = _flaky_cholesky(monkeypatch, 2)
    sol = optnet.solve(*args)
    assert tries == [pytest.approx(1e-15), pytest.approx(1e-12)]
    assert np.all(sol.status == int(Status.SOLVED))
    assert int(sol.iterations[0]) == int(clean.iterations[0])
    np.testing.assert_allclose(sol.x[0], clean.x[0], rtol=1e-8, atol=1e-10)
    for f in ("x", "z", "status", "iterations"):
        np.testing.assert_array_equal(getattr(sol, f)[1:], getattr(clean, f)[1:])


def test_a_factorization_that_fails_on_the_reduced_path_falls_back(monkeypatch):
    """After ``Settings.shift_raises`` raises (shifts 1e-15, 1e-12, 1e-9, 1e-6) on the
    unrefined float64 path a lane whose factorization kept failing is not reported: it
    starts afresh on the top level (refined solves, regularization from 1e-15 again) and is
    SOLVED there; its neighbours still solve to the tolerance (the batch's level moved
    with it, so they are not bit for bit those of a clean run)."""
    args = _paper_batch()
    clean = optnet.solve(*args)
    tries = _flaky_cholesky(monkeypatch, 4)
    sol = optnet.solve(*args)
    assert [round(np.log10(t)) for t in tries] == [-15, -12, -9, -6]
    assert np.all(sol.status == int(Status.SOLVED))
    np.testing.assert_allclose(sol.x, clean.x, rtol=1e-7, atol=1e-8)


def test_a_factorization_that_always_fails_is_a_numerical_error(monkeypatch):
    """A lane whose factorization fails on every try, after its fallback to the top level
    too (the shifts 1e-15 .. 1e-6 twice), is a NUMERICAL_ERROR; the others are SOLVED."""
    args = _paper_batch()
    clean = optnet.solve(*args)
    tries = _flaky_cholesky(monkeypatch, 10**6)
    sol = optnet.solve(*args)
    assert [round(np.log10(t)) for t in tries] == [-15, -12, -9, -6] * 2
    assert int(sol.status[0]) == int(Status.NUMERICAL_ERROR)
    assert np.all(np.isnan(sol.x[0]))
    assert np.all(sol.status[1:] == int(Status.SOLVED))
    np.testing.assert_allclose(sol.x[1:], clean.x[1:], rtol=1e-7, atol=1e-8)
