"""What a warm start (``init=``) buys: iterations and time, cold against warm.

1. The paper's Sudoku layer (n = 64, Q = 0.1 I, G = -I, h = 0, A 40 x 64 learned, batch 150,
   Adam 0.1, generated puzzles), ``--steps`` training steps on a new batch each step (the
   previous step's solution is then that of other puzzles) and on one batch repeated (the
   previous solution is that of the same puzzles before the parameter update), each cold
   and warm from the previous step's solution.
   Iterations (mean and max over the batch) and the seconds of each training step
   (forward + backward), medians over the steps after the first.
2. The paper's random QP (n = p = 20, batch 64), its data perturbed by 1% and 10%
   (``tests/test_warm_start.py``'s perturbation): cold against warm from the unperturbed
   solution, NumPy backend.

Run: ``python benchmarks/warm_start.py [--steps 20]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from problems import make_problem  # noqa: E402

import optnet  # noqa: E402
from optnet.adapters.torch_autograd import QPFunction  # noqa: E402
from optnet.experiments import _sudoku_data  # noqa: E402


def _sudoku(steps: int, fixed: bool, warm: bool, seed: int = 0):
    """Median seconds per training step and mean / max iterations (over the batch, averaged
    over the steps after the first). ``fixed``: every step trains on the same batch;
    otherwise each on the next. ``warm``: each step starts from the previous one's solution."""
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    kw = {"dtype": torch.float64}
    A = torch.nn.Parameter(torch.rand(40, 64, generator=gen, **kw))
    log_z0 = torch.nn.Parameter(torch.zeros(64, **kw))
    Q, G, h = 0.1 * torch.eye(64, **kw), -torch.eye(64, **kw), torch.zeros(64, **kw)
    opt = torch.optim.Adam([A, log_z0], lr=0.1)
    feats, labels = _sudoku_data.generate(150 * (1 if fixed else steps), rng)
    feats = torch.from_numpy(feats).reshape(-1, 64).to(torch.float64)
    labels = torch.from_numpy(labels).reshape(-1, 64).to(torch.float64)
    init = None
    iters, secs = [], []
    for k in range(steps):
        sl = slice(0, 150) if fixed else slice(150 * k, 150 * (k + 1))
        q, y = -feats[sl], labels[sl]
        t0 = time.perf_counter()
        b = A @ torch.exp(log_z0)
        x, z, yy, _, sol = QPFunction.apply((None, None, init if warm else None),
                                            Q, q, G, h, A, b)
        loss = ((x - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        secs.append(time.perf_counter() - t0)
        its = np.asarray(sol.iterations)
        iters.append((its.mean(), its.max()))
        init = {"x": x.detach(), "z": z.detach(), "y": yy.detach()}
    return (statistics.median(secs[1:]), float(np.mean([i[0] for i in iters[1:]])),
            float(np.mean([i[1] for i in iters[1:]])))


def _random(eps: float, seeds=range(3)):
    out = {"cold": [], "warm": [], "t_cold": [], "t_warm": [], "err": []}
    for seed in seeds:
        data = {k: v for k, v in make_problem(64, 20, seed=seed).items() if v is not None}
        rng = np.random.default_rng(100 + seed)
        new = {k: v * (1 + eps * rng.standard_normal(v.shape)) for k, v in data.items()}
        M = rng.standard_normal(data["Q"].shape)
        new["Q"] = data["Q"] + eps * np.abs(data["Q"]).mean() * M @ np.swapaxes(M, -1, -2) / 20
        base = optnet.solve(**data)
        t0 = time.perf_counter()
        cold = optnet.solve(**new)
        t1 = time.perf_counter()
        warm = optnet.solve(**new, init=base)
        t2 = time.perf_counter()
        out["cold"].append(cold.iterations)
        out["warm"].append(warm.iterations)
        out["t_cold"].append(t1 - t0)
        out["t_warm"].append(t2 - t1)
        out["err"].append(float(np.abs(warm.x - cold.x).max()))
    c, w = np.concatenate(out["cold"]), np.concatenate(out["warm"])
    return (c.mean(), c.max(), w.mean(), w.max(), statistics.median(out["t_cold"]),
            statistics.median(out["t_warm"]), max(out["err"]))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(f"Sudoku layer, batch 150, {args.steps} training steps (medians after the first):")
    for fixed in (False, True):
        for warm in (False, True):
            t, mean_it, max_it = _sudoku(args.steps, fixed, warm)
            label = (("one batch repeated" if fixed else "a new batch each step") + ", "
                     + ("warm from the previous step" if warm else "cold"))
            print(f"  {label:54s} {t * 1e3:8.1f} ms/step, iterations mean {mean_it:5.2f}, "
                  f"max {max_it:5.2f}", flush=True)
    print("Paper's random QP, n = p = 20, batch 64, NumPy (3 seeds):")
    for eps in (0.01, 0.1):
        cm, cx, wm, wx, tc, tw, err = _random(eps)
        print(f"  perturbed {eps:4.0%}: iterations cold {cm:5.2f} (max {cx}), warm {wm:5.2f} "
              f"(max {wx}); time cold {tc * 1e3:.1f} ms, warm {tw * 1e3:.1f} ms; "
              f"max |x_warm - x_cold| {err:.1e}", flush=True)


if __name__ == "__main__":
    main()
