"""Benchmark optnet against other batched, differentiable QP layers.

Reproduces the timing experiments of the OptNet paper (Amos & Kolter, ICML
2017) on the paper's random QP (footnote 4; see ``problems.py``):

* Figure 2 - time vs batch size (n = p = 100, float64), forward and
  forward+backward, every available solver;
* Figure 1 - time vs problem size n = p (batch 128), a ``torch.nn.Linear``
  layer against the QP layers;
* float32 vs float64 for optnet (batch 128, n = p = 100).

Usage::

    python benchmarks/run.py [--quick] [--sizes 10 50 100 200 500]
        [--batches 1 8 32 64 128] [--repeats 3] [--budget 60] [--out benchmarks/results]

Writes ``fig2.csv``, ``fig1.csv``, ``precision.csv``, ``summary.md``,
``fig1.png`` and ``fig2.png`` into ``--out``. Solvers that are not installed
are skipped with a note. Times are the best of ``--repeats`` calls after one
warm-up call (whose time, which includes jit compilation for the JAX-based
layers, is reported separately).
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))  # `import optnet` from the working tree

import numpy as np  # noqa: E402
import problems  # noqa: E402
import runners  # noqa: E402

MODES = ("forward", "forward+backward")
FIELDS = [
    "section", "solver", "label", "framework", "batch", "n", "p", "dtype", "mode", "status",
    "best_s", "median_s", "first_call_s", "compile_s", "setup_s", "repeats",
    "fastest_competitor", "ratio_vs_fastest_competitor", "max_rel_err_x", "loadavg_1m", "note",
]


# --------------------------------------------------------------------------- machine


def machine_info() -> dict:
    info = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or "?",
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
    }
    model = None
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.lower().startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except Exception:
        pass
    if model is None:
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
        except Exception:
            pass
    info["cpu_model"] = model or "?"
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        info["memory_gib"] = f"{pages / 2**30:.1f}"
    except Exception:
        info["memory_gib"] = "?"
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
    except Exception:
        pass
    info["env_threads"] = {k: os.environ[k] for k in
                           ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                            "XLA_FLAGS") if k in os.environ}
    return info


# --------------------------------------------------------------------------- harness


def busy_processes(min_cpu=20.0):
    """Other processes using CPU (ps's %CPU over their lifetime), to flag a noisy machine."""
    try:
        out = subprocess.run(["ps", "-eo", "pid,pcpu,etimes,args", "--sort=-pcpu"],
                             capture_output=True, text=True, timeout=10).stdout.splitlines()[1:]
    except Exception:
        return []
    me = os.getpid()
    busy = []
    for line in out:
        parts = line.split(None, 3)
        if len(parts) < 4:
            continue
        pid, pcpu, _, cmd = parts
        if int(pid) == me or float(pcpu) < min_cpu or cmd.startswith("ps "):
            continue
        busy.append(f"{pid} ({pcpu}% CPU): {cmd[:90]}")
    return busy[:8]


def _loadavg():
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return ""



class Harness:
    def __init__(self, args, specs, avail):
        self.args = args
        self.specs = specs
        self.avail = avail
        self.cache: dict = {}  # (solver, B, n, dtype, mode) -> row
        self.history: dict = {}  # (solver, dtype, mode) -> list of (B, n, best_s, setup_s)
        self.done = 0
        self.total = 0
        self.t_start = time.perf_counter()
        self._prob_cache: dict = {}
        self._ref_cache: dict = {}

    # -- problem data / reference, shared by all solvers of one configuration
    def problem(self, B, n):
        key = (B, n)
        if key not in self._prob_cache:
            self._prob_cache = {key: problems.make_problem(B, n, seed=self.args.seed)}
            self._ref_cache = {}
        return self._prob_cache[key]

    def reference(self, B, n):
        key = (B, n)
        if key not in self._ref_cache:
            self._ref_cache[key] = runners.reference_solution(self.problem(B, n))
        return self._ref_cache[key]

    def projected(self, solver, dtype, mode, B, n):
        """Projected seconds of one call from the closest smaller measurement (~ B n^3)."""
        hist = self.history.get((solver, dtype, mode), [])
        best = None
        for (b0, n0, t, setup) in hist:
            if b0 <= B and n0 <= n:
                est = t * (B / b0) * (n / n0) ** 3
                # the set-up cost (e.g. cvxpylayers' canonicalization) grows too
                est_setup = setup * (n / n0) ** 3
                cand = est + est_setup
                best = cand if best is None else min(best, cand)
        return best

    def log(self, msg):
        el = time.perf_counter() - self.t_start
        print(f"[{self.done:3d}/{self.total:3d} {el:7.1f}s] {msg}", flush=True)

    def row(self, section, spec, B, n, dtype, mode, **kw):
        r = {f: "" for f in FIELDS}
        r.update(section=section, solver=spec.key, label=spec.label, framework=spec.framework,
                 batch=B, n=n, p=n, dtype=dtype, mode=mode, loadavg_1m=_loadavg())
        r.update(kw)
        return r

    def measure(self, section, solver_keys, B, n, dtype, modes=MODES):
        """Measure every solver of ``solver_keys`` on one configuration; return rows."""
        rows = []
        for key in solver_keys:
            spec = runners.BY_KEY[key]
            rows.extend(self._measure_solver(section, spec, B, n, dtype, modes))
        return rows

    def _measure_solver(self, section, spec, B, n, dtype, modes):
        out = []
        todo = []
        for mode in modes:
            ck = (spec.key, B, n, dtype, mode)
            if ck in self.cache:
                r = dict(self.cache[ck])
                r["section"] = section
                if r["status"] == "ok":
                    r["note"] = (r["note"] + "; " if r["note"] else "") + "same measurement as " \
                        + self.cache[ck]["section"]
                out.append(r)
                self.done += 1
                self.log(f"{section:9s} {spec.label:20s} B={B:<4d} n={n:<4d} {dtype} {mode:16s}: "
                         f"{r['best_s']:.4f} s (same measurement as {self.cache[ck]['section']})")
                continue
            todo.append(mode)
        if not todo:
            return out

        ok, why = self.avail[spec.key]
        if not ok:
            for mode in todo:
                self.done += 1
                r = self.row(section, spec, B, n, dtype, mode, status="missing", note=why)
                out.append(r)
                self.log(f"{section:9s} {spec.label:20s} B={B:<4d} n={n:<4d} {dtype} {mode}: "
                         f"missing ({why})")
            return out
        if dtype not in spec.dtypes:
            for mode in todo:
                self.done += 1
                out.append(self.row(section, spec, B, n, dtype, mode, status="n/a",
                                    note=f"{spec.label} solves in float64 only"))
            return out
        if spec.serial and n > self.args.serial_max_n:
            for mode in todo:
                self.done += 1
                r = self.row(section, spec, B, n, dtype, mode, status="skipped",
                             note=f"serial solver, skipped above n = {self.args.serial_max_n}")
                out.append(r)
                self.log(f"{section:9s} {spec.label:20s} B={B:<4d} n={n:<4d} {dtype} {mode}: "
                         f"skipped (serial solver above n = {self.args.serial_max_n})")
            return out

        # projected-time budget (per call), decided per mode
        skip = {}
        for mode in todo:
            proj = self.projected(spec.key, dtype, mode, B, n)
            if proj is not None and proj > self.args.budget:
                skip[mode] = proj
        runnable = [m for m in todo if m not in skip]

        prep = None
        setup_s = 0.0
        err_setup = None
        if runnable:
            prob = self.problem(B, n)
            t0 = time.perf_counter()
            try:
                prep = spec.setup(prob, dtype)
            except Exception as exc:
                err_setup = f"setup failed: {type(exc).__name__}: {exc}"
            setup_s = time.perf_counter() - t0

        for mode in todo:
            self.done += 1
            tag = f"{section:9s} {spec.label:20s} B={B:<4d} n={n:<4d} {dtype} {mode:16s}"
            if mode in skip:
                r = self.row(section, spec, B, n, dtype, mode, status="skipped",
                             note=f"projected {skip[mode]:.0f} s per call > budget "
                                  f"{self.args.budget:.0f} s")
                self.log(f"{tag}: skipped (projected {skip[mode]:.0f} s > "
                         f"{self.args.budget:.0f} s)")
                out.append(r)
                continue
            if err_setup is not None:
                r = self.row(section, spec, B, n, dtype, mode, status="error",
                             note=err_setup[:300])
                self.log(f"{tag}: ERROR {err_setup[:200]}")
                out.append(r)
                continue
            fn = prep.forward if mode == "forward" else prep.forward_backward
            if fn is None:
                note = prep.note or "no derivatives"
                r = self.row(section, spec, B, n, dtype, mode, status="n/a", note=note)
                self.log(f"{tag}: n/a ({note})")
                out.append(r)
                continue
            try:
                res = runners.time_call(fn, self.args.repeats,
                                        budget_s=self.args.repeats_budget)
            except Exception as exc:
                msg = f"{type(exc).__name__}: {exc}".replace("\n", " ")
                r = self.row(section, spec, B, n, dtype, mode, status="error", note=msg[:300])
                self.log(f"{tag}: ERROR {msg[:200]}")
                out.append(r)
                continue
            err = ""
            if mode == "forward" and spec.key != "linear":
                ref = self.reference(B, n)
                if ref is not None:
                    x = np.asarray(res["result"], dtype=np.float64)[: ref.shape[0]]
                    scale = max(1.0, float(np.max(np.abs(ref))))
                    err = float(np.max(np.abs(x - ref))) / scale
                    if not np.isfinite(err):
                        err = float("inf")
            compile_s = max(0.0, res["first"] - res["best"]) if prep.jit else ""
            r = self.row(section, spec, B, n, dtype, mode, status="ok",
                         best_s=res["best"], median_s=res["median"], first_call_s=res["first"],
                         compile_s=compile_s, setup_s=setup_s, repeats=len(res["times"]),
                         max_rel_err_x=err, note=prep.note)
            self.cache[(spec.key, B, n, dtype, mode)] = r
            self.history.setdefault((spec.key, dtype, mode), []).append(
                (B, n, res["best"], setup_s if spec.key == "cvxpylayers" else 0.0))
            extra = f" (first call {res['first']:.3f} s" + \
                (", incl. jit compile" if prep.jit else "") + f", k={len(res['times'])})"
            errs = f" err={err:.1e}" if err != "" else ""
            self.log(f"{tag}: {res['best']:.4f} s{extra}{errs}")
            out.append(r)
        return out


def add_ratios(rows, specs_by_key):
    """ratio = time / fastest competitor on the same (B, n, dtype, mode)."""
    groups: dict = {}
    for r in rows:
        if r["status"] == "ok" and specs_by_key[r["solver"]].competitor:
            k = (r["batch"], r["n"], r["dtype"], r["mode"])
            if k not in groups or r["best_s"] < groups[k]["best_s"]:
                groups[k] = r
    for r in rows:
        k = (r["batch"], r["n"], r["dtype"], r["mode"])
        if k in groups:
            r["fastest_competitor"] = groups[k]["solver"]
            if r["status"] == "ok":
                r["ratio_vs_fastest_competitor"] = r["best_s"] / groups[k]["best_s"]


# --------------------------------------------------------------------------- output


def fmt_s(v):
    if v == "" or v is None:
        return ""
    v = float(v)
    if v >= 100:
        return f"{v:.0f}"
    if v >= 1:
        return f"{v:.2f}"
    if v >= 0.01:
        return f"{v:.3f}"
    return f"{v:.2e}"


def fmt_r(v):
    return "" if v == "" else f"{float(v):.2f}x"


def cell(r, with_ratio=True):
    if r is None:
        return ""
    if r["status"] != "ok":
        return r["status"]
    s = fmt_s(r["best_s"])
    if with_ratio and r["ratio_vs_fastest_competitor"] != "":
        s += f" ({fmt_r(r['ratio_vs_fastest_competitor'])})"
    return s


def write_csv(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})


