"""Training curves from a ``metrics.csv`` (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

from ._common import read_metrics


def plot_curves(metrics_csv, out_png, *, metric="error", title):
    """Plot loss and ``metric`` per epoch, train and test, one line per model (Fig. 5 style).

    Two panels, loss (left) and ``metric`` (right); each model gets one colour,
    train dashed and test solid.

    Parameters
    ----------
    metrics_csv : str or Path
        A file written by :class:`~optnet.experiments._common.MetricsLog`.
    out_png : str or Path
        The PNG to write (small: about 1000x320 pixels).
    metric : str
        The second panel's column, ``"error"`` (default) or ``"seconds"``.
    title : str
        The figure title.

    Returns
    -------
    Path
        The file written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if metric not in ("error", "loss", "seconds"):
        raise ValueError(f"plot_curves: metric must be 'error', 'loss' or 'seconds', "
                         f"received {metric!r}")
    rows = read_metrics(metrics_csv)
    models = list(dict.fromkeys(r["model"] for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2), dpi=100)
    for i, model in enumerate(models):
        colour = f"C{i}"
        for split, style in (("train", "--"), ("test", "-")):
            pts = sorted((r["epoch"], r) for r in rows
                         if r["model"] == model and r["split"] == split)
            if not pts:
                continue
            epochs = [e for e, _ in pts]
            for ax, key in zip(axes, ("loss", metric)):
                ax.plot(epochs, [r[key] for _, r in pts], style, color=colour, marker=".",
                        label=f"{model} {split}")
    for ax, key in zip(axes, ("loss", metric)):
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    if all(r["loss"] > 0 for r in rows):
        axes[0].set_yscale("log")
    positive = [r[metric] for r in rows if r[metric] > 0]
    if positive and min(r[metric] for r in rows) >= 0 and max(positive) > 20 * max(
            min(positive), 1e-3):
        # Errors spanning decades (1.0 down to 0.01 and 0): log above 0.01, linear below,
        # so the final errors that matter are not squashed onto the axis.
        axes[1].set_yscale("symlog", linthresh=0.01)
    # Outside the panels, to the right: the curves of several models fill both panels.
    axes[1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png)
    plt.close(fig)
    return out_png
