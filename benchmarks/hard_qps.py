"""optnet on classical hard dense QP classes, against the reference solver.

    python benchmarks/hard_qps.py [--seeds 10] [--size default|slow] [--classes NAME ...]
                                  [--backends numpy torch torch-compiled jax]
                                  [--dtypes float64 float32]

(``torch-compiled``: the torch backend with its iteration compiled by ``torch.compile``;
each class's shape compiles once, about a minute on a CPU.)

Rounding-dependent behaviour shows under another BLAS kernel choice on the same machine,
e.g. ``MKL_ENABLE_INSTRUCTIONS=AVX2`` (torch's MKL) or ``OPENBLAS_CORETYPE=Haswell``
(NumPy's OpenBLAS) set before the command.

For each class of ``tests/hard_qps.py`` (rank-deficient and slightly indefinite
Q, degenerate optima, redundant equalities, bad scaling, many rows, many
variables, duplicated/parallel rows) solves seeds 0 .. N-1, one problem per
call, with ``optnet.solve`` (NumPy backend, float64, default settings) and with
the reference (Clarabel at 1e-10 plus an active-set polish; for the
indefinite class the constructed optimum, checked with the reference on the PSD
part of Q). Prints a markdown table: sizes n/p/m, pass rate (status SOLVED,
relative objective error <= 1e-6 and relative constraint violation <= 1e-6, the
measures of ``tests/test_hard_qps.py``; with ``--dtypes float32`` the data rounded to
float32, judged as the tests do, against the reference on the rounded data to 1e-5 (or
twice the objective error of the reference's own x rounded to float32, where that is
larger); seeds whose rounded data the reference does not solve against the unrounded
problem's optimum, to the same tolerance), the statuses other than SOLVED, median / max
iterations, the largest objective error and violation (over the seeds where x is
finite), and the time optnet took.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from hard_qps import (  # noqa: E402
    CLASSES,
    hard_problem,
    objective_error,
    problem_sizes,
    reference_optimum,
    violation,
)
from reference import SOLVED, reference_solve  # noqa: E402

import optnet  # noqa: E402

TOL_OBJ = 1e-6
TOL_VIOL = 1e-6
TOL_GENERATOR = 1e-7   # as in tests/test_hard_qps.py
# float32 data: judged against the reference on the same rounded data (the optimum of the
# float64 problem is not the rounded problem's), to the 1e-5 of tests/test_hard_qps.py
# (float32's default tol is 1e-6).
TOL32 = 1e-5


def _solve(data: dict, backend: str):
    """``optnet.solve`` on ``backend``; ``torch-compiled``: the torch backend with its
    iteration compiled by ``torch.compile`` (``optnet.torch.solve(compiled="torch")``)."""
    if backend != "torch-compiled":
        return optnet.solve(**data, backend=backend)
    import torch

    from optnet.adapters.torch_autograd import QPFunction

    args = [None if data.get(k) is None else torch.as_tensor(data[k]) for k in "QqGhAb"]
    return QPFunction.apply((None, None, None, True), *args)[-1]


def run_class(name: str, seeds: int, size: str, backend: str = "numpy",
              dtype: str = "float64") -> dict:
    """Solve seeds ``0 .. seeds-1`` of one class; return the row of the table."""
    its, oerrs, viols, statuses, passed, secs = [], [], [], Counter(), 0, 0.0
    generator_bugs, rounded_unsolved = [], []
    for seed in range(seeds):
        problem = hard_problem(name, seed, size)
        ref = reference_optimum(name, problem)
        if ref.status != SOLVED or not ref.generator_error <= TOL_GENERATOR:
            generator_bugs.append(seed)
            continue
        data = {k: None if v is None else v.astype(dtype) for k, v in problem.items()}
        judged, tol = problem, TOL_OBJ
        if dtype == "float32":
            judged = {k: None if v is None else v.astype(np.float64) for k, v in data.items()}
            rounded = reference_solve(**judged)
            if rounded.status == SOLVED:
                ref = rounded
            else:
                # (An indefinite rounded Q, say: judged against the unrounded problem's
                # optimum instead, to the same tolerance.)
                rounded_unsolved.append(seed)
                judged = problem
            # A float32 x cannot do better than the reference's own x rounded to float32
            # (badly_scaled seed 25: 1.02e-5, where optnet's x is within 1.2 ulp of it).
            xr = ref.x.astype(np.float32).astype(np.float64)
            tol = max(TOL32, 2.0 * objective_error(judged, xr, ref.x, ref.objective))
        t = time.perf_counter()
        sol = _solve(data, backend)
        secs += time.perf_counter() - t
        status = optnet.Status(int(sol.status))
        x = np.asarray(sol.x, dtype=np.float64)
        oerr = objective_error(judged, x, ref.x, ref.objective)
        viol = violation(judged, x)
        its.append(int(sol.iterations))
        oerrs.append(oerr)
        viols.append(viol)
        if status != optnet.Status.SOLVED:
            statuses[status.name] += 1
        passed += bool(status == optnet.Status.SOLVED and oerr <= tol
                       and viol <= (TOL_VIOL if dtype == "float64" else TOL32))
    n, p, m = problem_sizes(hard_problem(name, 0, size))
    return {
        "name": name, "npm": f"{n}/{p}/{m}", "passed": passed, "seeds": seeds,
        "statuses": statuses, "its": its, "oerr": oerrs, "viol": viols, "secs": secs,
        "generator_bugs": generator_bugs, "rounded_unsolved": rounded_unsolved,
    }


def _max(vals) -> str:
    vals = np.asarray(vals, dtype=np.float64)
    vals = vals[np.isfinite(vals)]
    return f"{vals.max():.1e}" if vals.size else "-"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=10, help="problems per class (seeds 0..N-1)")
    ap.add_argument("--size", choices=("default", "slow"), default="default",
                    help="the sizes of tests/hard_qps.py SIZES to use")
    ap.add_argument("--classes", nargs="+", choices=list(CLASSES), default=list(CLASSES))
    ap.add_argument("--backends", nargs="+", default=["numpy"],
                    choices=["numpy", "torch", "torch-compiled", "jax", "array_api_strict"])
    ap.add_argument("--dtypes", nargs="+", default=["float64"], choices=["float64", "float32"])
    a = ap.parse_args(argv)
    if "torch" in a.backends or "torch-compiled" in a.backends:
        # The torch backend's own iteration (its rounding, the path of CUDA tensors): small
        # CPU problems would otherwise be solved through NumPy views.
        from optnet.backends import _torch_via_numpy

        _torch_via_numpy.NUMPY_MAX_ENTRIES = 0
    if "jax" in a.backends:
        import jax
        jax.config.update("jax_enable_x64", True)
    print(f"optnet (default settings), {a.seeds} seeds per class, {a.size} sizes; float32 "
          "problems are passed in float32 and judged against the reference on the rounded "
          "data, to 1e-5\n")
    print("| class | backend | dtype | n/p/m | pass | not SOLVED | iterations median / max "
          "| max obj. rel. error | max violation | optnet time (s) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    bugs, unposed = [], []
    for name, backend, dtype in ((c, be, dt) for c in a.classes for be in a.backends
                                 for dt in a.dtypes):
        r = run_class(name, a.seeds, a.size, backend, dtype)
        solved = r["seeds"] - len(r["generator_bugs"])
        its = np.asarray(r["its"]) if r["its"] else np.zeros(1, dtype=int)
        others = ", ".join(f"{k} x{v}" for k, v in sorted(r["statuses"].items())) or "-"
        print(f"| {name} | {backend} | {dtype} | {r['npm']} | {r['passed']}/{solved} | {others} "
              f"| {np.median(its):.0f} / {its.max()} | {_max(r['oerr'])} | {_max(r['viol'])} "
              f"| {r['secs']:.2f} |", flush=True)
        if r["generator_bugs"]:
            bugs.append(f"{name}: seeds {r['generator_bugs']}")
        if r["rounded_unsolved"]:
            unposed.append(f"{name}: seeds {r['rounded_unsolved']}")
    if bugs:
        print("\nReference failed or disagreed with the construction (generator bug?): "
              + "; ".join(bugs))
    if unposed:
        print("\nThe reference does not solve the data rounded to float32 (judged against "
              "the unrounded problem's optimum): " + "; ".join(unposed))


if __name__ == "__main__":
    main()
