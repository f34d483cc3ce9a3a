"""``optnet sudoku``: learn 4x4 Sudoku from puzzles and solutions (Amos & Kolter 2017, sec. 4.4).

The OptNet model is the paper's: one QP layer over the 64 one-hot variables of a
board (16 cells x 4 digits),

    minimize_z  1/2 z' (0.1 I) z - puzzle' z   s.t.  A z = b,  z >= 0,

with the equality constraints ``A`` (40 x 64; 40 is the rank of the true Sudoku
constraint matrix) and ``b = A exp(log_z0)`` learned, so that the strictly
positive ``exp(log_z0)`` keeps every problem feasible. It never sees the rules of
Sudoku: they have to be learned into ``A`` from examples. The baselines are the
paper's convolutional net and a fully connected net. All are trained on the MSE
between their output (the QP's solution; the baselines' per-cell softmax) and the
one-hot solution; the error is the share of boards with any cell wrong.

After training, ``results.md`` says how close the learned ``A``'s row space is to
the true constraints' (principal angles), and how many QPs were not SOLVED.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from . import _sudoku_data as data
from ._common import (
    MetricsLog,
    add_common_arguments,
    append_results,
    load_npz,
    run_epoch,
    seed_everything,
    write_results,
)

HELP = "4x4 Sudoku: OptNet learns the constraints, vs a conv net and an FC net (Fig. 5)"

MODELS = ("optnet", "conv", "fc")
N_VARS = 64
N_EQ = 40  # rank of the true Sudoku constraint matrix (tests check it)
# --quick: 3000 puzzles and 6 epochs rather than fewer, because OptNet needs about a
# hundred Adam steps of batch 150 to learn the constraints (with 1000 puzzles and 3
# epochs its test error is still above 90%); about a minute on one CPU core.
QUICK = {"n_puzzles": 3000, "epochs": 6, "conv_width": 128,
         "conv_layers": 6, "fc_width": 256, "batch_size": 150}


def add_arguments(parser):
    """The Sudoku experiment's options (the common ones and the models')."""
    add_common_arguments(parser, epochs=5, batch_size=150)
    parser.add_argument("--data", metavar="FILE.npz", type=Path,
                        help="load puzzles from an npz with 'features' and 'labels', both "
                             "(N, 4, 4, 4) one-hot (blank cells all zeros), instead of "
                             "generating them")
    parser.add_argument("--n-puzzles", type=int, default=10000,
                        help="puzzles to generate (default 10000; --quick 3000); the last "
                             "10%% are the test set")
    parser.add_argument("--models", default=",".join(MODELS),
                        help="comma-separated models to train (default optnet,conv,fc)")
    parser.add_argument("--framework", choices=["torch", "jax"], default="torch",
                        help="train the OptNet model with optnet.torch + torch.optim.Adam "
                             "(default) or optnet.jax + optax.adam")
    parser.add_argument("--baseline-epochs", type=int, default=None,
                        help="epochs of the conv and FC nets (default: --epochs)")
    parser.add_argument("--lr", type=float, default=0.1, help="OptNet's Adam rate (default 0.1)")
    parser.add_argument("--lr-decay", type=float, default=1.0,
                        help="multiply OptNet's rate by this after each epoch (default 1: the "
                             "paper's constant rate)")
    parser.add_argument("--baseline-lr", type=float, default=1e-3,
                        help="the baselines' Adam rate (default 1e-3)")
    parser.add_argument("--conv-width", type=int, default=512,
                        help="filters per conv layer (default 512; --quick 128)")
    parser.add_argument("--conv-layers", type=int, default=10,
                        help="3x3 conv layers of --conv-width filters before the output "
                             "layer to 4 channels (default 10; --quick 6)")
    parser.add_argument("--fc-width", type=int, default=512,
                        help="units of the FC net's two hidden layers (default 512)")


def _settings(args):
    """The run's settings: the options, with --quick's smaller values for those left at
    their defaults (``--quick --epochs 2`` trains 2 epochs)."""
    s = {k: getattr(args, k) for k in ("n_puzzles", "epochs", "baseline_epochs", "conv_width",
                                       "conv_layers", "fc_width", "batch_size")}
    if args.quick:
        defaults = {"n_puzzles": 10000, "epochs": 5, "conv_width": 512, "conv_layers": 10,
                    "fc_width": 512, "batch_size": 150}
        for k, v in QUICK.items():
            if s[k] == defaults[k]:
                s[k] = v
    if s["baseline_epochs"] is None:
        s["baseline_epochs"] = s["epochs"]
    for k in ("n_puzzles", "conv_width", "conv_layers", "fc_width"):
        if s[k] < 1:
            raise ValueError(f"--{k.replace('_', '-')} must be positive, received {s[k]}")
    if not 0 < args.lr_decay <= 1:
        raise ValueError(f"--lr-decay must be in (0, 1], received {args.lr_decay}")
    if s["baseline_epochs"] < 0:
        raise ValueError(f"--baseline-epochs must be >= 0, received {s['baseline_epochs']}")
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    bad = [m for m in models if m not in MODELS]
    if bad or not models:
        raise ValueError(f"--models must be a comma-separated subset of {','.join(MODELS)}, "
                         f"received {args.models!r}")
    s["models"] = models
    s["lr"], s["lr_decay"] = args.lr, args.lr_decay
    return s


def load_puzzles(path):
    """Puzzles from an npz: ``features`` and ``labels``, both (N, 4, 4, 4) one-hot.

    Raises
    ------
    ValueError
        Naming the file and key when a key is missing, a shape or dtype is wrong, a
        label cell is not one-hot, a feature cell is neither one-hot nor blank, or a
        given disagrees with its label.
    """
    arrays = load_npz(path, {"features": (("N", 4, 4, 4), "fiub"),
                             "labels": (("N", 4, 4, 4), "fiub")})
    features = arrays["features"].astype(np.float32)
    labels = arrays["labels"].astype(np.float32)
    for key, arr, blanks in (("features", features, True), ("labels", labels, False)):
        sums = arr.sum(-1)
        binary = np.isin(arr, (0.0, 1.0)).all()
        ok = np.isin(sums, (0.0, 1.0) if blanks else (1.0,)).all()
        if not (binary and ok):
            want = "one-hot or all zeros (blank)" if blanks else "one-hot"
            raise ValueError(f"{path}: key {key!r}: every cell (last axis) must be {want}; "
                             f"received values {np.unique(arr)[:5]} and cell sums "
                             f"{np.unique(sums)[:5]}")
    if features.shape[0] == 0:
        raise ValueError(f"{path}: keys 'features' and 'labels' hold no puzzles")
    if (features > labels).any():
        raise ValueError(f"{path}: key 'features' has givens that disagree with 'labels'")
    return features, labels


def board_errors(pred, labels):
    """Per board: 1.0 if any cell's argmax differs from the label's, else 0.0.

    Parameters
    ----------
    pred, labels : (B, 4, 4, 4) arrays or tensors (digit last).
    """
    wrong = pred.argmax(-1) != labels.argmax(-1)
    return wrong.reshape(wrong.shape[0], -1).any(-1)


def principal_angles(A_learned):
    """Principal angles (degrees) between the row spaces of the learned and the true ``A``.

    Returns
    -------
    (k,) float array, largest first; k = min(rank of the learned A, 40).
    """
    from scipy.linalg import subspace_angles

    true = data.constraint_matrix()
    return np.degrees(subspace_angles(np.asarray(A_learned, dtype=np.float64).T, true.T))


# --------------------------------------------------------------------------- torch models


def _torch_models():
    """The torch model classes (torch imported only when a model is built)."""
    import torch
    from torch import nn

    import optnet.torch

    class SudokuOptNet(nn.Module):
        """The paper's Sudoku OptNet: a QP over the 64 one-hot variables, learned ``A`` and z0."""

        def __init__(self, generator):
            super().__init__()
            kw = {"dtype": torch.float64}
            self.A = nn.Parameter(torch.rand(N_EQ, N_VARS, generator=generator, **kw))
            self.log_z0 = nn.Parameter(torch.zeros(N_VARS, **kw))
            self.register_buffer("Q", 0.1 * torch.eye(N_VARS, **kw))
            self.register_buffer("G", -torch.eye(N_VARS, **kw))
            self.register_buffer("h", torch.zeros(N_VARS, **kw))
            self.unsolved = 0

        def forward(self, puzzles):
            q = -puzzles.reshape(-1, N_VARS).to(torch.float64)
            b = self.A @ torch.exp(self.log_z0)
            x, status = optnet.torch.solve(self.Q, q, self.G, self.h, self.A, b, status=True)
            self.unsolved += int((status != int(optnet.Status.SOLVED)).sum())
            return x.reshape(puzzles.shape)

    class SudokuConv(nn.Module):
        """The paper's conv net: 3x3 conv layers (padding 1) with ReLU, then 3x3 to 4 channels."""

        def __init__(self, width, layers):
            super().__init__()
            mods, c = [], 4
            for _ in range(layers):
                mods += [nn.Conv2d(c, width, 3, padding=1), nn.ReLU()]
                c = width
            mods.append(nn.Conv2d(c, 4, 3, padding=1))
            self.net = nn.Sequential(*mods)

        def forward(self, puzzles):
            # Digits as channels: (B, r, c, d) -> (B, d, r, c) and back; softmax over digits.
            logits = self.net(puzzles.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
            return torch.softmax(logits, -1)

    class SudokuFC(nn.Module):
        """A fully connected net: 64 -> width -> width -> 64, ReLU, softmax per cell."""

        def __init__(self, width):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(N_VARS, width), nn.ReLU(), nn.Linear(width, width),
                                     nn.ReLU(), nn.Linear(width, N_VARS))

        def forward(self, puzzles):
            logits = self.net(puzzles.reshape(-1, N_VARS)).reshape(puzzles.shape)
            return torch.softmax(logits, -1)

    return SudokuOptNet, SudokuConv, SudokuFC


