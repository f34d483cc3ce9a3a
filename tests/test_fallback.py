"""The precision fallback of the interior point (``_pdipm._fall_back``).

A lane that fails while the solves are reduced (float32 factors in mixed precision, or
float64 solves without refinement) must not be reported failed: it starts afresh on
the top level (full-precision factors, refined solves). These tests make the reduced
path fail on purpose -- every solve below the top level returns NaN in lane 0 -- so
that they do not depend on one machine's rounding, on eager backends, in mixed
precision and on the traced driver, where each lane has a level of its own and the
lane's fallback leaves its neighbours bit for bit as they were: tested too.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import patch_settings, to_numpy
from strategies import paper_problem

import optnet
from optnet import _kkt, _pdipm, _step

ARGS = ("Q", "q", "G", "h", "A", "b")


def _spoil_reduced_solves(monkeypatch, lane=0, every_level=False):
    """Make ``_kkt.solve_at`` return NaN in ``lane`` below the top level (or at every level
    with ``every_level``); counts the spoiled calls."""
    inner = _kkt.solve_at
    calls = []

    def spoiled(xp, ops, prob, cfg, F, level, *rest, **kw):
        out = inner(xp, ops, prob, cfg, F, level, *rest, **kw)
        reduced = (level >= 0) if every_level else (level < _step.top_level(cfg))
        calls.append(level)
        B = out.shape[0]
        mask = xp.reshape(xp.arange(B) == lane, (B, 1, 1))
        # (``level`` a Python int, or traced an array (B,): each lane's own level)
        return xp.where(mask & xp.reshape(xp.asarray(reduced), (-1, 1, 1)), xp.nan, out)

    monkeypatch.setattr(_kkt, "solve_at", spoiled)
    return calls


def _record_runs(monkeypatch):
    """Record ``(status, retried)`` of every interior-point run's final state."""
    runs = []
    inner = _pdipm.run

    def recorded(*a, **kw):
        st, level = inner(*a, **kw)
        runs.append((to_numpy(st.status), to_numpy(st.retried)))
        return st, level

    monkeypatch.setattr(_pdipm, "run", recorded)
    return runs


def _batch(B=3, n=8, seed=3):
    return paper_problem(np.random.default_rng(seed), B, n=n, p=n)


def _solve(data, backend):
    sol = optnet.solve(*(data[k] for k in ARGS), backend=backend)
    return {f: to_numpy(getattr(sol, f)) for f in ("x", "z", "status", "iterations")}


EAGER = ("numpy", "array_api_strict")


@pytest.mark.parametrize("backend", EAGER)
def test_a_lane_failed_by_reduced_solves_is_solved_on_the_top_level(monkeypatch, backend):
    data = _batch()
    clean = _solve(data, backend)
    calls = _spoil_reduced_solves(monkeypatch)
    out = _solve(data, backend)
    assert calls, "the spoiled solve was never called"
    assert np.all(out["status"] == int(optnet.Status.SOLVED)), out["status"]
    np.testing.assert_allclose(out["x"], clean["x"], rtol=1e-7, atol=1e-8)
    # The lane took its steps twice: the spoiled ones never counted, but the fresh start
    # did not come for free either (its neighbours went on at the top level).
    assert out["iterations"][0] >= clean["iterations"][0]


@pytest.mark.parametrize("backend", EAGER)
def test_a_lane_that_fails_on_every_level_falls_back_once(monkeypatch, backend):
    """Spoiled on every level, the lane falls back once and then ends NUMERICAL_ERROR in
    the interior point (no second fallback, no endless loop); its neighbours are SOLVED.
    (The polish, which never goes through the spoiled solves, then rescues it from its
    kept point: SOLVED, the clean answer.)"""
    data = _batch()
    clean = _solve(data, backend)
    _spoil_reduced_solves(monkeypatch, every_level=True)
    runs = _record_runs(monkeypatch)
    out = _solve(data, backend)
    status, retried = runs[0]
    assert int(status[0]) == int(optnet.Status.NUMERICAL_ERROR)
    assert retried.tolist() == [True, False, False]
    assert np.all(out["status"] == int(optnet.Status.SOLVED))
    np.testing.assert_allclose(out["x"], clean["x"], rtol=1e-7, atol=1e-8)


def _lockstep(monkeypatch):
    """The NumPy backend's ops marked not eager: the traced driver, as under jit."""
    from optnet.backends import numpy as numpy_backend

    monkeypatch.setattr(numpy_backend, "ops", numpy_backend.ops._replace(eager=False))


