"""Shared pieces of the experiments: options, seeding, the metrics log, epochs, results, data.

Every experiment writes to one output folder (``--out``, default ``runs/<name>``):

- ``metrics.csv``, one row per model, epoch and split, columns exactly
  ``model,epoch,split,loss,error,seconds`` (``error`` a fraction, or the MSE
  for denoising; ``seconds`` the mean seconds per batch);
- ``results.md``, a markdown table of the headline numbers;
- PNG plots (:mod:`optnet.experiments._plots`).
"""

from __future__ import annotations

import csv
import os
import random
import time
from pathlib import Path

import numpy as np

METRICS_COLUMNS = ("model", "epoch", "split", "loss", "error", "seconds")


def add_common_arguments(parser, *, epochs, batch_size):
    """Add ``--epochs --batch-size --seed --device --out --quick`` to ``parser``.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The experiment's subparser; its ``prog`` ends with the experiment's name,
        which gives the default ``--out runs/<name>``.
    epochs, batch_size : int
        The experiment's defaults (the paper's settings).
    """
    name = parser.prog.split()[-1]
    parser.add_argument("--epochs", type=_positive_int("--epochs"), default=epochs,
                        help=f"training epochs (default {epochs})")
    parser.add_argument("--batch-size", type=_positive_int("--batch-size"), default=batch_size,
                        help=f"minibatch size (default {batch_size})")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--out", metavar="DIR", type=Path, default=Path("runs") / name,
                        help=f"output folder for metrics.csv, results.md and plots "
                             f"(default runs/{name})")
    parser.add_argument("--quick", action="store_true",
                        help="a small, fast version of the experiment (about a minute on a CPU)")


def _positive_int(option):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = 0
        if value < 1:
            import argparse

            raise argparse.ArgumentTypeError(f"{option} must be a positive integer, "
                                             f"received {text!r}")
        return value
    return parse