def _batches(n, batch_size, rng=None):
    """Index arrays of the minibatches of ``range(n)``, shuffled when ``rng`` is given."""
    order = rng.permutation(n) if rng is not None else np.arange(n)
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]


def _train_torch(name, model, lr, epochs, split, s, rng, log, device, show, lr_decay=1.0):
    """Train one torch model, logging each epoch; returns its per-epoch records."""
    import torch

    (xtr, ytr), (xte, yte) = ((torch.as_tensor(x, device=device), torch.as_tensor(y, device=device))
                              for x, y in split)
    model = model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=lr_decay)

    def step(xs, ys):
        def model_step(idx):
            pred = model(xs[idx])
            target = ys[idx].to(pred.dtype)
            loss = torch.nn.functional.mse_loss(pred, target)
            err = board_errors(pred.detach(), target).to(torch.float64).mean().item()
            return loss, err, len(idx)
        return model_step

    records = []

    def evaluate(epoch, train_stats=None):
        rec = {"epoch": epoch}
        if train_stats is not None:
            rec["train"] = train_stats
            log.add(name, epoch, "train", *train_stats)
        model.eval()
        before = getattr(model, "unsolved", 0)
        rec["test"] = run_epoch(step(xte, yte), _batches(len(xte), s["batch_size"]),
                                desc=f"{name} test {epoch}", train=False, show=show)
        rec["unsolved_test"] = getattr(model, "unsolved", 0) - before
        log.add(name, epoch, "test", *rec["test"])
        model.train()
        records.append(rec)
        _print_epoch(name, rec)

    evaluate(0)
    for epoch in range(1, epochs + 1):
        before = getattr(model, "unsolved", 0)
        stats = run_epoch(step(xtr, ytr), _batches(len(xtr), s["batch_size"], rng),
                          desc=f"{name} epoch {epoch}", train=True, optimizer=opt, show=show)
        unsolved_train = getattr(model, "unsolved", 0) - before
        schedule.step()
        evaluate(epoch, stats)
        records[-1]["unsolved_train"] = unsolved_train
    return records, model


