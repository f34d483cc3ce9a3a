"""``benchmarks/gpu.py`` runs where a GPU is missing too (``--device cpu``: the same code on
the CPU), so that the script a GPU machine is given has been run: its table has a row per
torch solver with every lane solved and the NumPy answer, and its counts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
ROOT = Path(__file__).resolve().parent.parent


def test_gpu_benchmark_runs_on_the_cpu(tmp_path):
    cmd = [sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--device", "cpu",
           "--batches", "3", "--n", "6", "--repeats", "1", "--out", str(tmp_path)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-2000:]
    info = json.loads((tmp_path / "results.json").read_text())
    rows = {r["solver"]: r for r in info["rows"]}
    assert rows["optnet-torch"]["solved"] == "3/3"
    assert rows["optnet-torch"]["max_rel_diff_x"] < 1e-8
    assert rows["optnet-torch"]["best_s"] > 0
    # The torch iteration's own kernels (not the NumPy route of small CPU tensors) and
    # at most the 12 host reads.
    assert info["counts"]["kernels"] > 1000
    assert 0 < info["counts"]["host reads"] <= 12
    assert "| optnet-torch | 3 |" in run.stdout