def test_traced_lane_falls_back_alone_and_neighbours_stay_bit_for_bit(monkeypatch):
    """Lockstep: the spoiled lane falls back onto the top level, its own, and is solved;
    its neighbours, whose levels never moved, are bit for bit those of the clean run."""
    _lockstep(monkeypatch)
    data = _batch()
    clean = _solve(data, "numpy")
    runs = _record_runs(monkeypatch)
    calls = _spoil_reduced_solves(monkeypatch)
    out = _solve(data, "numpy")
    assert calls
    status, retried = runs[0]
    assert retried.tolist() == [True, False, False]
    assert int(status[0]) == int(optnet.Status.SOLVED)
    assert np.all(out["status"] == int(optnet.Status.SOLVED)), out["status"]
    np.testing.assert_allclose(out["x"][0], clean["x"][0], rtol=1e-7, atol=1e-8)
    assert out["iterations"][0] >= clean["iterations"][0]
    for f in ("x", "z", "status", "iterations"):
        np.testing.assert_array_equal(out[f][1:], clean[f][1:])


def test_traced_lane_that_fails_on_every_level_falls_back_once(monkeypatch):
    """Lockstep, spoiled on every level: one fallback, then NUMERICAL_ERROR in the
    interior point (the loop ends); the neighbours bit for bit those of the clean run."""
    _lockstep(monkeypatch)
    data = _batch()
    clean = _solve(data, "numpy")
    _spoil_reduced_solves(monkeypatch, every_level=True)
    runs = _record_runs(monkeypatch)
    out = _solve(data, "numpy")
    status, retried = runs[0]
    assert int(status[0]) == int(optnet.Status.NUMERICAL_ERROR)
    assert retried.tolist() == [True, False, False]
    for f in ("x", "z", "status", "iterations"):
        np.testing.assert_array_equal(out[f][1:], clean[f][1:])


def test_traced_levels_climb_lane_by_lane(monkeypatch):
    """Lockstep: every solve of lane 0 below the top level made inaccurate (relative
    error 1e-4, not NaN): lane 0 climbs to the top level and is solved, while the levels
    of its neighbours stay where a clean run leaves them (bit for bit)."""
    _lockstep(monkeypatch)
    data = _batch()
    clean = _solve(data, "numpy")
    levels = []
    inner = _kkt.solve_at

    def degraded(xp, ops, prob, cfg, F, level, *rest, **kw):
        out = inner(xp, ops, prob, cfg, F, level, *rest, **kw)
        if not isinstance(level, int):
            levels.append(np.asarray(level).copy())
        low = xp.reshape(xp.asarray(level < _step.top_level(cfg)), (-1, 1, 1))
        mask = xp.reshape(xp.arange(out.shape[0]) == 0, (-1, 1, 1))
        return xp.where(mask & low, out * (1.0 + 1e-4), out)

    monkeypatch.setattr(_kkt, "solve_at", degraded)
    out = _solve(data, "numpy")
    assert np.all(out["status"] == int(optnet.Status.SOLVED)), out["status"]
    np.testing.assert_allclose(out["x"][0], clean["x"][0], rtol=1e-7, atol=1e-8)
    top = max(int(v.max()) for v in levels)
    assert top == 3
    assert any(int(v[0]) == top and int(v[1:].max()) < top for v in levels)
    for f in ("x", "z", "status", "iterations"):
        np.testing.assert_array_equal(out[f][1:], clean[f][1:])


def test_mixed_precision_lane_falls_back_to_float64(monkeypatch):
    """Mixed precision (NumPy, n >= Settings.mixed_min_n): a lane whose float32-factor
    solves fail is solved on float64 factors, with refinement, and matches the float64
    path."""
    n = 64
    data = paper_problem(np.random.default_rng(0), 2, n=n, p=n)
    with monkeypatch.context() as m:
        patch_settings(m, mixed_min_n=10**9)
        wide = _solve(data, "numpy")
    levels = _spoil_reduced_solves(monkeypatch)
    out = _solve(data, "numpy")
    assert 0 in levels                      # the float32 path was taken and spoiled
    assert np.all(out["status"] == int(optnet.Status.SOLVED))
    np.testing.assert_allclose(out["x"], wide["x"], rtol=1e-7, atol=1e-8)


def test_no_fallback_where_the_solves_start_at_the_top_level(monkeypatch):
    """With refinement from the start (``Settings.refine`` > 0: many rows) there is no
    reduced path, and a lane that fails is reported as it is."""
    rng = np.random.default_rng(1)
    data = paper_problem(rng, 2, n=4, p=40)          # m + p > 4n: refined from the start
    calls = _spoil_reduced_solves(monkeypatch, every_level=True)
    out = _solve(data, "numpy")
    assert calls
    assert int(out["status"][0]) == int(optnet.Status.NUMERICAL_ERROR)
    assert int(out["status"][1]) == int(optnet.Status.SOLVED)
