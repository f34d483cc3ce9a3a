"""Accuracy and iteration counts of optnet on the paper's random QP, against Clarabel.

    python benchmarks/accuracy.py [--batch 128] [--n 100] [--seed 1]

Solves the batch (footnote 4 of Amos & Kolter 2017: n = p, no equalities) in float64 and in
float32 with the NumPy backend, and compares x with a tight Clarabel solve of each problem
(float64 data), relative to max(1, |x_ref|). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "benchmarks")]

from problems import make_problem  # noqa: E402
from reference import reference_solve  # noqa: E402

import optnet  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args(argv)
    d = make_problem(a.batch, a.n, seed=a.seed)
    ref = np.stack([reference_solve(d["Q"][i], d["q"][i], d["G"][i], d["h"][i]).x
                    for i in range(a.batch)])
    print("| dtype | solved | iterations median / max | max rel. error of x | median | time (s) |")
    print("|---|---|---|---|---|---|")
    for dtype in (np.float64, np.float32):
        args = [d[k].astype(dtype) for k in ("Q", "q", "G", "h")]
        t = time.perf_counter()
        sol = optnet.solve(*args)
        t = time.perf_counter() - t
        err = np.max(np.abs(sol.x - ref), axis=-1) / np.maximum(1.0, np.max(np.abs(ref), axis=-1))
        it = np.asarray(sol.iterations)
        solved = int(np.sum(sol.status == int(optnet.Status.SOLVED)))
        print(f"| {np.dtype(dtype).name} | {solved}/{a.batch} | {np.median(it):.0f} / {it.max()} "
              f"| {err.max():.1e} | {np.median(err):.1e} | {t:.2f} |")


if __name__ == "__main__":
    main()
