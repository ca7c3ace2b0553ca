"""The run log in the output folder: ``metrics.csv`` (one row per epoch) and the plot.

Both are rewritten whole after every epoch, atomically (``atomic_write``), so an interrupted
run leaves complete files that agree with ``checkpoint_last.npz``.
"""

from __future__ import annotations

import csv
import io

from minialexnet.atomic import atomic_write

METRICS_CSV = "metrics.csv"
CURVES_PNG = "training_curves.png"
CSV_COLUMNS = (
    "epoch",
    "lr",
    "train_loss",
    "train_top1_err",
    "val_top1_err",
    "val_top5_err",
    "epoch_seconds",
    "images_per_second",
)


def write_metrics_csv(path: str, history: list[dict]) -> None:
    """One row per epoch with the columns ``CSV_COLUMNS`` (rewritten whole, atomically)."""
    text = io.StringIO()
    writer = csv.DictWriter(
        text, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n"
    )
    writer.writeheader()
    writer.writerows(history)
    atomic_write(path, lambda f: f.write(text.getvalue().encode()))


def plot_history(history: list[dict], path: str | None = None):
    """Training curves: loss, and top-1 / top-5 error per epoch. Returns the Figure; with
    ``path`` also saves it as PNG (atomically). Uses Agg, so no display is needed."""
    from matplotlib.figure import Figure

    epochs = [h["epoch"] for h in history]
    fig = Figure(figsize=(10, 4), layout="constrained")
    ax_loss, ax_err = fig.subplots(1, 2)
    ax_loss.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="training loss")
    ax_err.plot(
        epochs,
        [100 * h["train_top1_err"] for h in history],
        "o-",
        label="train top-1 (augmented, dropout)",
    )
    ax_err.plot(epochs, [100 * h["val_top1_err"] for h in history], "o-", label="val top-1")
    ax_err.plot(epochs, [100 * h["val_top5_err"] for h in history], "o--", label="val top-5")
    ax_err.set(xlabel="epoch", ylabel="error (%)", title="error rates")
    for ax in (ax_loss, ax_err):
        ax.grid(alpha=0.3)
        ax.legend()
    if path is not None:
        atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
    return fig
