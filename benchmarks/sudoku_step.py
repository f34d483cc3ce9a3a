"""Seconds per training step of the paper's Sudoku OptNet layer, several QP layers side by side.

The layer is that of the OptNet paper's Sudoku experiment (Amos & Kolter 2017, section 4.4),
built as in ``benchmarks/warm_start.py``: n = 64 variables (the one-hot 4x4 board),
Q = 0.1 I, G = -I, h = 0, a learned equality matrix A (40 x 64, uniform [0, 1) from
``--seed``), b = A exp(log_z0) with a learned log_z0 (zeros at first), q = -puzzle; batch
150, float64. One training step is the forward solve of the batch, the mean squared error
against the one-hot solution boards, the backward pass and an Adam (lr 0.1) update. Every
step trains on a new batch of puzzles from ``optnet.experiments._sudoku_data``; every solver
starts from the same A, log_z0 and sees the same batches.

For each solver: ``--warmup`` steps (the first step's time, which includes any compilation,
is reported on its own), then ``--steps`` timed steps (``time.perf_counter`` around the
whole step), of which the median and the minimum are reported. As a correctness check, the
layer's output on the first batch, before any update, is compared with the default
``optnet.torch.solve`` (largest absolute difference); the loss of the last step is shown
too (it drifts apart a little between solvers as their gradients differ by rounding and
tolerances).

Solvers:

* ``optnet-torch``: ``optnet.torch.solve`` (eager);
* ``optnet-torch-step``: ``optnet.torch.solve(compiled="torch")`` (the iteration compiled
  by ``torch.compile``; the first step compiles for about a minute on a CPU);
* ``optnet-torch-jax``: ``optnet.torch.solve(compiled="jax")`` (XLA programs; the first
  step compiles);
* ``qpth``: ``qpth.qp.QPFunction(verbose=-1)`` (its defaults: eps 1e-12, 20 iterations);
* ``proxsuite``: proxsuite's ``QPFunction`` QPLayer with its defaults (eps 1e-9),
  inequalities as -inf <= G x <= h;

with the same options as ``benchmarks/runners.py``. A solver whose modules do not import
is skipped with a note.

Target: "the Sudoku layer's training step ≥ 2x faster than qpth and proxsuite", i.e. the
fastest of the two competitors' median step time divided by each optnet variant's median
step time is at least 2; those ratios are printed at the end, from this one run.

Run (the competitors live in their own environment)::

    benchenv/bin/python benchmarks/sudoku_step.py [--steps 5] [--warmup 1]
        [--solvers optnet-torch optnet-torch-step optnet-torch-jax qpth proxsuite]
        [--seed 0] [--threads N]
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import platform
import shlex
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # optnet from the tree

from optnet.experiments import _sudoku_data  # noqa: E402

BATCH = 150
N = 64  # 4 x 4 cells x 4 digits
NEQ = 40
LR = 0.1
DTYPE = torch.float64
TARGET = 2.0
COMPETITORS = ("qpth", "proxsuite")

Solve = Callable[..., torch.Tensor]


# --------------------------------------------------------------------------- solvers
# Each factory imports what it needs and returns solve(Q, q, G, h, A, b) -> x (batch, n),
# differentiable with respect to all its tensor inputs.


def _optnet_solver(compiled: str | None) -> Solve:
    ot = importlib.import_module("optnet.torch")
    kw = {} if compiled is None else {"compiled": compiled}

    def solve(Q, q, G, h, A, b):
        return ot.solve(Q, q, G, h, A, b, **kw)

    return solve


def _qpth_solver() -> Solve:
    from qpth.qp import QPFunction

    def solve(Q, q, G, h, A, b):
        # qpth averages, rather than sums, the gradient of a tensor shared by the batch;
        # giving it A and b expanded to the batch makes torch sum the per-problem
        # gradients, as for the other layers (the solve is the same: qpth expands them
        # itself otherwise). Options as in runners.setup_qpth: qpth's defaults
        # (eps=1e-12, maxIter=20, PDIPM_BATCHED) except verbosity.
        B = q.shape[0]
        return QPFunction(verbose=-1)(Q, q, G, h, A.expand(B, *A.shape), b.expand(B, *b.shape))

    return solve


def _proxsuite_solver() -> Solve:
    from proxsuite.torch.qplayer import QPFunction

    def solve(Q, q, G, h, A, b):
        # Options as in runners.setup_proxsuite: QPLayer defaults (eps=1e-9,
        # structural_feasibility=True, omp_parallel=False); G x <= h as -inf <= G x <= h.
        lower = torch.full_like(h, -math.inf)
        return QPFunction()(Q, q, A, b, G, lower, h)[0]

    return solve


SOLVERS: dict[str, tuple[str, Callable[[], Solve], str]] = {
    "optnet-torch": ("optnet (torch)", lambda: _optnet_solver(None), "optnet.torch.solve"),
    "optnet-torch-step": ("optnet (torch, iteration by torch.compile)",
                          lambda: _optnet_solver("torch"),
                          'optnet.torch.solve(compiled="torch")'),
    "optnet-torch-jax": ("optnet (torch, compiled by JAX)", lambda: _optnet_solver("jax"),
                         'optnet.torch.solve(compiled="jax")'),
    "qpth": ("qpth", _qpth_solver, "qpth.qp.QPFunction(verbose=-1); eps 1e-12, maxIter 20"),
    "proxsuite": ("proxsuite QPLayer", _proxsuite_solver,
                  "proxsuite.torch.qplayer.QPFunction(); eps 1e-9, eps_backward 1e-4"),
}


# --------------------------------------------------------------------------- layer and data


class SudokuLayer(torch.nn.Module):
    """The paper's Sudoku QP layer: x*(puzzle) of min 1/2 x'Qx - puzzle'x, Ax = b, x >= 0."""

    def __init__(self, solve: Solve, seed: int):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.solve = solve
        self.A = torch.nn.Parameter(torch.rand(NEQ, N, generator=gen, dtype=DTYPE))
        self.log_z0 = torch.nn.Parameter(torch.zeros(N, dtype=DTYPE))
        self.register_buffer("Q", 0.1 * torch.eye(N, dtype=DTYPE))
        self.register_buffer("G", -torch.eye(N, dtype=DTYPE))
        self.register_buffer("h", torch.zeros(N, dtype=DTYPE))

    def forward(self, puzzles: torch.Tensor) -> torch.Tensor:
        b = self.A @ torch.exp(self.log_z0)
        return self.solve(self.Q, -puzzles, self.G, self.h, self.A, b)