def _print_epoch(name, rec):
    parts = [f"{name} epoch {rec['epoch']}:"]
    if "train" in rec:
        parts.append(f"train loss {rec['train'][0]:.4g} error {rec['train'][1]:.4f}")
    parts.append(f"test loss {rec['test'][0]:.4g} error {rec['test'][1]:.4f}"
                 f" ({rec['test'][2]:.3g} s/batch)")
    print(" ".join(parts), flush=True)


# --------------------------------------------------------------------------- JAX OptNet


def _train_jax(split, s, lr, rng, log, seed, show, lr_decay=1.0):
    """Train the same OptNet model with ``optnet.jax.solve`` and optax's Adam (float64)."""
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import optax

    import optnet
    import optnet.jax

    Q = 0.1 * jnp.eye(N_VARS)
    G = -jnp.eye(N_VARS)
    h = jnp.zeros(N_VARS)
    key = jax.random.key(seed)
    params = {"A": jax.random.uniform(key, (N_EQ, N_VARS), dtype=jnp.float64),
              "log_z0": jnp.zeros(N_VARS)}
    steps_per_epoch = -(-len(split[0][0]) // s["batch_size"])
    opt = optax.adam(optax.exponential_decay(lr, steps_per_epoch, lr_decay, staircase=True))
    state = opt.init(params)

    def forward(p, puzzles):
        q = -puzzles.reshape(-1, N_VARS)
        b = p["A"] @ jnp.exp(p["log_z0"])
        x, status = optnet.jax.solve(Q, q, G, h, p["A"], b, status=True)
        return x.reshape(puzzles.shape), status

    def loss_fn(p, puzzles, labels):
        pred, status = forward(p, puzzles)
        return jnp.mean((pred - labels) ** 2), (pred, status)

    @jax.jit
    def train_step(p, st, puzzles, labels):
        (loss, (pred, status)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            p, puzzles, labels)
        updates, st = opt.update(grads, st, p)
        return optax.apply_updates(p, updates), st, loss, pred, status

    @jax.jit
    def eval_step(p, puzzles, labels):
        loss, (pred, status) = loss_fn(p, puzzles, labels)
        return loss, pred, status

    (xtr, ytr), (xte, yte) = ((jnp.asarray(x, jnp.float64), jnp.asarray(y, jnp.float64))
                              for x, y in split)
    solved = int(optnet.Status.SOLVED)
    holder = {"params": params, "state": state, "unsolved": 0}

    def make_step(xs, ys, train):
        def model_step(idx):
            if train:
                holder["params"], holder["state"], loss, pred, status = train_step(
                    holder["params"], holder["state"], xs[idx], ys[idx])
            else:
                loss, pred, status = eval_step(holder["params"], xs[idx], ys[idx])
            holder["unsolved"] += int(np.sum(np.asarray(status) != solved))
            err = float(np.mean(board_errors(np.asarray(pred), np.asarray(ys[idx]))))
            return float(loss), err, len(idx)
        return model_step

    records = []
    for epoch in range(0, s["epochs"] + 1):
        rec = {"epoch": epoch}
        if epoch > 0:
            before = holder["unsolved"]
            rec["train"] = run_epoch(make_step(xtr, ytr, True),
                                     _batches(len(xtr), s["batch_size"], rng),
                                     desc=f"optnet-jax epoch {epoch}", train=True, show=show)
            rec["unsolved_train"] = holder["unsolved"] - before
            log.add("optnet-jax", epoch, "train", *rec["train"])
        before = holder["unsolved"]
        rec["test"] = run_epoch(make_step(xte, yte, False), _batches(len(xte), s["batch_size"]),
                                desc=f"optnet-jax test {epoch}", train=False, show=show)
        rec["unsolved_test"] = holder["unsolved"] - before
        log.add("optnet-jax", epoch, "test", *rec["test"])
        records.append(rec)
        _print_epoch("optnet-jax", rec)
    return records, np.asarray(holder["params"]["A"])


# --------------------------------------------------------------------------- the command


def run(args):
    """Generate or load the puzzles, train the models, write metrics, results and plots.

    Returns
    -------
    dict
        ``{model: {"test_error": final, "train_error": final, "epochs": n}}``, with
        ``"unsolved"`` (QPs not SOLVED over the run) and ``"angles_deg"`` (largest
        and mean principal angle) for the OptNet model, and ``"seconds"`` (wall time).
    """
    t_start = time.perf_counter()
    s = _settings(args)
    out = Path(args.out)
    show = not getattr(args, "no_progress", False)
    rng = seed_everything(args.seed)
    if args.data is not None:
        features, labels = load_puzzles(args.data)
        source = f"loaded from {args.data}"
    else:
        features, labels = data.generate(s["n_puzzles"], rng)
        source = f"{s['n_puzzles']} generated puzzles (seed {args.seed})"
    n_test = max(1, len(features) // 10)
    if len(features) - n_test < 1:
        raise ValueError(f"need at least 2 puzzles (one to train on), received {len(features)}")
    split = ((features[:-n_test], labels[:-n_test]), (features[-n_test:], labels[-n_test:]))
    print(f"sudoku: {source}; {len(features) - n_test} train, {n_test} test", flush=True)

    log = MetricsLog(out)
    results, summary_rows = {}, []
    angles_text = ""
    epoch_rows = []
    for name in s["models"]:
        t0 = time.perf_counter()
        if name == "optnet" and args.framework == "jax":
            name = "optnet-jax"
            records, A = _train_jax(split, s, args.lr, rng, log, args.seed, show,
                                    args.lr_decay)
        else:
            import torch

            SudokuOptNet, SudokuConv, SudokuFC = _torch_models()
            gen = torch.Generator().manual_seed(args.seed)
            if name == "optnet":
                model, lr, epochs = SudokuOptNet(gen), args.lr, s["epochs"]
            elif name == "conv":
                model = SudokuConv(s["conv_width"], s["conv_layers"])
                lr, epochs = args.baseline_lr, s["baseline_epochs"]
            else:
                model, lr, epochs = SudokuFC(s["fc_width"]), args.baseline_lr, s["baseline_epochs"]
            records, model = _train_torch(name, model, lr, epochs, split, s, rng, log,
                                          args.device, show,
                                          args.lr_decay if name == "optnet" else 1.0)
            A = model.A.detach().cpu().numpy() if name == "optnet" else None
        seconds = time.perf_counter() - t0
        last = records[-1]
        res = {"test_error": last["test"][1], "test_loss": last["test"][0],
               "train_error": last["train"][1] if "train" in last else float("nan"),
               "epochs": last["epoch"], "seconds": seconds}
        if name.startswith("optnet"):
            res["unsolved"] = sum(r.get("unsolved_train", 0) + r["unsolved_test"]
                                  for r in records)
            res["unsolved_per_epoch"] = [(r["epoch"], r.get("unsolved_train", 0),
                                          r["unsolved_test"]) for r in records]
            ang = principal_angles(A)
            ang0 = principal_angles(_initial_A(args, name))
            res["angles_deg"] = (float(ang.max()), float(ang.mean()))
            np.save(out / f"{name}_A.npy", A)
            angles_text = (
                f"Learned A vs the true Sudoku constraints (40-dimensional row spaces in R^64): "
                f"principal angles largest {ang.max():.2f} deg, mean {ang.mean():.2f} deg, "
                f"median {np.median(ang):.2f} deg, {int(np.sum(ang < 1.0))} of {len(ang)} "
                f"below 1 deg (the initial random A: largest {ang0.max():.2f}, "
                f"mean {ang0.mean():.2f} deg).")
            for r in records:
                tr = r.get("train", (float("nan"),) * 3)
                epoch_rows.append([name, r["epoch"], tr[1], r["test"][1],
                                   r.get("unsolved_train", 0), r["unsolved_test"]])
        results[name] = res
        summary_rows.append([name, res["epochs"], res["train_error"], res["test_error"],
                             res["test_loss"], last["test"][2], res.get("unsolved", "-"),
                             f"{seconds:.0f}"])
        print(f"{name}: test error {res['test_error']:.4f} after {res['epochs']} epochs "
              f"({seconds:.0f} s)" + (f", QPs not solved: {res['unsolved']}"
                                      if "unsolved" in res else ""), flush=True)
        # Written after each model, so that a long run's finished models are on disk.
        total = time.perf_counter() - t_start
        _write_outputs(out, summary_rows, epoch_rows, angles_text, source, s, total,
                       f"4x4 Sudoku ({len(features) - n_test} train / {n_test} test)")
    results["seconds"] = total
    print(f"sudoku: wrote {out / 'results.md'}, {out / 'curves.png'} ({total:.0f} s)")
    return results


def _write_outputs(out, summary_rows, epoch_rows, angles_text, source, s, total, title):
    """Write the curves plot and ``results.md`` for the models trained so far."""
    from ._plots import plot_curves

    plot_curves(out / "metrics.csv", out / "curves.png", title=title)
    write_results(out, "4x4 Sudoku (OptNet paper, section 4.4)", summary_rows,
                  ["model", "epochs", "train error", "test error", "test loss",
                   "test s/batch", "QPs not solved", "train seconds"])
    if epoch_rows:
        table = ["| model | epoch | train error | test error | QPs not solved (train) | "
                 "QPs not solved (test) |", "|---|---|---|---|---|---|"]
        table += ["| " + " | ".join(f"{v:.4g}" if isinstance(v, float) else str(v)
                                    for v in row) + " |" for row in epoch_rows]
        append_results(out, "Per epoch (epoch 0: before training; train columns are the "
                            "running means over the epoch):\n\n" + "\n".join(table))
        append_results(out, angles_text)
    append_results(out, f"Data: {source}. Settings: batch {s['batch_size']}, OptNet Adam rate "
                        f"{s['lr']} (x {s['lr_decay']} per epoch), conv "
                        f"{s['conv_layers']} x {s['conv_width']} filters, FC width "
                        f"{s['fc_width']}; wall time {total:.0f} s.")


def _initial_A(args, name):
    """The OptNet model's initial ``A`` (same seed), for the principal-angle comparison."""
    if name == "optnet-jax":
        import jax

        return np.asarray(jax.random.uniform(jax.random.key(args.seed), (N_EQ, N_VARS),
                                             dtype="float64"))
    import torch

    gen = torch.Generator().manual_seed(args.seed)
    return torch.rand(N_EQ, N_VARS, generator=gen, dtype=torch.float64).numpy()
