"""Lanes that stall fast near the tolerance and that the polish cannot rescue go on iterating.

Near the tolerance the progress policy (``_progress``) stops a lane after
``Settings.stall_fast`` steps without halving its merit and hands it to the polish. Where the
active rows are nearly dependent (near_lp: dependent equalities, a degenerate optimum) the
polish certifies nothing: the lane would end NUMERICAL_ERROR although the interior point alone
reaches the tolerance a few steps later. ``_pipeline._retry`` resumes such lanes, once, with
the ordinary patience. The tests make the fast stall fire at once (``stall_fast = 1``, within
``stall_near`` of the tolerance), so that they do not depend on one machine's rounding:
without the resume, near_lp seed 20 ends NUMERICAL_ERROR on the eager drivers and on JAX,
and with ``stall_near = 1e4`` seeds 2, 9, 15 and 23 on every driver.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import patch_settings, to_numpy
from hard_qps import hard_problem, objective_error, reference_optimum, violation

import optnet
from optnet import _pdipm

ARGS = ("Q", "q", "G", "h", "A", "b")
SOLVED = int(optnet.Status.SOLVED)


def _solve(problem, backend):
    sol = optnet.solve(**problem, backend=backend)
    return {f: to_numpy(getattr(sol, f)) for f in ("x", "status", "iterations")}


def _meets(problem, x, ref):
    return (objective_error(problem, x, ref.x, ref.objective) <= 1e-6
            and violation(problem, x) <= 1e-6)


# (seed, settings): the fast stall after one step; within 1e4 tol too. Without the resume
# the first ends NUMERICAL_ERROR on the eager drivers, the second on every driver.
CASES = {"seed20": (20, {"stall_fast": 1}),
         "seed2-wide": (2, {"stall_fast": 1, "stall_near": 1e4})}


@pytest.mark.parametrize("case", list(CASES))
def test_a_fast_stall_the_polish_cannot_rescue_goes_on(monkeypatch, backend, case):
    """near_lp under an early fast stall: solved to the hard-class measures (objective and
    violation to 1e-6 against the reference)."""
    seed, changes = CASES[case]
    problem = hard_problem("near_lp", seed)
    ref = reference_optimum("near_lp", problem)
    patch_settings(monkeypatch, **changes)
    out = _solve(problem, backend)
    assert int(out["status"]) == SOLVED, out
    assert _meets(problem, out["x"], ref)


@pytest.mark.parametrize("backend", ["numpy", "array_api_strict-lockstep"], indirect=True)
def test_the_resume_leaves_the_other_lanes_alone(monkeypatch, backend):
    """A batch of near_lp seeds 2 (resumed) and 0 under the wide fast stall: both solved;
    on the lockstep driver (a precision level per lane, so that lanes are independent)
    seed 0's iterations and ``x`` are those of its solve alone. (The eager driver's level
    is the batch's: seed 0 climbs with seed 2 there.)"""
    patch_settings(monkeypatch, **CASES["seed2-wide"][1])
    pair = [hard_problem("near_lp", s) for s in (2, 0)]
    batch = {k: np.stack([p[k] for p in pair]) for k in ARGS}
    out = _solve(batch, backend)
    alone = _solve(pair[1], backend)
    assert np.all(out["status"] == SOLVED), out["status"]
    for p, x in zip(pair, out["x"], strict=True):
        assert _meets(p, x, reference_optimum("near_lp", p))
    assert int(alone["status"]) == SOLVED
    if backend.startswith("array_api_strict"):
        assert out["iterations"][1] == alone["iterations"]
        np.testing.assert_allclose(out["x"][1], alone["x"], rtol=1e-10, atol=1e-10)


def test_a_lane_goes_on_patiently_once(monkeypatch):
    """With no patience either (``patience = stall_fast = 1``) the lane stalls again: the
    solve ends (the lane resumed at most twice: after its early polish, then patiently),
    and a lane that is not solved is not reported SOLVED."""
    problem = hard_problem("near_lp", 20)
    patch_settings(monkeypatch, stall_fast=1, patience=1)
    calls = []
    inner = _pdipm.resume

    def spy(xp, ops, prob, cfg, st, level, lanes, patient=None):
        calls.append(bool(np.any(to_numpy(lanes))))
        return inner(xp, ops, prob, cfg, st, level, lanes, patient)

    monkeypatch.setattr(_pdipm, "resume", spy)
    sol = optnet.solve(**problem)
    assert len(calls) <= 2, calls
    status = int(sol.status)
    x = np.asarray(sol.x)
    if status == SOLVED:
        assert _meets(problem, x, reference_optimum("near_lp", problem))
    else:
        assert status == int(optnet.Status.NUMERICAL_ERROR)
        assert np.all(np.isnan(x))