def make_batches(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` batches of puzzles and their solutions, each (count, BATCH, 64) float64.

    Drawn one batch at a time from one generator, so that batch k is the same whatever
    ``count`` is (runs with different ``--steps`` start on the same puzzles)."""
    rng = np.random.default_rng(seed)
    pairs = [_sudoku_data.generate(BATCH, rng) for _ in range(count)]
    feats = torch.from_numpy(np.stack([f for f, _ in pairs])).reshape(count, BATCH, N)
    labels = torch.from_numpy(np.stack([y for _, y in pairs])).reshape(count, BATCH, N)
    return feats.to(DTYPE), labels.to(DTYPE)


# --------------------------------------------------------------------------- measurement


def train(solve: Solve, feats, labels, warmup: int, steps: int, seed: int, key: str) -> dict:
    """Seconds of each training step, the output on the first batch before any update and
    the last step's loss."""
    layer = SudokuLayer(solve, seed)
    opt = torch.optim.Adam(layer.parameters(), lr=LR)
    times: list[float] = []
    x_first = None
    loss = None
    for k in range(warmup + steps):
        puzzles, target = feats[k], labels[k]
        t0 = time.perf_counter()
        x = layer(puzzles)
        loss = torch.nn.functional.mse_loss(x, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
        if k == 0:
            x_first = x.detach().clone()
        kind = "warm-up" if k < warmup else "timed"
        print(f"  {key}: step {k + 1}/{warmup + steps} ({kind}) {times[-1]:.3f} s, "
              f"loss {loss.item():.6f}", flush=True)
    timed = times[warmup:]
    return {
        "first": times[0],
        "median": statistics.median(timed),
        "min": min(timed),
        "x_first": x_first,
        "loss": loss.item(),
    }


def reference_output(feats, seed: int) -> torch.Tensor:
    """The default optnet.torch.solve's output on the first batch with the initial layer."""
    layer = SudokuLayer(_optnet_solver(None), seed)
    with torch.no_grad():
        return layer(feats[0])


# --------------------------------------------------------------------------- report


def _versions() -> str:
    out = [f"torch {torch.__version__}"]
    for dist in ("optnet", "jax", "qpth", "proxsuite"):
        try:
            out.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            pass
    return ", ".join(out)


def _fmt(s: float | None) -> str:
    return "-" if s is None else f"{s:.4f}"


def report(results: dict, skipped: dict, command: str, args) -> None:
    print()
    print(f"Sudoku OptNet layer training step (n = {N}, {NEQ} equalities, batch {BATCH}, "
          f"float64, Adam lr {LR}); {args.warmup} warm-up + {args.steps} timed steps")
    print(f"command: {command}")
    print(f"machine: {platform.processor() or platform.machine() or '?'}, "
          f"os.cpu_count() = {os.cpu_count()}, torch threads = {torch.get_num_threads()}")
    print(f"versions: {_versions()}")
    print()
    print("| solver | first step (s) | median step (s) | min step (s) | x diff vs optnet-torch "
          "| last step loss |")
    print("|---|---|---|---|---|---|")
    for key, r in results.items():
        if "error" in r:
            print(f"| {key} | failed: {r['error']} | | | | |")
            continue
        print(f"| {key} | {_fmt(r['first'])} | {_fmt(r['median'])} | {_fmt(r['min'])} | "
              f"{r['x_diff']:.1e} | {r['loss']:.6f} |")
    for key, why in skipped.items():
        print(f"| {key} | skipped: {why} | | | | |")
    print()
    print("x diff: max |x - x_optnet-torch| on the first batch before any update.")
    for key in results:
        print(f"  {key}: {SOLVERS[key][2]}")

    ok = {k: r for k, r in results.items() if "error" not in r}
    comps = {k: ok[k]["median"] for k in COMPETITORS if k in ok}
    print()
    if not comps:
        print("speed-up over the fastest competitor (target ≥ 2x): no competitor measured")
        return
    best = min(comps, key=comps.get)
    print(f"fastest competitor: {best} ({comps[best]:.4f} s per step, median)")
    for key, r in ok.items():
        if not key.startswith("optnet"):
            continue
        ratio = comps[best] / r["median"]
        verdict = "met" if ratio >= TARGET else "not met"
        print(f"{key}: speed-up over the fastest competitor = {ratio:.2f}x "
              f"({best} {comps[best]:.4f} s / {r['median']:.4f} s; target ≥ 2x: {verdict})")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=5, help="timed steps per solver")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps before them")
    parser.add_argument("--solvers", nargs="+", default=list(SOLVERS), choices=list(SOLVERS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's own choice)")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 0:
        parser.error("--steps must be at least 1 and --warmup at least 0")
    argv_used = sys.argv if argv is None else [__file__, *argv]
    command = shlex.join([sys.executable, *argv_used])
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    # proxsuite's backward allocates its gradients in torch's default dtype; float64
    # keeps them at the precision of everything else.
    torch.set_default_dtype(DTYPE)

    feats, labels = make_batches(args.warmup + args.steps, args.seed)
    x_ref = reference_output(feats, args.seed)

    results: dict = {}
    skipped: dict = {}
    for key in dict.fromkeys(args.solvers):
        try:
            solve = SOLVERS[key][1]()
        except Exception as exc:  # not installed, or fails to import
            skipped[key] = f"cannot import: {type(exc).__name__}: {exc}"
            print(f"skipping {key}: {skipped[key]}", flush=True)
            continue
        print(f"{key}:", flush=True)
        try:
            r = train(solve, feats, labels, args.warmup, args.steps, args.seed, key)
        except Exception as exc:
            traceback.print_exc()
            results[key] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        r["x_diff"] = float((r.pop("x_first") - x_ref).abs().max())
        results[key] = r
    report(results, skipped, command, args)


if __name__ == "__main__":
    main()