def seed_everything(seed):
    """Seed Python's, NumPy's and torch's generators; make torch deterministic on CPU.

    Also honours ``OMP_NUM_THREADS`` for torch's intra-op threads, so that
    background runs on a shared machine use the cores they were given.

    Returns
    -------
    numpy.random.Generator
        A generator seeded with ``seed``, for the experiment's own NumPy draws.
    """
    random.seed(seed)
    # The legacy global generator too: scikit-learn and others draw from it by default.
    np.random.seed(seed % 2**32)  # noqa: NPY002
    try:
        import torch
    except ModuleNotFoundError:
        return np.random.default_rng(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    threads = os.environ.get("OMP_NUM_THREADS")
    if threads and threads.isdigit() and int(threads) > 0:
        torch.set_num_threads(int(threads))
    return np.random.default_rng(seed)


class MetricsLog:
    """Appends rows to ``out_dir/metrics.csv`` (created with its header if absent).

    Parameters
    ----------
    out_dir : str or Path
        The experiment's output folder (created if needed).
    fresh : bool
        Start a new file (default), or append to an existing one.
    """

    def __init__(self, out_dir, *, fresh=True):
        self.path = Path(out_dir) / "metrics.csv"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if fresh or not self.path.exists():
            with open(self.path, "w", newline="") as f:
                csv.writer(f).writerow(METRICS_COLUMNS)

    def add(self, model, epoch, split, loss, error, seconds):
        """Append one row: ``model`` name, ``epoch`` (int), ``split`` ("train"/"test"),
        mean ``loss``, mean ``error`` (a fraction; MSE for denoising), mean ``seconds``
        per batch."""
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerow([model, int(epoch), split, f"{float(loss):.6g}",
                                    f"{float(error):.6g}", f"{float(seconds):.6g}"])


def read_metrics(path):
    """The rows of a ``metrics.csv`` as dicts, numbers converted."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["epoch"] = int(r["epoch"])
        for k in ("loss", "error", "seconds"):
            r[k] = float(r[k])
    return rows


def run_epoch(model_step, batches, *, desc, train, optimizer=None, show=True):
    """Run ``model_step`` over ``batches`` with a tqdm bar showing loss, error and s/batch.

    Parameters
    ----------
    model_step : callable
        ``model_step(batch) -> (loss, error, n_items)``: ``loss`` a scalar tensor
        (or float), the batch's mean loss; ``error`` a float, the batch's mean
        error; ``n_items`` the batch size (the means are weighted by it).
    batches : iterable
        The batches (anything ``model_step`` accepts).
    desc : str
        The progress bar's label.
    train : bool
        Training (gradients, optimizer steps) or evaluation (no gradients).
    optimizer : optional
        With ``train`` and an optimizer, ``run_epoch`` zeroes the gradients,
        calls ``loss.backward()`` and ``optimizer.step()`` for each batch; without
        one, ``model_step`` does its own updates (as the JAX training does).
    show : bool
        Show the progress bar (off in tests).

    Returns
    -------
    mean_loss, mean_error, seconds_per_batch : float
    """
    import contextlib

    from tqdm.auto import tqdm

    try:
        import torch
        grad_mode = torch.enable_grad if train else torch.no_grad
    except ModuleNotFoundError:
        grad_mode = contextlib.nullcontext
    total_loss = total_err = 0.0
    count = n_batches = 0
    start = time.perf_counter()
    # disable=None: no bar when stderr is not a terminal (background runs, tests).
    bar = tqdm(batches, desc=desc, leave=False, disable=None if show else True,
               dynamic_ncols=True, mininterval=0.5)
    with grad_mode():
        for batch in bar:
            if train and optimizer is not None:
                optimizer.zero_grad()
            loss, error, n = model_step(batch)
            if train and optimizer is not None:
                loss.backward()
                optimizer.step()
            loss = float(loss.detach()) if hasattr(loss, "detach") else float(loss)
            total_loss += loss * n
            total_err += float(error) * n
            count += n
            n_batches += 1
            sec = (time.perf_counter() - start) / n_batches
            bar.set_postfix(loss=f"{total_loss / count:.4g}", error=f"{total_err / count:.4g}",
                            s_per_batch=f"{sec:.3g}")
    bar.close()
    if count == 0:
        raise ValueError(f"run_epoch({desc!r}): no batches")
    return total_loss / count, total_err / count, (time.perf_counter() - start) / n_batches


def write_results(out_dir, title, rows, header):
    """Write ``out_dir/results.md``: a ``# title`` and a markdown table.

    Parameters
    ----------
    rows : list of sequences
        Table rows (floats printed with 4 significant digits).
    header : sequence of str
        The column names.

    Returns
    -------
    Path
        The file written.
    """
    def cell(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = [f"# {title}", "", "| " + " | ".join(header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    for r in rows:
        if len(r) != len(header):
            raise ValueError(f"write_results: row {r!r} has {len(r)} cells, header "
                             f"{len(header)}")
        lines.append("| " + " | ".join(cell(v) for v in r) + " |")
    path = Path(out_dir) / "results.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def append_results(out_dir, text):
    """Append a markdown paragraph (or a further table) to ``out_dir/results.md``."""
    path = Path(out_dir) / "results.md"
    with open(path, "a") as f:
        f.write("\n" + text.rstrip() + "\n")
    return path


def load_npz(path, keys):
    """Load arrays from an ``.npz`` file, without unpickling, and check them.

    Parameters
    ----------
    path : str or Path
        The file.
    keys : dict or sequence of str
        ``{key: (shape, kind)}`` (a plain sequence of keys checks presence only):
        ``shape`` a tuple whose entries are ints or ``None`` (any size; a string
        names a size that must agree across keys, such as ``"N"``); ``kind`` the
        accepted NumPy dtype kinds as a string (``"f"``, ``"iu"``, ``"fiub"``) or
        None (any).

    Returns
    -------
    dict
        ``{key: ndarray}`` for the keys asked for.

    Raises
    ------
    ValueError
        Naming the file, the key, what was expected and what was received, when
        the file is not a readable npz, a key is missing, or a shape or dtype is wrong.
    """
    path = Path(path)
    if not isinstance(keys, dict):
        keys = {k: (None, None) for k in keys}
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise ValueError(f"{path}: not a readable .npz file ({exc})") from exc
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise ValueError(f"{path}: expected an .npz archive with keys {sorted(keys)}, "
                         f"received a single array")
    out, sizes = {}, {}
    with data:
        for key, (shape, kind) in keys.items():
            if key not in data.files:
                raise ValueError(f"{path}: missing key {key!r}; expected keys {sorted(keys)}, "
                                 f"received {sorted(data.files)}")
            try:
                arr = data[key]
            except ValueError as exc:  # object arrays need pickle: refused
                raise ValueError(f"{path}: key {key!r} cannot be loaded without pickle "
                                 f"({exc})") from exc
            if kind is not None and arr.dtype.kind not in kind:
                raise ValueError(f"{path}: key {key!r} has dtype {arr.dtype}; expected a dtype "
                                 f"of kind {kind!r}")
            if shape is not None:
                if arr.ndim != len(shape):
                    raise ValueError(f"{path}: key {key!r} has shape {arr.shape}; expected "
                                     f"{_shape_text(shape)}")
                for dim, want in zip(arr.shape, shape):
                    if isinstance(want, str):
                        want = sizes.setdefault(want, dim)
                    if want is not None and dim != want:
                        raise ValueError(f"{path}: key {key!r} has shape {arr.shape}; expected "
                                         f"{_shape_text(shape, sizes)}")
            out[key] = arr
    return out


def _shape_text(shape, sizes=None):
    sizes = sizes or {}
    parts = [str(sizes.get(d, d)) if isinstance(d, str) else ("any" if d is None else str(d))
             for d in shape]
    return "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"
