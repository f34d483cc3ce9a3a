"""``optnet mnist``: an OptNet layer as a classifier's last hidden layer (Amos & Kolter 2017,
supplementary A, Fig. 6).

Two networks, trained alike on the negative log-likelihood:

- ``optnet``: FC600 - FC10 - OptNet10 - softmax. The OptNet layer solves, per image,
  ``minimize_z 1/2 z'Qz + q'z  s.t.  Gz <= h`` with 10 variables and 10 inequality
  rows, ``q`` the FC10 layer's output, and learned ``Q = LL' + 1e-4 I``, ``G`` and
  ``h = G z0 + s0`` (``optnet.torch.OptNetLayer(n=10, n_ineq=10, input_affine=False,
  eps=1e-4)``);
- ``fc``: FC600 - FC10 - FC10 - softmax, the same with a plain layer instead.

ReLU follows FC600 in both and the first FC10 in ``fc``; the OptNet layer's input
is the FC10 layer's linear output (the QP itself is the nonlinearity). The data
are the MNIST IDX files of ``--data-dir``, or without it scikit-learn's 8x8
digits, so that the command runs offline.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ._common import (
    MetricsLog,
    add_common_arguments,
    append_results,
    run_epoch,
    seed_everything,
    write_results,
)
from ._mnist_data import load_digits_split, load_mnist

HELP = "FC-OptNet vs FC-FC classifiers on MNIST or 8x8 digits (supplementary A, Fig. 6)"

MODELS = ("optnet", "fc")


def add_arguments(parser):
    """The MNIST experiment's options (the common ones, --data-dir, --lr, --models)."""
    add_common_arguments(parser, epochs=100, batch_size=64)
    parser.add_argument("--data-dir", metavar="DIR", type=Path,
                        help="folder with the MNIST IDX files (train-images-idx3-ubyte, "
                             "train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
                             "t10k-labels-idx1-ubyte, each optionally .gz); default: "
                             "scikit-learn's 8x8 digits, 20%% held out")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam's rate (default 1e-3)")
    parser.add_argument("--hidden", type=int, default=600,
                        help="units of the first layer (default 600)")
    parser.add_argument("--models", default=",".join(MODELS),
                        help="comma-separated models to train (default optnet,fc)")
    parser.add_argument("--limit", type=int, default=None,
                        help="use only the first LIMIT training and LIMIT/5 test images")


def _build(name, n_in, hidden):
    """The torch network ``name`` ("optnet" or "fc"), float64."""
    import torch
    from torch import nn

    import optnet
    import optnet.torch

    class FCOptNet(nn.Module):
        """FC600 - FC10 - OptNet10; counts the QPs that are not SOLVED in ``unsolved``."""

        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(n_in, hidden, dtype=torch.float64)
            self.fc2 = nn.Linear(hidden, 10, dtype=torch.float64)
            self.qp = optnet.torch.OptNetLayer(n=10, n_ineq=10, input_affine=False, eps=1e-4)
            self.unsolved = 0

        def forward(self, x):
            q = self.fc2(torch.relu(self.fc1(x)))
            # The layer's own parameterization, solved here with status=True so the run can
            # report how many problems were not SOLVED (the layer's forward drops it).
            Q, G, h, _, _ = self.qp.qp_parameters()
            z, status = optnet.torch.solve(Q, q, G, h, status=True)
            self.unsolved += int((status != int(optnet.Status.SOLVED)).sum())
            return torch.log_softmax(z, -1)

    class FCFC(nn.Module):
        """FC600 - FC10 - FC10."""

        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, 10),
                                     nn.ReLU(), nn.Linear(10, 10)).to(torch.float64)

        def forward(self, x):
            return torch.log_softmax(self.net(x), -1)

    return FCOptNet() if name == "optnet" else FCFC()