def pivot_table(rows, col_key, col_name, solvers, mode):
    cols = sorted({r[col_key] for r in rows})
    lines = ["| solver | " + " | ".join(f"{col_name} = {c}" for c in cols) + " |",
             "|---|" + "---|" * len(cols)]
    for key in solvers:
        rs = {r[col_key]: r for r in rows if r["solver"] == key and r["mode"] == mode}
        if not rs:
            continue
        label = next(iter(rs.values()))["label"]
        lines.append(f"| {label} | " + " | ".join(cell(rs.get(c)) for c in cols) + " |")
    fastest = []
    for c in cols:
        fc = next((r["fastest_competitor"] for r in rows
                   if r[col_key] == c and r["mode"] == mode and r["fastest_competitor"]), "")
        fastest.append(runners.BY_KEY[fc].label if fc else "")
    lines.append("| *fastest competitor* | " + " | ".join(fastest) + " |")
    return "\n".join(lines)


def headline_table(rows, solvers):
    lines = ["| solver | forward (s) | fwd / fastest competitor | forward+backward (s) | "
             "f+b / fastest competitor | first call fwd (s) | max rel. err. of x | note |",
             "|---|---|---|---|---|---|---|---|"]
    for key in solvers:
        rf = next((r for r in rows if r["solver"] == key and r["mode"] == "forward"), None)
        rb = next((r for r in rows if r["solver"] == key and r["mode"] == "forward+backward"),
                  None)
        if rf is None and rb is None:
            continue
        label = (rf or rb)["label"]

        def t(r):
            if r is None:
                return ""
            return fmt_s(r["best_s"]) if r["status"] == "ok" else r["status"]

        def rr(r):
            return "" if r is None or r["status"] != "ok" else fmt_r(
                r["ratio_vs_fastest_competitor"])

        first = fmt_s(rf["first_call_s"]) if rf and rf["status"] == "ok" else ""
        if rf and rf["compile_s"] != "":
            first += " (jit)"
        err = f"{rf['max_rel_err_x']:.1e}" if rf and rf["max_rel_err_x"] != "" else ""
        notes = "; ".join(dict.fromkeys(n for n in ((rf or {}).get("note", ""),
                                                    (rb or {}).get("note", "")) if n))
        lines.append(f"| {label} | {t(rf)} | {rr(rf)} | {t(rb)} | {rr(rb)} | {first} | {err} | "
                     f"{notes} |")
    return "\n".join(lines)


