"""The size of the JAX program of one differentiated solve, by the module that wrote it.

Lowers ``jax.jit(jax.grad(sum of optnet.jax.solve))`` on the OptNet paper's random QP
(``problems.py``, float64) and counts what XLA has to compile: StableHLO operations in
the lowered program, and in the compiled one its fused kernels, library calls
(``custom-call``: Cholesky, triangular solves) and while loops. XLA's CPU compile time
grows with the fused kernels, so they are what to count; like the counts of
``counts.py`` they do not depend on the machine's load (the compile time printed beside
them does). ``--by-module`` attributes the StableHLO operations to the optnet source
lines they were traced from; qpax's program of the same problem (tol 1e-8, 50
iterations) is counted too where qpax is installed (``setup_env.sh``).

Run: ``python benchmarks/jax_program.py [--n 10] [--batch 1] [--forward] [--by-module 20]``.
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import re
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

jax.config.update("jax_enable_x64", True)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from problems import make_problem  # noqa: E402
from runners import qpax_batched  # noqa: E402

import optnet  # noqa: E402

OP = re.compile(r"\b(stablehlo|chlo)\.[a-z_]+")
LOC_DEF = re.compile(r"^#(loc\d+) = loc\((.*)\)$", re.M)
LOC_USE = re.compile(r"loc\(#(loc\d+)\)\s*$")
SOURCE = re.compile(r'"([^"]*/optnet/[^"]*)":(\d+)')


def sizes(fn, *args) -> dict:
    """Counts of ``jax.jit(fn)`` at ``args``: StableHLO operations, fused kernels, custom
    calls, while loops, the compile time (s), and the lowered text with locations."""
    lowered = jax.jit(fn).lower(*args)
    text = lowered.as_text(debug_info=True)
    t0 = time.perf_counter()
    hlo = lowered.compile().as_text()
    return {"ops": len(OP.findall(text)),
            "fusions": len(re.findall(r"^\s*%?\S+ = .*\bfusion\(", hlo, re.M)),
            "custom calls": len(re.findall(r"custom-call\(", hlo)),
            "while loops": len(re.findall(r"\bwhile\(", hlo)),
            "compile (s)": round(time.perf_counter() - t0, 2), "text": text}


def by_source(text: str) -> collections.Counter:
    """StableHLO operations per optnet ``module:line`` ('?' where no location says)."""
    defs = dict(LOC_DEF.findall(text))

    def resolve(tag, depth=0):
        loc = defs.get(tag, "")
        m = SOURCE.search(loc)
        if m:
            return f"{m.group(1).split('/optnet/')[-1]}:{m.group(2)}"
        for inner in re.findall(r"#(loc\d+)", loc) if depth < 10 else ():
            found = resolve(inner, depth + 1)
            if found != "?":
                return found
        return "?"

    out = collections.Counter()
    for line in text.splitlines():
        if OP.search(line):
            m = LOC_USE.search(line)
            out[resolve(m.group(1)) if m else "?"] += 1
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10, help="variables = inequality rows")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--forward", action="store_true", help="the forward program only")
    ap.add_argument("--by-module", type=int, default=0, metavar="K",
                    help="also list operations per module and the K busiest source lines")
    args = ap.parse_args(argv)

    P = make_problem(args.batch, args.n, seed=0)
    data = [jnp.asarray(P[k]) for k in "QqGh"]

    def loss(Q, q, G, h):
        return optnet.jax.solve(Q, q, G, h).sum()

    fn = loss if args.forward else jax.grad(loss, argnums=(0, 1, 2, 3))
    rows = [("optnet", sizes(fn, *data))]
    if importlib.util.find_spec("qpax") is not None:
        solve = qpax_batched(args.batch, args.n, data[0].dtype, solver_tol=1e-8, max_iter=50)

        def qloss(Q, q, G, h):
            return solve(Q, q, G, h).sum()

        qfn = qloss if args.forward else jax.grad(qloss, argnums=(0, 1, 2, 3))
        rows.append(("qpax (tol 1e-8)", sizes(qfn, *data)))

    what = "forward" if args.forward else "jit(grad)"
    print(f"{what}, n = p = {args.n}, batch {args.batch}, float64, jax {jax.__version__}")
    keys = ["ops", "fusions", "custom calls", "while loops", "compile (s)"]
    print("| | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for name, s in rows:
        print(f"| {name} | " + " | ".join(str(s[k]) for k in keys) + " |")
    if args.by_module:
        lines = by_source(rows[0][1]["text"])
        modules = collections.Counter()
        for where, c in lines.items():
            modules[where.split(":")[0]] += c
        print("\noperations per module:", dict(modules.most_common()))
        print("busiest source lines:")
        for where, c in lines.most_common(args.by_module):
            print(f"  {c:5d}  {where}")


if __name__ == "__main__":
    main()
