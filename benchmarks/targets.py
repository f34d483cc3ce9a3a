"""The iteration redesign's targets, measured in one run and printed as ratios.

Every target of the redesign (operations and host reads per solve, JAX's first call, small
problems, the paper's batch, the Sudoku layer) is measured here, in one process except the
first calls (each in a fresh one), on the OptNet paper's random QP (``problems.py``,
float64, forward + backward of ``sum(x)``), and printed as one table: the measured values,
the ratio the target is about and whether it is met. Counts do not depend on the machine;
the timings are ratios of solvers measured in the same run, since absolute times on a
shared machine are not comparable across runs.

Sections (``--skip`` leaves any of them out):

``counts``
    ``benchmarks/counts.py``: computing kernels per interior-point iteration, all-in
    (forward with polish, and backward), and host reads per solve, torch, batch 1,
    n = p = 10; eager and with the iteration compiled by ``torch.compile`` (its first
    compile takes about a minute on a CPU; torch caches it on disk). Targets: <= 150 and
    <= 12.
``first``
    The first call of ``jax.jit(jax.grad(loss))`` at n = p = 10, batch 1, for optnet and
    for qpax (tol 1e-8, 50 iterations), each in a fresh process, ``--pairs`` alternating
    pairs; the ratio of the medians. Target: <= 3.
``small``
    n = p = 10, batch 1 and 32, best of ``--repeats``: the fastest optnet path (torch,
    torch ``compiled="jax"``, JAX) against the fastest of proxsuite and qpax (tol 1e-8),
    target <= 1; each torch path against the fastest at batch 1 (target <= 3) and against
    proxsuite at batch 32 (target <= 1).
``large``
    n = p = 100, batch 128, best of ``--repeats-large``: JAX against torch (target <= 1.5)
    and the fastest optnet path against the fastest of qpth, qpax (tol 1e-8) and
    proxsuite (target: at least 2x faster).
``sudoku``
    ``benchmarks/sudoku_step.py``: median seconds per training step of the paper's Sudoku
    layer over ``--steps``; each optnet path against the faster of qpth and proxsuite
    (target: at least 2x faster).

Accuracy, iterations and the hard classes, the remaining targets, have their own
commands (``benchmarks/accuracy.py``, ``benchmarks/hard_qps.py``).

Run (the competitors live in their own environment, ``benchmarks/setup_env.sh``)::

    benchenv/bin/python benchmarks/targets.py [--skip sudoku] [--pairs 3] [--repeats 50]
        [--repeats-large 5] [--steps 5] [--out FILE.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

SECTIONS = ("counts", "first", "small", "large", "sudoku")
SMALL_OPTNET = ("optnet-torch", "optnet-torch-compiled", "optnet-jax")
SMALL_COMPETITORS = ("proxsuite", "qpax-tight")
LARGE_OPTNET = ("optnet-torch", "optnet-jax")
LARGE_COMPETITORS = ("qpth", "qpax-tight", "proxsuite")
TORCH_PATHS = ("optnet-torch", "optnet-torch-compiled")
SUDOKU_OPTNET = ("optnet-torch", "optnet-torch-step", "optnet-torch-jax")
SUDOKU_COMPETITORS = ("qpth", "proxsuite")


class Row(NamedTuple):
    """One line of the table: the target, what was measured, the ratio the target bounds
    (None where a solver was missing) and whether it is met (None: not measured)."""

    target: str
    measured: str
    ratio: float | None
    met: bool | None


# --------------------------------------------------------------------------- the verdicts


def _fmt_s(t: float | None) -> str:
    if t is None:
        return "-"
    return f"{t * 1e3:.3f} ms" if t < 1.0 else f"{t:.3f} s"


def _upper(target: str, measured: str, ratio: float | None, bound: float) -> Row:
    return Row(target, measured, ratio, None if ratio is None else ratio <= bound)


def _lower(target: str, measured: str, ratio: float | None, bound: float) -> Row:
    return Row(target, measured, ratio, None if ratio is None else ratio >= bound)


def _fastest(times: dict, keys) -> tuple[str | None, float | None]:
    have = [(times[k], k) for k in keys if times.get(k) is not None]
    if not have:
        return None, None
    t, k = min(have)
    return k, t


def verdicts(m: dict) -> list[Row]:
    """The table's rows from the measurements ``m`` (any section may be missing):

    ``counts``: ``{"eager": totals, "compiled": totals}`` (``counts.totals``);
    ``first``: ``{"optnet": [s, ...], "qpax": [s, ...]}``;
    ``small``: ``{1: {solver: s}, 32: {solver: s}}``; ``large``: ``{solver: s}``;
    ``sudoku``: ``{solver: median s}``. A solver's time is None where it did not run.
    """
    rows: list[Row] = []
    c = m.get("counts")
    if c:
        for path, label in (("eager", "eager"), ("compiled", 'compiled="torch"')):
            t = c.get(path)
            if t is None:
                continue
            rows.append(_upper(
                f"<= 150 kernels / iteration, all-in (torch {label}, B = 1, n = 10)",
                f"{t['kernels']} kernels / {t['iterations']} iterations",
                t["kernels_per_iteration"], 150.0))
        t = c.get("eager")
        if t is not None:
            rows.append(_upper("<= 12 host reads per solve (torch eager, B = 1)",
                               f"{t['host']} reads", float(t["host"]), 12.0))
    f = m.get("first")
    if f:
        o, q = f.get("optnet") or [], f.get("qpax") or []
        ratio = statistics.median(o) / statistics.median(q) if o and q else None
        rows.append(_upper(
            "JAX first call of jit(grad), n = 10: <= 3x qpax's",
            f"optnet {' / '.join(f'{t:.2f}' for t in o)} s, qpax "
            f"{' / '.join(f'{t:.2f}' for t in q)} s (median ratio)", ratio, 3.0))
    for B, times in sorted((m.get("small") or {}).items()):
        ko, to = _fastest(times, SMALL_OPTNET)
        kc, tc = _fastest(times, SMALL_COMPETITORS)
        ratio = to / tc if to is not None and tc is not None else None
        rows.append(_upper(
            f"n = 10, B = {B}: fastest optnet path not slower than the fastest competitor",
            f"{ko} {_fmt_s(to)} vs {kc} {_fmt_s(tc)}",
            ratio, 1.0))
        for k in TORCH_PATHS:
            t = times.get(k)
            if B == 1:
                ref_key, ref, bound, what = kc, tc, 3.0, "within 3x of the fastest"
            else:
                ref_key, ref, bound = "proxsuite", times.get("proxsuite"), 1.0
                what = "not slower than proxsuite"
            ratio = t / ref if t is not None and ref is not None else None
            rows.append(_upper(
                f"n = 10, B = {B}: torch path {k} {what}",
                f"{_fmt_s(t)} vs {ref_key} {_fmt_s(ref)}",
                ratio, bound))
    big = m.get("large")
    if big:
        tj, tt = big.get("optnet-jax"), big.get("optnet-torch")
        rows.append(_upper(
            "n = p = 100, B = 128: JAX within 1.5x of torch",
            f"JAX {_fmt_s(tj)} vs torch {_fmt_s(tt)}",
            tj / tt if tj and tt else None, 1.5))
        ko, to = _fastest(big, LARGE_OPTNET)
        kc, tc = _fastest(big, LARGE_COMPETITORS)
        rows.append(_lower(
            "n = p = 100, B = 128: >= 2x faster than the fastest competitor",
            f"{ko} {_fmt_s(to)} vs {kc} {_fmt_s(tc)} "
            "(ratio: competitor / optnet)",
            tc / to if to and tc else None, 2.0))
    sud = m.get("sudoku")
    if sud:
        kc, tc = _fastest(sud, SUDOKU_COMPETITORS)
        for k in SUDOKU_OPTNET:
            t = sud.get(k)
            rows.append(_lower(
                f"Sudoku training step: {k} >= 2x faster than qpth and proxsuite",
                f"{_fmt_s(t)} vs {kc} {_fmt_s(tc)} "
                "(ratio: competitor / optnet)",
                tc / t if t and tc else None, 2.0))
    return rows


def table(rows: list[Row]) -> str:
    """The rows as a Markdown table."""
    out = ["| target | measured | ratio | met? |", "|---|---|---|---|"]
    for r in rows:
        ratio = "-" if r.ratio is None else f"{r.ratio:.2f}"
        met = "not measured" if r.met is None else ("yes" if r.met else "no")
        out.append(f"| {r.target} | {r.measured} | {ratio} | {met} |")
    return "\n".join(out)


# --------------------------------------------------------------------------- measurements


def _counts(log) -> dict:
    import counts

    out = {}
    for path, compiled in (("eager", False), ("compiled", True)):
        log(f"counts: {path} ...")
        out[path] = counts.totals(10, 1, compiled=compiled)
        log(f"counts: {path}: {out[path]}")
    return out


FIRST_CALL = """
import sys, time
sys.path.insert(0, {root!r}); sys.path.insert(0, {here!r})
import jax, jax.numpy as jnp
jax.config.update("jax_enable_x64", True)
from problems import make_problem
P = make_problem(1, 10, seed=0)
data = [jnp.asarray(P[k]) for k in "QqGh"]
if {which!r} == "optnet":
    import optnet.jax
    def loss(Q, q, G, h):
        return optnet.jax.solve(Q, q, G, h).sum()
