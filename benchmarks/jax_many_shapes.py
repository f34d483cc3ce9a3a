"""Many problem shapes solved by the JAX backend in one process: memory stays bounded.

Eager ``optnet.solve`` on JAX arrays compiles one XLA program per signature and keeps the
most recent ``optnet._solve.JAX_PROGRAMS_KEPT`` (16); XLA's CPU compiler maps code memory
for each program, so a process that kept every program would run into the kernel's limit
on memory maps (``vm.max_map_count``, 65 530 on common Linux defaults) or LLVM's "Cannot
allocate memory" after a few dozen shapes. This script solves ``--shapes`` problems, each
of a new shape (the OptNet paper's random QP, batch 2, n growing from 6, p = n + k mod 3
inequality rows and k mod 4 equality rows), float64, and after each one prints

- the seconds the call took (mostly compilation: every shape is new),
- the process's resident memory (MB) and number of memory maps (``/proc/self/maps``),
- the largest difference of its ``x`` from the NumPy backend's (relative to max(1, |x|))
  and whether the statuses are equal.

It ends with the growth of resident memory and maps between the ``--kept``-th shape (the
cache full) and the last: bounded if the programs dropped from the cache are released.
Every answer is checked; the exit status is 1 if one disagrees (statuses, or x beyond 1e-8).

Run: ``python benchmarks/jax_many_shapes.py [--shapes 40]``. Linux only (``/proc``).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from strategies import paper_problem  # noqa: E402

import optnet  # noqa: E402
from optnet import _solve  # noqa: E402

ARGS = ("Q", "q", "G", "h", "A", "b")
TOL = 1e-8


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def _maps() -> int:
    with open("/proc/self/maps") as f:
        return sum(1 for _ in f)


def _problem(k: int) -> dict:
    n = 6 + k
    data = paper_problem(np.random.default_rng(k), 2, n=n, p=n + k % 3)
    m = k % 4
    if m:
        rng = np.random.default_rng(1000 + k)
        A = rng.standard_normal((2, m, n))
        # b from a feasible point of the inequalities: the paper's h = G x0 + slack.
        x0 = np.linalg.lstsq(data["G"][0], data["h"][0] - 1.0, rcond=None)[0]
        data["A"], data["b"] = A, np.einsum("bmn,n->bm", A, x0)
    else:
        data["A"] = data["b"] = None
    return data


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", type=int, default=40)
    a = ap.parse_args(argv)
    import jax

    jax.config.update("jax_enable_x64", True)
    kept = _solve.JAX_PROGRAMS_KEPT
    print(f"jax {jax.__version__}, {a.shapes} shapes, programs kept {kept}\n")
    print("| shape k | n / p / m | seconds | RSS (MB) | maps | x diff vs NumPy | statuses |")
    print("|---|---|---|---|---|---|---|")
    rows, bad = [], 0
    for k in range(a.shapes):
        data = _problem(k)
        args = [None if data[key] is None else jax.numpy.asarray(data[key]) for key in ARGS]
        t = time.perf_counter()
        sol = optnet.solve(*args, backend="jax")
        x = np.asarray(sol.x)
        secs = time.perf_counter() - t
        ref = optnet.solve(*(data[key] for key in ARGS), backend="numpy")
        same = bool(np.array_equal(np.asarray(sol.status), ref.status))
        diff = float(np.max(np.abs(x - ref.x)) / max(1.0, float(np.max(np.abs(ref.x)))))
        ok = same and diff <= TOL
        bad += not ok
        rss, maps = _rss_mb(), _maps()
        rows.append((rss, maps))
        n, p = data["Q"].shape[-1], data["G"].shape[-2]
        m = 0 if data["A"] is None else data["A"].shape[-2]
        print(f"| {k} | {n} / {p} / {m} | {secs:.1f} | {rss:.0f} | {maps} | {diff:.1e} | "
              f"{'equal' if same else 'DIFFER'} {np.asarray(sol.status).tolist()} |", flush=True)
    if len(rows) > kept:
        (r0, m0), (r1, m1) = rows[kept - 1], rows[-1]
        print(f"\nfrom shape {kept - 1} (cache full) to shape {len(rows) - 1}: RSS "
              f"{r0:.0f} -> {r1:.0f} MB, maps {m0} -> {m1}")
    print(f"answers that disagree with NumPy: {bad} of {len(rows)}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