def run(args):
    """Train the two networks, log each epoch, write results.md and the curves.

    Returns
    -------
    dict
        ``{model: {"test_error", "train_error", "best_test_error", "unsolved"}}`` and
        ``"gap"``: the final test errors' difference (OptNet minus FC, points of %).
    """
    import torch

    t_start = time.perf_counter()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if not models or any(m not in MODELS for m in models):
        raise ValueError(f"--models must be a comma-separated subset of {','.join(MODELS)}, "
                         f"received {args.models!r}")
    if args.hidden < 1:
        raise ValueError(f"--hidden must be positive, received {args.hidden}")
    if args.limit is not None and args.limit < 5:
        raise ValueError(f"--limit must be at least 5, received {args.limit}")
    epochs = args.epochs
    limit = args.limit
    if args.quick:
        epochs = min(epochs, 5)
        limit = limit or (6000 if args.data_dir is not None else None)
    rng = seed_everything(args.seed)
    if args.data_dir is not None:
        (xtr, ytr), (xte, yte) = load_mnist(args.data_dir)
        source = f"MNIST from {args.data_dir}"
    else:
        (xtr, ytr), (xte, yte) = load_digits_split()
        source = "scikit-learn's 8x8 digits (fixed 80/20 split)"
    if limit is not None:
        xtr, ytr, xte, yte = xtr[:limit], ytr[:limit], xte[:limit // 5], yte[:limit // 5]
    print(f"mnist: {source}; {len(xtr)} train, {len(xte)} test", flush=True)
    dev = args.device
    tensors = [(torch.as_tensor(x, dtype=torch.float64, device=dev), torch.as_tensor(y,
                                                                                    device=dev))
               for x, y in ((xtr, ytr), (xte, yte))]
    out = Path(args.out)
    log = MetricsLog(out)
    results, rows = {}, []
    for name in models:
        t0 = time.perf_counter()
        torch.manual_seed(args.seed)
        model = _build(name, xtr.shape[1], args.hidden).to(dev)
        opt = torch.optim.Adam(model.parameters(), lr=args.lr)

        def step_on(xs, ys, model=model):
            def model_step(idx):
                logp = model(xs[idx])
                loss = torch.nn.functional.nll_loss(logp, ys[idx])
                err = (logp.argmax(-1) != ys[idx]).to(torch.float64).mean().item()
                return loss, err, len(idx)
            return model_step

        def batches(n, shuffle):
            order = rng.permutation(n) if shuffle else np.arange(n)
            return [order[i:i + args.batch_size] for i in range(0, n, args.batch_size)]

        history = []
        for epoch in range(1, epochs + 1):
            model.train()
            tr = run_epoch(step_on(*tensors[0]), batches(len(xtr), True),
                           desc=f"{name} epoch {epoch}", train=True, optimizer=opt)
            model.eval()
            te = run_epoch(step_on(*tensors[1]), batches(len(xte), False),
                           desc=f"{name} test {epoch}", train=False)
            log.add(name, epoch, "train", *tr)
            log.add(name, epoch, "test", *te)
            history.append((tr, te))
            print(f"{name} epoch {epoch}: train loss {tr[0]:.4g} error {tr[1]:.4f}, test loss "
                  f"{te[0]:.4g} error {te[1]:.4f} ({tr[2]:.3g} s/batch)", flush=True)
        seconds = time.perf_counter() - t0
        res = {"train_error": history[-1][0][1], "test_error": history[-1][1][1],
               "best_test_error": min(te[1] for _, te in history),
               "unsolved": getattr(model, "unsolved", None), "seconds": seconds,
               "s_per_batch": history[-1][0][2]}
        results[name] = res
        rows.append([name, epochs, res["train_error"], res["test_error"],
                     res["best_test_error"], res["s_per_batch"],
                     "-" if res["unsolved"] is None else res["unsolved"], f"{seconds:.0f}"])

    from ._plots import plot_curves

    plot_curves(out / "metrics.csv", out / "curves.png",
                title=f"FC-OptNet vs FC-FC, {source.split(' (')[0]}")
    write_results(out, "FC600-FC10-OptNet10 vs FC600-FC10-FC10 (OptNet paper, supplementary A)",
                  rows, ["model", "epochs", "train error", "test error", "best test error",
                         "train s/batch", "QPs not solved", "train seconds"])
    total = time.perf_counter() - t_start
    text = f"Data: {source}, {len(xtr)} train / {len(xte)} test images; wall time {total:.0f} s."
    if "optnet" in results and "fc" in results:
        gap = 100 * (results["optnet"]["test_error"] - results["fc"]["test_error"])
        results["gap"] = gap
        text = (f"Final test errors differ by {gap:+.2f} points (OptNet minus FC; the target: "
                f"within 1 point). " + text)
    append_results(out, text)
    results["seconds"] = total
    print(f"mnist: {text} Wrote {out / 'results.md'}, {out / 'curves.png'}", flush=True)
    return results