else:
    from runners import qpax_batched
    solve = qpax_batched(1, 10, data[0].dtype, solver_tol=1e-8, max_iter=50)
    def loss(Q, q, G, h):
        return solve(Q, q, G, h).sum()
f = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3)))
t = time.perf_counter()
jax.block_until_ready(f(*data))
print(time.perf_counter() - t)
"""


def first_call(which: str, timeout: float = 300.0) -> float:
    """Seconds of the first call of ``jit(grad)`` of ``which`` ("optnet" or "qpax") in a
    fresh process."""
    code = FIRST_CALL.format(root=str(HERE.parent), here=str(HERE), which=which)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=timeout, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"first call of {which} failed: {res.stderr.strip()[-500:]}")
    return float(res.stdout.strip().splitlines()[-1])


def _first(pairs: int, log) -> dict:
    out: dict = {"optnet": [], "qpax": []}
    for i in range(pairs):
        for which in ("optnet", "qpax"):
            try:
                t = first_call(which)
            except Exception as exc:  # qpax not installed, a hang, ...
                log(f"first call: {which}: {exc}")
                continue
            out[which].append(t)
            log(f"first call, pair {i + 1}: {which} {t:.3f} s")
    return out


def _time_solvers(keys, B: int, n: int, repeats: int, log) -> dict:
    """Best forward + backward seconds of each solver of ``keys`` (None: did not run)."""
    import runners
    from problems import make_problem

    prob = make_problem(B, n, seed=0)
    out = {}
    for key in keys:
        spec = runners.BY_KEY[key]
        ok, why = runners.availability(spec)
        if not ok:
            log(f"B={B} n={n} {key}: not available ({why})")
            out[key] = None
            continue
        try:
            prep = spec.setup(prob, "float64")
            res = runners.time_call(prep.forward_backward, repeats)
        except Exception as exc:
            log(f"B={B} n={n} {key}: {type(exc).__name__}: {exc}")
            out[key] = None
            continue
        out[key] = res["best"]
        log(f"B={B} n={n} {key}: best {_fmt_s(res['best'])} of {len(res['times'])} "
            f"(first call {_fmt_s(res['first'])})")
    return out


def _sudoku(steps: int, log) -> dict:
    import sudoku_step
    import torch

    torch.set_default_dtype(sudoku_step.DTYPE)
    feats, labels = sudoku_step.make_batches(1 + steps, 0)
    out = {}
    for key in (*SUDOKU_OPTNET, *SUDOKU_COMPETITORS):
        try:
            solve = sudoku_step.SOLVERS[key][1]()
            r = sudoku_step.train(solve, feats, labels, 1, steps, 0, key)
        except Exception as exc:
            log(f"sudoku {key}: {type(exc).__name__}: {exc}")
            out[key] = None
            continue
        out[key] = r["median"]
    return out


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    load = ""
    if hasattr(os, "getloadavg"):
        load = f", 1-minute load average {os.getloadavg()[0]:.2f}"
    return f"{os.cpu_count()} logical CPUs ({cpu}){load}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip", nargs="*", default=[], choices=SECTIONS)
    ap.add_argument("--pairs", type=int, default=3, help="first-call pairs (fresh processes)")
    ap.add_argument("--repeats", type=int, default=50, help="timed calls at n = 10")
    ap.add_argument("--repeats-large", type=int, default=5, help="timed calls at n = 100")
    ap.add_argument("--steps", type=int, default=5, help="timed Sudoku training steps")
    ap.add_argument("--out", type=Path, default=None, help="also write the report here")
    args = ap.parse_args(argv)
    command = shlex.join([sys.executable, *(sys.argv if argv is None else [__file__, *argv])])

    def log(msg):
        print(msg, flush=True)

    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    machine = _machine()
    m: dict = {}
    want = [s for s in SECTIONS if s not in args.skip]
    if "counts" in want:
        m["counts"] = _counts(log)
    if "first" in want:
        m["first"] = _first(args.pairs, log)
    if "small" in want:
        m["small"] = {B: _time_solvers((*SMALL_OPTNET, *SMALL_COMPETITORS), B, 10,
                                       args.repeats, log) for B in (1, 32)}
    if "large" in want:
        m["large"] = _time_solvers((*LARGE_OPTNET, *LARGE_COMPETITORS), 128, 100,
                                   args.repeats_large, log)
    if "sudoku" in want:
        m["sudoku"] = _sudoku(args.steps, log)
    report = "\n".join([
        f"# The redesign's targets ({started})", "",
        f"Machine: {machine} at the start; float64; forward + backward of sum(x).", "",
        f"```\n{command}\n```", "", table(verdicts(m)), ""])
    print("\n" + report)
    if args.out is not None:
        args.out.write_text(report)


if __name__ == "__main__":
    main()
