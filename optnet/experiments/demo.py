"""``optnet demo``: solve a batch of random QPs and print each problem's status.

The problems are the OptNet paper's benchmark QPs (Amos & Kolter 2017,
footnote 4); a few lanes are made infeasible or unbounded on purpose to show
the per-problem statuses, the others are solved and their objective printed.
"""

from __future__ import annotations

import time

import numpy as np

import optnet

HELP = "solve a batch of random QPs (some infeasible or unbounded) and print their statuses"


def random_qps(batch, n, p, rng):
    """Amos & Kolter (2017), footnote 4: Q = U'U + 1e-3 I, G normal, h = G z0 + s0.

    Returns
    -------
    Q : (batch, n, n), q : (batch, n), G : (batch, p, n), h : (batch, p)
    """
    U = rng.uniform(size=(batch, n, n))
    Q = U.transpose(0, 2, 1) @ U + 1e-3 * np.eye(n)
    q = rng.normal(size=(batch, n))
    G = rng.normal(size=(batch, p, n))
    h = np.einsum("bij,bj->bi", G, rng.normal(size=(batch, n))) + rng.uniform(size=(batch, p))
    return Q, q, G, h


def add_arguments(parser):
    """The demo's options: ``--batch``, ``--n``, ``--dtype``."""
    parser.add_argument("--batch", type=int, default=16, help="number of QPs (default 16, >= 3)")
    parser.add_argument("--n", type=int, default=50,
                        help="variables = inequality rows (default 50, >= 2)")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float64")


def run(args):
    """Solve the batch and print the table.

    Returns
    -------
    dict
        ``{"seconds": solve time, "statuses": {name: count}}``.
    """
    if args.batch < 3:
        raise ValueError(f"--batch must be at least 3 (lanes 1 and 2 are made infeasible and "
                         f"unbounded), received {args.batch}")
    if args.n < 2:
        raise ValueError(f"--n must be at least 2, received {args.n}")
    rng = np.random.default_rng(0)
    Q, q, G, h = random_qps(args.batch, args.n, args.n, rng)
    # Lane 1: infeasible (x_0 <= -1 and -x_0 <= -1). Lane 2: unbounded (an LP with a free ray).
    G[1, 0], G[1, 1], h[1, :2] = 0.0, 0.0, -1.0
    G[1, 0, 0], G[1, 1, 0] = 1.0, -1.0
    Q[2] = 0.0
    G[2, :, 0], q[2, 0] = 0.0, -1.0
    Q, q, G, h = (a.astype(args.dtype) for a in (Q, q, G, h))

    t0 = time.perf_counter()
    sol = optnet.solve(Q, q, G, h)
    elapsed = time.perf_counter() - t0

    obj = 0.5 * np.einsum("bi,bij,bj->b", sol.x, Q, sol.x) + np.einsum("bi,bi->b", q, sol.x)
    print(f"optnet {optnet.__version__}: {args.batch} QPs, n = p = {args.n}, {args.dtype}, "
          f"solved in {elapsed:.3f} s")
    print(f"{'lane':>4}  {'status':<18} {'iters':>5}  {'objective':>14}  {'primal res':>10}  "
          f"{'dual res':>10}")
    for i in range(args.batch):
        status = optnet.Status(int(sol.status[i]))
        print(f"{i:>4}  {status.name:<18} {int(sol.iterations[i]):>5}  {obj[i]:>14.6g}  "
              f"{sol.primal_residual[i]:>10.2e}  {sol.dual_residual[i]:>10.2e}")
    counts = {s.name: int(np.sum(sol.status == s)) for s in optnet.Status}
    print("statuses:", ", ".join(f"{k} {v}" for k, v in counts.items() if v))
    return {"seconds": elapsed, "statuses": counts}
