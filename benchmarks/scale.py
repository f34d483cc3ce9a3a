"""Memory and time at scale: many tiny problems, and one large one.

    python benchmarks/scale.py [--batches 1000 10000 100000] [--n 5] [--big 1000]

Each case runs in a fresh Python process (so peak resident memory is its own) on the NumPy
backend in float64, with the paper's random QP family (footnote 4 of Amos & Kolter 2017,
p = n, no equalities). Prints a markdown table: case, wall time, peak RSS, statuses, and the
memory per problem above the interpreter's baseline, which should stay flat as the batch grows
(memory linear in the batch).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, resource, sys, time
import numpy as np
sys.path[:0] = [{root!r}, {tests!r}]
import optnet
from strategies import paper_problem

batch, n = {batch}, {n}
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
d = paper_problem(np.random.default_rng(0), batch, n=n, p=n)
if batch == 1:
    d = {{k: None if v is None else v[0] for k, v in d.items()}}
data = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
sol = optnet.solve(d["Q"], d["q"], d["G"], d["h"])
wall = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
status = np.bincount(np.asarray(sol.status).reshape(-1), minlength=5).tolist()
it = np.asarray(sol.iterations).reshape(-1)
print(json.dumps(dict(batch=batch, n=n, wall=wall, base_kb=base, data_kb=data, peak_kb=peak,
                      status=status, it_median=float(np.median(it)), it_max=int(it.max()))))
"""


def run_case(batch: int, n: int) -> dict:
    code = CHILD.format(root=str(ROOT), tests=str(ROOT / "tests"), batch=batch, n=n)
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batches", type=int, nargs="+", default=[1000, 10000, 100000])
    ap.add_argument("--n", type=int, default=5)
    ap.add_argument("--big", type=int, nargs="*", default=[300, 1000])
    a = ap.parse_args(argv)
    cases = [(b, a.n) for b in a.batches] + [(1, n) for n in a.big]
    print("| batch | n = p | time (s) | peak RSS (MB) | above import (MB) | per problem (kB) "
          "| SOLVED / total | iterations median / max |")
    print("|---|---|---|---|---|---|---|---|")
    for batch, n in cases:
        r = run_case(batch, n)
        above = (r["peak_kb"] - r["base_kb"]) / 1024
        per = (r["peak_kb"] - r["base_kb"]) / batch
        print(f"| {batch} | {n} | {r['wall']:.2f} | {r['peak_kb'] / 1024:.0f} | {above:.0f} "
              f"| {per:.2f} | {r['status'][0]} / {batch} | {r['it_median']:.0f} / {r['it_max']} |")


if __name__ == "__main__":
    main()