def plot(rows, x_key, x_label, title, path, solvers):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
    markers = "os^vD<>pPX*h"
    for ax, mode in zip(axes, MODES):
        any_line = False
        for i, key in enumerate(solvers):
            pts = sorted((r[x_key], r["best_s"]) for r in rows
                         if r["solver"] == key and r["mode"] == mode and r["status"] == "ok")
            if not pts:
                continue
            xs, ys = zip(*pts)
            style = "--" if key == "linear" else "-"
            lw = 2.4 if key.startswith("optnet") else 1.4
            ax.plot(xs, ys, style, marker=markers[i % len(markers)], lw=lw,
                    label=runners.BY_KEY[key].label)
            any_line = True
        ax.set_xscale("log", base=2 if x_key == "batch" else 10)
        ax.set_yscale("log")
        ax.set_xlabel(x_label)
        ax.set_title(mode)
        ax.grid(True, which="both", alpha=0.3)
        xs_all = sorted({r[x_key] for r in rows})
        ax.set_xticks(xs_all)
        ax.set_xticklabels([str(v) for v in xs_all])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        if any_line:
            ax.legend(fontsize=8)
    axes[0].set_ylabel("runtime (s), best of repeats")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --------------------------------------------------------------------------- main


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="smoke test (~3 min): Figure 2 at batches 1, 16 and Figure 1 at batch 16, "
                         "all at n = 50; float32 check without JAX (its jit compile alone "
                         "takes ~1 min); one repeat")
    ap.add_argument("--sizes", type=int, nargs="+", default=None,
                    help="Figure 1 sizes n = p (default 10 50 100 200 500)")
    ap.add_argument("--batches", type=int, nargs="+", default=None,
                    help="Figure 2 batch sizes (default 1 8 32 64 128)")
    ap.add_argument("--n", type=int, default=None, help="Figure 2 size n = p (default 100)")
    ap.add_argument("--fig1-batch", type=int, default=None, help="Figure 1 batch (default 128)")
    ap.add_argument("--repeats", type=int, default=None, help="timed calls per measurement "
                    "(best is reported; default 3, quick 1)")
    ap.add_argument("--budget", type=float, default=60.0,
                    help="skip a measurement whose projected time per call exceeds this many "
                         "seconds (projected ~ batch * n^3 from smaller measurements)")
    ap.add_argument("--repeats-budget", type=float, default=45.0,
                    help="stop repeating once the timed calls of one measurement would exceed "
                         "this many seconds (at least one timed call is made)")
    ap.add_argument("--serial-max-n", type=int, default=100,
                    help="skip the serial (per-problem loop) solvers above this n in Figure 1")
    ap.add_argument("--solvers", nargs="+", default=None,
                    help="subset of: " + " ".join(runners.BY_KEY))
    ap.add_argument("--sections", nargs="+", default=["fig2", "fig1", "precision"],
                    choices=["fig2", "fig1", "precision"])
    ap.add_argument("--precision-solvers", nargs="+", default=None,
                    help="solvers of the float32 vs float64 section (default: the optnet ones)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(HERE / "results"))
    a = ap.parse_args(argv)
    if a.quick:
        a.batches = a.batches or [1, 16]
        a.n = a.n or 50
        a.sizes = a.sizes or [50]
        a.fig1_batch = a.fig1_batch or 16
        a.repeats = a.repeats or 1
        a.precision_solvers = a.precision_solvers or ["optnet", "optnet-torch"]
    a.batches = a.batches or [1, 8, 32, 64, 128]
    a.n = a.n or 100
    a.sizes = a.sizes or [10, 50, 100, 200, 500]
    a.fig1_batch = a.fig1_batch or 128
    a.repeats = a.repeats or 3
    a.precision_solvers = a.precision_solvers or ["optnet", "optnet-torch", "optnet-jax"]
    return a


def main(argv=None):
    args = parse_args(argv)
    command = "python " + " ".join(shlex.quote(x) for x in ([sys.argv[0]] + sys.argv[1:]
                                                            if argv is None else
                                                            ["benchmarks/run.py", *argv]))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = _dt.datetime.now().astimezone()

    keys = args.solvers or [s.key for s in runners.SOLVERS]
    unknown = [k for k in keys if k not in runners.BY_KEY]
    if unknown:
        raise SystemExit(f"unknown solvers {unknown}; choose from {list(runners.BY_KEY)}")
    specs = [runners.BY_KEY[k] for k in keys]
    try:  # configure JAX (x64, CPU) before anything touches it
        runners._jax()
    except Exception:
        pass

    print(f"optnet benchmark - {command}", flush=True)
    info = machine_info()
    print(f"machine: {info['cpu_model']}, {info['cpu_count']} CPUs, {info['memory_gib']} GiB, "
          f"{info['platform']}", flush=True)
    avail = {}
    for s in specs:
        avail[s.key] = runners.availability(s)
        print(f"  {s.label:20s} {'OK ' if avail[s.key][0] else 'MISSING'} {avail[s.key][1]}",
              flush=True)

    info["load_start"] = _loadavg()
    info["busy_start"] = busy_processes()
    if info["busy_start"]:
        print("WARNING: other processes are using the CPU; timings will be noisy:\n  "
              + "\n  ".join(info["busy_start"]), flush=True)
    qp_keys = [k for k in keys if k != "linear"]
    h = Harness(args, specs, avail)
    plan = {
        "fig2": [(B, args.n, "float64", qp_keys) for B in args.batches],
        "fig1": [(args.fig1_batch, n, "float64", keys) for n in args.sizes],
        "precision": [(args.fig1_batch, args.n, dt, [k for k in args.precision_solvers
                                                     if k in keys])
                      for dt in ("float64", "float32")],
    }
    h.total = sum(len(ks) * len(MODES) for sec in args.sections for (_, _, _, ks) in plan[sec])

    results = {}
    for sec in ("fig2", "fig1", "precision"):
        if sec not in args.sections:
            continue
        print(f"--- {sec}", flush=True)
        rows = []
        for (B, n, dt, ks) in plan[sec]:
            rows.extend(h.measure(sec, ks, B, n, dt))
        add_ratios(rows, runners.BY_KEY)
        results[sec] = rows
        write_csv(out / f"{sec}.csv", rows)

    elapsed = time.perf_counter() - h.t_start
    info["load_end"] = _loadavg()
    info["busy_end"] = busy_processes()
    write_summary(out, args, command, info, specs, avail, results, started, elapsed)
    if "fig2" in results:
        plot(results["fig2"], "batch", "batch size",
             f"OptNet paper Figure 2: time vs batch size (n = p = {args.n}, float64, "
             f"{info['cpu_count']} CPU cores)", out / "fig2.png", qp_keys)
    if "fig1" in results:
        plot(results["fig1"], "n", "number of variables n (= constraints p)",
             f"OptNet paper Figure 1: time vs problem size (batch {args.fig1_batch}, float64, "
             f"{info['cpu_count']} CPU cores)", out / "fig1.png", keys)
    print(f"done in {elapsed:.0f} s; results in {out}", flush=True)


def write_summary(out, args, command, info, specs, avail, results, started, elapsed):
    keys = [s.key for s in specs]
    qp_keys = [k for k in keys if k != "linear"]
    L = []
    L.append("# optnet benchmark results\n")
    L.append(f"Generated {started:%Y-%m-%d %H:%M %Z} in {elapsed / 60:.1f} min by\n")
    L.append(f"```\n{command}\n```\n")
    L.append("## Machine\n")
    L.append(f"- CPU: {info['cpu_model']} ({info['cpu_count']} logical CPUs, "
             f"`os.cpu_count()`), {info['memory_gib']} GiB memory, no GPU used")
    L.append(f"- OS: {info['platform']}; Python {info['python']}")
    if "torch_threads" in info:
        L.append(f"- torch intra-op threads: {info['torch_threads']}; thread env: "
                 f"{info['env_threads'] or 'none set'}")
    L.append(f"- 1-minute load average: {info.get('load_start')} at the start, "
             f"{info.get('load_end')} at the end (the CSVs' `loadavg_1m` column samples it after "
             "each measurement; it includes this benchmark's own threads)")
    busy = list(dict.fromkeys(info.get("busy_start", []) + info.get("busy_end", [])))
    if busy:
        L.append("- **Warning: other processes were using the CPU during this run, so timings "
                 "are noisy:** " + "; ".join(f"`{b}`" for b in busy))
    L.append("")
    L.append("## Solvers\n")
    L.append("| solver | framework | available | versions / reason |")
    L.append("|---|---|---|---|")
    for s in specs:
        ok, why = avail[s.key]
        L.append(f"| {s.label} | {s.framework} | {'yes' if ok else '**no**'} | {why} |")
    L.append("")
    L.append("## Method\n")
    L.append(
        "- Problem (OptNet paper, footnote 4), per batch lane: `Q = U'U + 1e-3 I`, `U ~ "
        "Uniform[0,1]^(n x n)`; `G ~ N(0,1)^(p x n)`; `h = G z0 + s0`, `z0 ~ N(0,1)`, "
        "`s0 ~ Uniform[0,1]`; `q ~ N(0,1)`; no equalities; n = p. Generated once per "
        f"(batch, n) by `benchmarks/problems.py` (seed {args.seed}), float64, converted per "
        "framework outside the timed region.")
    L.append(
        f"- Each time is the **best of {args.repeats}** timed calls after one warm-up call (fewer "
        f"when the timed calls would exceed {args.repeats_budget:.0f} s; the `repeats` column "
        "of the CSVs says how many). The warm-up time, which includes jit compilation for the "
        "JAX-based layers, is `first_call_s`; `compile_s = first_call_s - best_s` for those.")
    L.append(
        "- *forward*: solve the batch (torch inputs without `requires_grad`, under "
        "`no_grad`). *forward+backward*: solve and back-propagate `loss = sum(x)` to all of "
        "`Q, q, G, h` (torch: `torch.autograd.grad`; JAX: `jit(grad(...))`; optnet numpy: "
        "`optnet.solve` then `optnet.vjp(sol, ones)`).")
    L.append(
        "- Ratios: time / time of the fastest *competitor* (every solver except optnet and the "
        "linear layer) measured on the same configuration in this run; < 1 means faster than "
        "every competitor.")
    L.append(
        "- Accuracy: `max_rel_err_x` = max |x - x_ref| / max(1, |x_ref|) over the first 8 lanes, "
        "x_ref from Clarabel at 1e-11 tolerances. Each solver runs at its own default tolerances "
        "(verbosity off).")
    L.append(
        f"- Skips: the serial per-problem solvers (Gurobi, Clarabel) are skipped above n = "
        f"{args.serial_max_n} in Figure 1; any measurement whose projected time per call "
        f"(~ batch x n^3 from a smaller measurement of the same solver) exceeds "
        f"{args.budget:.0f} s is recorded as `skipped`.")
    L.append("")

    if "fig2" in results and results["fig2"]:
        rows = results["fig2"]
        B = max(args.batches)
        head = [r for r in rows if r["batch"] == B and r["n"] == args.n]
        L.append(f"## Headline: batch {B}, n = p = {args.n}, float64\n")
        L.append(headline_table(head, qp_keys))
        L.append("")
        for mode in MODES:
            L.append(f"## Figure 2 ({mode}): seconds (ratio vs fastest competitor), "
                     f"n = p = {args.n}, float64\n")
            L.append(pivot_table(rows, "batch", "B", qp_keys, mode))
            L.append("")
        L.append("![Figure 2](fig2.png)\n")
    if "fig1" in results and results["fig1"]:
        rows = results["fig1"]
        for mode in MODES:
            L.append(f"## Figure 1 ({mode}): seconds (ratio vs fastest competitor), "
                     f"batch {args.fig1_batch}, float64\n")
            L.append(pivot_table(rows, "n", "n", keys, mode))
            L.append("")
        L.append("![Figure 1](fig1.png)\n")
    if "precision" in results and results["precision"]:
        rows = results["precision"]
        L.append(f"## float32 vs float64 (optnet), batch {args.fig1_batch}, n = p = {args.n}\n")
        L.append("| solver | mode | float64 (s) | float32 (s) | float32 / float64 | "
                 "max rel. err. x (f64 / f32) |")
        L.append("|---|---|---|---|---|---|")
        for key in keys:
            for mode in MODES:
                r64 = next((r for r in rows if r["solver"] == key and r["mode"] == mode
                            and r["dtype"] == "float64"), None)
                r32 = next((r for r in rows if r["solver"] == key and r["mode"] == mode
                            and r["dtype"] == "float32"), None)
                if r64 is None and r32 is None:
                    continue
                ratio = ""
                if r64 and r32 and r64["status"] == r32["status"] == "ok":
                    ratio = f"{r32['best_s'] / r64['best_s']:.2f}"

                def e(r):
                    return f"{r['max_rel_err_x']:.1e}" if r and r["max_rel_err_x"] != "" else "-"

                L.append(f"| {(r64 or r32)['label']} | {mode} | {cell(r64, False)} | "
                         f"{cell(r32, False)} | {ratio} | {e(r64)} / {e(r32)} |")
        L.append("")
    notes = {}
    for sec_rows in results.values():
        for r in sec_rows:
            if r["status"] in ("error", "missing", "skipped"):
                notes.setdefault((r["label"], r["status"], r["note"]), []).append(
                    f"{r['section']} B={r['batch']} n={r['n']} {r['dtype']} {r['mode']}")
    if notes:
        L.append("## Skipped, missing and failed measurements\n")
        for (label, status, note), where in notes.items():
            shown = "; ".join(where[:6]) + (f"; ... ({len(where)} in all)" if len(where) > 6
                                            else "")
            L.append(f"- **{label}** {status}: {note} — {shown}")
        L.append("")
    L.append("Raw data: `fig2.csv`, `fig1.csv`, `precision.csv` (all columns, including "
             "median, first-call, set-up time and accuracy).\n")
    (out / "summary.md").write_text("\n".join(L))


if __name__ == "__main__":
    main()
