"""The denoising experiment (Amos & Kolter, *OptNet*, ICML 2017, section 4.2, Table 1, Fig. 3).

Noisy piecewise-constant signals (:mod:`._denoise_data`) are denoised by

- ``tv``: total variation denoising as a QP (:mod:`._denoise_models`), its
  lambda chosen by a sweep over [0, 100] on the training signals;
- ``fc``: a fully connected network;
- ``optnet``: the pure OptNet layer, a general learned QP (199 variables, 198
  inequalities);
- ``learned_d``: the TV QP with the difference matrix learned from a random
  start (Fig. 3 shows it before and after training);
- ``tuned_tv``: the TV QP initialised at the best TV solution and fine-tuned:
  its lambda and a learned shift-invariant linear map of its input (a symmetric
  convolution kernel, starting at zero), :class:`._denoise_models.TunedTVDenoiser`.

Outputs in ``--out``: ``metrics.csv`` (``error`` is the MSE), ``results.md``
(Table 1 beside the paper's numbers), ``tv_sweep.csv``, ``denoise_curves.png``,
``denoise_lambda_sweep.png``, ``denoise_fig3.png`` and ``learned_d.npz`` (the
learned-D matrix before and after training) and ``tuned_tv.npz`` (the tuned TV
model's lambda before and after, and its learned kernel).
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np

HELP = "Denoising piecewise-constant signals: TV, FC, OptNet, learned D, tuned TV (Table 1)"

MODELS = ("tv", "fc", "optnet", "learned_d", "tuned_tv")
TITLES = {"tv": "Total variation", "fc": "FC net", "optnet": "Pure OptNet",
          "learned_d": "OptNet, learned D", "tuned_tv": "OptNet tuned TV"}
PAPER = {"fc": (18.5, 29.8), "optnet": (52.9, 53.3), "tv": (16.3, 16.5),
         "tuned_tv": (13.8, 14.4)}
"""Table 1 of the paper: (train MSE, test MSE). The learned-D model appears only in Fig. 3."""

QUICK = {"n_signals": 300, "epochs": 2, "fc_epochs": 5, "batch_size": 50, "lambda_grid": 6,
         "lambda_refine": 0.0, "sweep_size": 100, "qp_train_size": 60}
"""Settings ``--quick`` imposes (each where the option was left at its default)."""


def add_arguments(parser):
    """Add the denoising options to ``parser``."""
    from ._common import add_common_arguments

    add_common_arguments(parser, epochs=10, batch_size=100)
    parser.add_argument("--models", type=_model_list, default=list(MODELS),
                        help=f"comma-separated models to run, of {','.join(MODELS)} (default all; "
                             "tuned_tv also runs tv)")
    parser.add_argument("--n-signals", type=_positive("--n-signals", int), default=10000,
                        help="signals generated, the last 10%% held out (default 10000)")
    parser.add_argument("--fc-epochs", type=_positive("--fc-epochs", int), default=100,
                        help="epochs of the FC network (default 100; --epochs is for the QP "
                             "models)")
    parser.add_argument("--model-epochs", type=_int_map, default={},
                        help="epochs per model as model=N,... (default --epochs for the QP "
                             "models, --fc-epochs for fc)")
    parser.add_argument("--lambda-grid", type=_positive("--lambda-grid", int), default=21,
                        help="evenly spaced lambdas in [0, 100] for the TV sweep (default 21)")
    parser.add_argument("--lambda-refine", type=_nonnegative("--lambda-refine"), default=1.0,
                        help="then a finer sweep with this step around the best grid lambda "
                             "(default 1; 0: none)")
    parser.add_argument("--sweep-size", type=_positive("--sweep-size", int), default=None,
                        help="training signals the lambda sweep uses (default all)")
    parser.add_argument("--qp-train-size", type=_positive("--qp-train-size", int), default=None,
                        help="training signals for the optnet, learned_d and tuned_tv models "
                             "(default all; they are the slowest)")
    parser.add_argument("--lr", type=_lr_map, default={},
                        help="learning rates as model=value,... (defaults fc=1e-3, "
                             "optnet=1e-3, learned_d=5e-2, tuned_tv=5e-3)")
    parser.add_argument("--tuned-width", type=_nonnegative_int("--tuned-width"), default=15,
                        help="half-width of the tuned TV model's input kernel (default 15: 31 "
                             "taps)")
    parser.add_argument("--eval-every", type=_positive("--eval-every", int), default=1,
                        help="measure the test MSE every this many epochs, and after the last "
                             "(default 1)")
    parser.add_argument("--tol", type=_positive("--tol", float), default=None,
                        help="QP solver tolerance (default the solver's)")
    parser.add_argument("--append", action="store_true",
                        help="add to the metrics and results already in --out (to run models "
                             "in separate processes) instead of starting afresh")
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing: rebuild results.md and the plots from the files "
                             "in --out")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


LEARNING_RATES = {"fc": 1e-3, "optnet": 1e-3, "learned_d": 5e-2, "tuned_tv": 5e-3}


def _positive(option, kind):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            value = 0
        if not value > 0:
            raise argparse.ArgumentTypeError(f"{option} must be positive, received {text!r}")
        return value
    return parse


def _nonnegative(option):
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            value = -1.0
        if not value >= 0:
            raise argparse.ArgumentTypeError(f"{option} must be >= 0, received {text!r}")
        return value
    return parse


def _nonnegative_int(option):
    def parse(text):
        if not text.strip().isdigit():
            raise argparse.ArgumentTypeError(f"{option} must be an integer >= 0, "
                                             f"received {text!r}")
        return int(text)
    return parse


def _model_list(text):
    names = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in names if t not in MODELS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"--models takes names of {', '.join(MODELS)}; "
                                         f"received {text!r}")
    return names


def _int_map(text):
    out = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        name, _, value = item.partition("=")
        if name not in LEARNING_RATES or not value.isdigit() or int(value) < 1:
            raise argparse.ArgumentTypeError(
                f"--model-epochs takes model=N pairs for {', '.join(LEARNING_RATES)} with "
                f"positive integers N; received {item!r}")
        out[name] = int(value)
    return out


def _lr_map(text):
    out = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        name, _, value = item.partition("=")
        try:
            lr = float(value)
        except ValueError:
            lr = 0.0
        if name not in LEARNING_RATES or not lr > 0:
            raise argparse.ArgumentTypeError(
                f"--lr takes model=value pairs for {', '.join(LEARNING_RATES)} with positive "
                f"values; received {item!r}")
        out[name] = lr
    return out


def _settings(args):
    """The run's settings: the options, with ``--quick``'s where left at their defaults."""
    s = {"n_signals": args.n_signals, "epochs": args.epochs, "fc_epochs": args.fc_epochs,
         "batch_size": args.batch_size, "lambda_grid": args.lambda_grid,
         "lambda_refine": args.lambda_refine, "sweep_size": args.sweep_size,
         "qp_train_size": args.qp_train_size}
    model_epochs = getattr(args, "model_epochs", {})
    if args.quick:
        defaults = {"n_signals": 10000, "epochs": 10, "fc_epochs": 100, "batch_size": 100,
                    "lambda_grid": 21, "lambda_refine": 1.0, "sweep_size": None,
                    "qp_train_size": None}
        for k, v in QUICK.items():
            if s[k] == defaults[k]:
                s[k] = v
    s["model_epochs"] = {"fc": s["fc_epochs"], "optnet": s["epochs"], "learned_d": s["epochs"],
                         "tuned_tv": s["epochs"], **model_epochs}
    return s


# ----------------------------------------------------------------------------- evaluation

def _batches(n, batch_size, rng=None):
    """Index batches of ``range(n)``, shuffled when ``rng`` is given."""
    order = rng.permutation(n) if rng is not None else np.arange(n)
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]


def evaluate(denoise, noisy, clean, batch_size):
    """Mean squared error of ``denoise`` over all samples of all signals.

    Parameters
    ----------
    denoise : callable
        (B, n) tensor -> (B, n) tensor.
    noisy, clean : tensor, shape (N, n)
    batch_size : int

    Returns
    -------
    float
        ``mean((denoise(noisy) - clean)**2)``.
    """
    import torch

    total = 0.0
    with torch.no_grad():
        for idx in _batches(len(noisy), batch_size):
            idx = torch.as_tensor(idx)
            total += float(((denoise(noisy[idx]) - clean[idx]) ** 2).sum())
    return total / clean.numel()


# ----------------------------------------------------------------------------- TV sweep

def lambda_sweep(noisy, clean, lambdas, batch_size, *, tol=None):
    """Training MSE of TV denoising for each lambda.

    Parameters
    ----------
    noisy, clean : tensor, shape (N, n)
    lambdas : sequence of float
        Each >= 0.

    Returns
    -------
    list of (lambda, mse)
    """
    from ._denoise_models import tv_denoise

    return [(float(lam), evaluate(lambda y, lam=lam: tv_denoise(y, lam, tol=tol), noisy, clean,
                                  batch_size)) for lam in lambdas]


def _sweep_lambdas(grid):
    return np.linspace(0.0, 100.0, grid) if grid > 1 else np.array([0.0])


def run_tv_sweep(train, s, tol, show):
    """Coarse grid over [0, 100], then a finer one around its best; returns (sweep, best)."""
    n = len(train[0]) if s["sweep_size"] is None else min(s["sweep_size"], len(train[0]))
    noisy, clean = train[0][:n], train[1][:n]
    sweep = lambda_sweep(noisy, clean, _sweep_lambdas(s["lambda_grid"]), s["batch_size"],
                         tol=tol)
    best = min(sweep, key=lambda r: r[1])[0]
    step = 100.0 / (s["lambda_grid"] - 1) if s["lambda_grid"] > 1 else 100.0
    if s["lambda_refine"] > 0:
        fine = np.arange(max(0.0, best - step), min(100.0, best + step) + 1e-9,
                         s["lambda_refine"])
        done = {round(lam, 9) for lam, _ in sweep}
        fine = [lam for lam in fine if round(float(lam), 9) not in done]
        sweep = sorted(sweep + lambda_sweep(noisy, clean, fine, s["batch_size"], tol=tol))
        best = min(sweep, key=lambda r: r[1])[0]
    if show:
        print(f"TV sweep on {n} training signals: best lambda {best:g}")
    return sweep, best, n


# ----------------------------------------------------------------------------- training

def train_model(name, model, data, s, *, epochs, lr, log, rng, show, train_size=None,
                start=None, eval_every=1):
    """Train ``model`` with Adam on the MSE; log train/test MSE per epoch.

    The epoch's train MSE is the running mean over its minibatches (the
    parameters change during the epoch); the table's train MSE is measured
    afterwards with the final parameters.

    Parameters
    ----------
    data : tuple of tensors
        ``(train_noisy, train_clean, test_noisy, test_clean)``, each (N, n).
    train_size : int, optional
        Use only the first ``train_size`` training signals.
    start : (train_mse, test_mse), optional
        The starting model's MSEs when already known (logged as epoch 0).
    eval_every : int
        Measure the test MSE every this many epochs and after the last.

    Returns
    -------
    dict
        ``train``, ``test`` (final MSEs), ``n_train``, ``epochs``, ``seconds``.
    """
    import torch

    from ._common import run_epoch

    tr_y, tr_x, te_y, te_x = data
    if train_size is not None:
        tr_y, tr_x = tr_y[:train_size], tr_x[:train_size]
    bs = s["batch_size"]
    t0 = time.perf_counter()
    if start is None:
        log.add(name, 0, "test", *([evaluate(model, te_y, te_x, bs)] * 2), 0.0)
    else:
        for split, mse in zip(("train", "test"), start):
            log.add(name, 0, split, mse, mse, 0.0)
    opt = torch.optim.Adam(model.parameters(), lr=lr)

    def step(idx):
        idx = torch.as_tensor(idx)
        loss = ((model(tr_y[idx]) - tr_x[idx]) ** 2).mean()
        return loss, float(loss.detach()), len(idx)

    for epoch in range(1, epochs + 1):
        loss, err, sec = run_epoch(step, _batches(len(tr_y), bs, rng), train=True,
                                   optimizer=opt, desc=f"{name} epoch {epoch}", show=show)
        log.add(name, epoch, "train", loss, err, sec)
        if epoch % eval_every and epoch != epochs:
            if show:
                print(f"{name} epoch {epoch}: train MSE {err:.4g} (running)")
            continue
        tsec = time.perf_counter()
        test = evaluate(model, te_y, te_x, bs)
        tsec = (time.perf_counter() - tsec) / max(1, -(-len(te_y) // bs))
        log.add(name, epoch, "test", test, test, tsec)
        if show:
            print(f"{name} epoch {epoch}: train MSE {err:.4g} (running), test MSE {test:.4g}")
    train = evaluate(model, tr_y, tr_x, bs)
    return {"train": train, "test": test if epochs else evaluate(model, te_y, te_x, bs),
            "n_train": len(tr_y), "epochs": epochs, "seconds": time.perf_counter() - t0}


# ----------------------------------------------------------------------------- outputs

def sorted_rows(M):
    """Rows of ``M`` ordered by the column of their largest-magnitude entry (Fig. 3)."""
    M = np.asarray(M)
    return M[np.argsort(np.argmax(np.abs(M), axis=1), kind="stable")]


def plot_fig3(before, after, out_png):
    """Fig. 3: the learned D before and after training, rows ordered, as images."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(8, 3.6), dpi=100)
    for ax, M, title in zip(axes, (before, after), ("initial D (random)", "learned D")):
        M = sorted_rows(M)
        lim = float(np.abs(M).max()) or 1.0
        im = ax.imshow(M, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto",
                       interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("column")
        ax.set_ylabel("row (ordered by largest entry)")
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    out_png = Path(out_png)
    fig.savefig(out_png)
    plt.close(fig)
    return out_png


def plot_sweep(sweep, best, out_png):
    """Training MSE of TV denoising against lambda, the best lambda marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lam, mse = zip(*sweep)
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=100)
    ax.plot(lam, mse, ".-")
    ax.axvline(best, color="C3", ls=":", label=f"best lambda = {best:g}")
    ax.set_xlabel("lambda")
    ax.set_ylabel("train MSE")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Total variation: lambda sweep", fontsize=10)
    fig.tight_layout()
    fig.savefig(out_png)
    plt.close(fig)
    return Path(out_png)


def write_table(out, rows, settings):
    """``results.md``: Table 1 beside the paper's numbers, from the stored rows."""
    from ._common import append_results, write_results

    table = []
    for name in MODELS:
        if name not in rows:
            continue
        r = rows[name]
        paper = PAPER.get(name, ("-", "-"))
        detail = (f"lambda = {r['lambda']:g}" if name == "tv" else
                  f"{r['epochs']} epochs")
        if name == "tuned_tv" and "width" in r:
            detail += f", {2 * r['width'] + 1}-tap kernel, lambda {r['lambda']:.4g}"
        table.append([TITLES[name], r["train"], r["test"], *paper,
                      f"{r['n_train']} train signals, {detail}", f"{r['seconds']:.0f}"])
    write_results(out, "Denoising (OptNet paper, Table 1)", table,
                  ["Method", "Train MSE", "Test MSE", "Paper train", "Paper test", "Setting",
                   "Wall s"])
    notes = [f"Signals: {settings['n_signals']} generated (last 10% held out, "
             f"{rows.get('_n_test', '?')} test signals; the test MSE is over all of them)."]
    if "tv" in rows and "tuned_tv" in rows:
        gain = 100 * (1 - rows["tuned_tv"]["test"] / rows["tv"]["test"])
        where = "below" if gain >= 0 else "above"
        notes.append(f"Tuned TV test MSE {abs(gain):.1f}% {where} TV's (the paper: "
                     f"{100 * (1 - PAPER['tuned_tv'][1] / PAPER['tv'][1]):.1f}% below).")
    if "tv" in rows:
        notes.append(f"TV lambda from a sweep on {rows['tv']['sweep_size']} training signals "
                     f"(the paper: about 13).")
    append_results(out, "\n".join(f"- {n}" for n in notes))


# ----------------------------------------------------------------------------- run

def run(args):
    """Run the denoising experiment; returns the headline numbers.

    Returns
    -------
    dict
        ``best_lambda`` (when ``tv`` ran) and, per model run, ``<model>_train`` and
        ``<model>_test`` (MSE), plus ``out`` (the output folder).
    """
    import torch

    from . import _denoise_data, _denoise_models
    from ._common import MetricsLog, seed_everything

    if args.report_only:
        return report(args.out)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.device != "cpu" and not args.device.startswith("cuda"):
        raise ValueError(f"--device must be cpu or cuda[:k], received {args.device!r}")
    s = _settings(args)
    rows_path = out / "denoise_rows.json"
    stored = json.loads(rows_path.read_text()) if args.append and rows_path.exists() else {}
    # tuned_tv starts from the TV solution: run the sweep unless --append finds it stored.
    need_tv = "tuned_tv" in args.models and "tv" not in stored
    models = list(dict.fromkeys((["tv"] if need_tv else []) + args.models))
    models = [m for m in MODELS if m in models]
    lr = {**LEARNING_RATES, **args.lr}
    show = not args.no_progress
    rng = seed_everything(args.seed)
    device = torch.device(args.device)

    signals = _denoise_data.generate(s["n_signals"], seed=args.seed)
    train, test = _denoise_data.split(signals)

    def tensor(a):
        return torch.as_tensor(a, dtype=torch.float64, device=device)

    data = (tensor(train.noisy), tensor(train.clean), tensor(test.noisy), tensor(test.clean))
    log = MetricsLog(out, fresh=not args.append)
    if not args.append:
        rows_path.unlink(missing_ok=True)
    rows = {}
    rows["_n_test"] = len(test)
    rows["_settings"] = {"n_signals": s["n_signals"]}
    mine = {"_n_test", "_settings"}
    result = {"out": str(out)}
    bs = s["batch_size"]
    qp_size = s["qp_train_size"]

    def save(name, r):
        if rows_path.exists():
            # Other processes (--append) may have stored their models since this one started.
            rows.update({k: v for k, v in json.loads(rows_path.read_text()).items()
                         if k not in mine})
        rows[name] = r
        mine.add(name)
        result[f"{name}_train"], result[f"{name}_test"] = r["train"], r["test"]
        rows_path.write_text(json.dumps(rows, indent=1))
        write_table(out, rows, s)

    best = stored["tv"]["lambda"] if "tv" in stored else None
    if "tv" in models:
        t0 = time.perf_counter()
        sweep, best, n_sweep = run_tv_sweep(data[:2], s, args.tol, show)
        with open(out / "tv_sweep.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["lambda", "train_mse"])
            w.writerows([f"{lam:g}", f"{m:.6g}"] for lam, m in sweep)
        tv = lambda y: _denoise_models.tv_denoise(y, best, tol=args.tol)  # noqa: E731
        tr, te = evaluate(tv, data[0], data[1], bs), evaluate(tv, data[2], data[3], bs)
        log.add("tv", 0, "train", tr, tr, 0.0)
        log.add("tv", 0, "test", te, te, 0.0)
        result["best_lambda"] = best
        save("tv", {"train": tr, "test": te, "lambda": best, "n_train": len(train),
                    "sweep_size": n_sweep, "epochs": 0, "seconds": time.perf_counter() - t0})
        if show:
            print(f"TV lambda {best:g}: train MSE {tr:.4g}, test MSE {te:.4g}")

    n = data[0].shape[1]
    epochs = s["model_epochs"]

    def fit(name, model, **kw):
        return train_model(name, model, data, s, epochs=epochs[name], lr=lr[name], log=log,
                           rng=rng, show=show, eval_every=args.eval_every, **kw)

    if "fc" in models:
        save("fc", fit("fc", _denoise_models.FCDenoiser(n).to(device)))
    if "optnet" in models:
        model = _denoise_models.OptNetDenoiser(n, 2 * n - 1, 2 * (n - 1), tol=args.tol)
        save("optnet", fit("optnet", model.to(device), train_size=qp_size))
    if "learned_d" in models:
        # The random start has entries of the size of the tuned difference matrix's
        # row norm (lambda * sqrt(2), lambda about 13), so that the penalty starts
        # neither negligible nor overwhelming.
        gen = torch.Generator().manual_seed(args.seed + 1)
        M0 = _denoise_models.random_matrix(n - 1, n, 13.0 * 2 ** 0.5, generator=gen)
        model = _denoise_models.TVDenoiser(M0.to(device), tol=args.tol)
        r = fit("learned_d", model, train_size=qp_size)
        np.savez(out / "learned_d.npz", before=M0.numpy(), after=model.M.detach().cpu().numpy())
        save("learned_d", r)
    if "tuned_tv" in models:
        model = _denoise_models.TunedTVDenoiser(best, n, width=getattr(args, "tuned_width", 15),
                                                tol=args.tol).to(device)
        tv_row = rows.get("tv", stored.get("tv"))
        # The start's train MSE is TV's over all training signals; with --qp-train-size the
        # model's training signals are a subset, so it is measured again there.
        start = (tv_row["train"] if qp_size is None or qp_size >= len(train) else
                 evaluate(model, data[0][:qp_size], data[1][:qp_size], bs), tv_row["test"])
        r = fit("tuned_tv", model, start=start, train_size=qp_size)
        r["lambda"] = float(model.lam.detach())
        r["width"] = model.width
        np.savez(out / "tuned_tv.npz", lambda_before=best, lambda_after=r["lambda"],
                 kernel=model.kernel().detach().cpu().numpy())
        save("tuned_tv", r)
        result["tuned_tv_gain_percent"] = 100 * (1 - r["test"] / tv_row["test"])

    make_plots(out)
    return result


def make_plots(out):
    """The curves, and (where their files are in ``out``) the sweep and Fig. 3."""
    from ._plots import plot_curves

    out = Path(out)
    plot_curves(out / "metrics.csv", out / "denoise_curves.png", metric="error",
                title="Denoising: MSE per epoch (train dashed, test solid)")
    if (out / "tv_sweep.csv").exists():
        with open(out / "tv_sweep.csv", newline="") as f:
            sweep = [(float(r["lambda"]), float(r["train_mse"])) for r in csv.DictReader(f)]
        plot_sweep(sweep, min(sweep, key=lambda r: r[1])[0], out / "denoise_lambda_sweep.png")
    if (out / "learned_d.npz").exists():
        with np.load(out / "learned_d.npz", allow_pickle=False) as f:
            plot_fig3(f["before"], f["after"], out / "denoise_fig3.png")


def report(out):
    """Rebuild ``results.md`` and the plots from the files a run left in ``out``.

    Returns
    -------
    dict
        ``<model>_train`` and ``<model>_test`` for the models stored there.
    """
    out = Path(out)
    path = out / "denoise_rows.json"
    if not path.exists():
        raise ValueError(f"{path} not found: --report-only needs the output folder of a run")
    rows = json.loads(path.read_text())
    write_table(out, rows, rows.get("_settings", {"n_signals": "?"}))
    make_plots(out)
    result = {"out": str(out)}
    for name in MODELS:
        if name in rows:
            result[f"{name}_train"], result[f"{name}_test"] = (rows[name]["train"],
                                                                 rows[name]["test"])
    return result
