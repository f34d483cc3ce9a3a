"""``benchmarks/targets.py``: the verdicts it prints follow from the measurements (each
bound in its direction, missing solvers reported as not measured), and its counts section
measures the solve it names."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
targets = pytest.importorskip("targets")


def _row(rows, start):
    found = [r for r in rows if r.target.startswith(start)]
    assert len(found) == 1, [r.target for r in rows]
    return found[0]


def _totals(kernels, iterations, host):
    return {"kernels": kernels, "calls": 2 * kernels, "host": host, "iterations": iterations,
            "kernels_per_iteration": kernels / iterations}


def test_counts_rows_bound_from_above():
    rows = targets.verdicts({"counts": {"eager": _totals(3300, 11, 13),
                                        "compiled": _totals(1650, 11, 11)}})
    eager = _row(rows, "<= 150 kernels / iteration, all-in (torch eager")
    assert eager.ratio == pytest.approx(300.0) and eager.met is False
    compiled = _row(rows, '<= 150 kernels / iteration, all-in (torch compiled')
    assert compiled.ratio == pytest.approx(150.0) and compiled.met is True
    host = _row(rows, "<= 12 host reads")
    assert host.ratio == 13.0 and host.met is False


def test_first_call_ratio_of_medians():
    rows = targets.verdicts({"first": {"optnet": [3.0, 9.0, 3.6], "qpax": [1.0, 1.2, 1.1]}})
    r = _row(rows, "JAX first call")
    assert r.ratio == pytest.approx(3.6 / 1.1) and r.met is False
    rows = targets.verdicts({"first": {"optnet": [2.9], "qpax": [1.0]}})
    assert _row(rows, "JAX first call").met is True
    rows = targets.verdicts({"first": {"optnet": [2.9], "qpax": []}})
    r = _row(rows, "JAX first call")
    assert r.ratio is None and r.met is None


def test_small_problems_fastest_paths_and_torch_bounds():
    small = {
        1: {"optnet-torch": 6e-3, "optnet-torch-compiled": 6e-4, "optnet-jax": 2.5e-4,
            "proxsuite": 7e-4, "qpax-tight": 2e-4},
        32: {"optnet-torch": 9e-3, "optnet-torch-compiled": 1.7e-3, "optnet-jax": 1.4e-3,
             "proxsuite": 4e-3, "qpax-tight": None},
    }
    rows = targets.verdicts({"small": small})
    best1 = _row(rows, "n = 10, B = 1: fastest optnet")
    assert best1.ratio == pytest.approx(2.5e-4 / 2e-4) and best1.met is False
    assert "optnet-jax" in best1.measured and "qpax-tight" in best1.measured
    best32 = _row(rows, "n = 10, B = 32: fastest optnet")   # qpax missing: proxsuite
    assert best32.ratio == pytest.approx(1.4e-3 / 4e-3) and best32.met is True
    eager1 = _row(rows, "n = 10, B = 1: torch path optnet-torch ")
    assert eager1.ratio == pytest.approx(6e-3 / 2e-4) and eager1.met is False
    comp1 = _row(rows, "n = 10, B = 1: torch path optnet-torch-compiled")
    assert comp1.ratio == pytest.approx(3.0) and comp1.met is True
    eager32 = _row(rows, "n = 10, B = 32: torch path optnet-torch ")
    assert eager32.ratio == pytest.approx(9e-3 / 4e-3) and eager32.met is False
    comp32 = _row(rows, "n = 10, B = 32: torch path optnet-torch-compiled")
    assert comp32.ratio == pytest.approx(1.7e-3 / 4e-3) and comp32.met is True


def test_large_batch_and_sudoku_bound_from_below():
    big = {"optnet-torch": 0.3, "optnet-jax": 0.5, "qpth": 0.6, "qpax-tight": 0.9,
           "proxsuite": 0.25}
    rows = targets.verdicts({"large": big, "sudoku": {
        "optnet-torch": 0.2, "optnet-torch-step": None, "optnet-torch-jax": 0.1,
        "qpth": 0.45, "proxsuite": 0.4}})
    jt = _row(rows, "n = p = 100, B = 128: JAX within")
    assert jt.ratio == pytest.approx(0.5 / 0.3) and jt.met is False
    comp = _row(rows, "n = p = 100, B = 128: >= 2x")
    assert comp.ratio == pytest.approx(0.25 / 0.3) and comp.met is False
    eager = _row(rows, "Sudoku training step: optnet-torch ")
    assert eager.ratio == pytest.approx(2.0) and eager.met is True
    jax_path = _row(rows, "Sudoku training step: optnet-torch-jax")
    assert jax_path.ratio == pytest.approx(4.0) and jax_path.met is True
    step = _row(rows, "Sudoku training step: optnet-torch-step")
    assert step.ratio is None and step.met is None
    assert "| not measured |" in targets.table(rows)


def test_counts_section_counts_the_eager_solve():
    pytest.importorskip("torch")
    counts = pytest.importorskip("counts")
    t = counts.totals(10, 1)
    assert t["iterations"] > 0
    assert t["kernels_per_iteration"] == pytest.approx(t["kernels"] / t["iterations"])
    # The solve launches kernels and reads the host at least to end its loop.
    assert t["kernels"] > 10 * t["iterations"] and 1 <= t["host"]
