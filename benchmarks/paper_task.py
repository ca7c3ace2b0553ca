"""The paper's network and recipe on a built-in task at the paper's scale.

    python benchmarks/paper_task.py [--init paper|bvlc] [--n-per-class 300] [--minutes 60]
                                    [--csv paper_task.csv]

The built-in shapes (``minialexnet.data.synthetic``: 10 classes) rendered at 256x256, the
paper's stored image size, 300 training and 50 validation images per class by default. The
network is the paper's ``AlexNet`` (227x227 crops, 60.9M parameters with 10 outputs) trained
with the paper's recipe: random 227 crops, flips and PCA colour noise (§4.1), dropout 0.5
(§4.2), SGD with momentum 0.9, weight decay 0.0005 and lr 0.01 (§5), the plateau schedule
(``ReduceOnPlateau``). One thing differs: the batch is 32 instead of 128 (``--batch-size``),
so that the network takes four times as many steps in the hour a two-core CPU allows (at
~21 images/s on two idle cores, one epoch of 3,000 images is ~2.5 minutes).

What it shows: whether the paper's network, initialisation and recipe learn anything within
an hour. Chance is 90% top-1 error; a run that learns is well below it after a few epochs.
``--init paper`` is the paper's initialisation (biases 1), ``--init bvlc`` BVLC's (biases
0.1); see the ``AlexNet`` docstring.

Output: one line per epoch (wall time, learning rate, mean training loss and top-1 error on
the augmented batches, validation top-1 error on centre crops), the same in ``--csv``, and
every ``--print-freq`` steps a progress line with ``minialexnet.diagnostics.loss_warning``'s
warning when there is one. ``--minutes`` stops after the epoch in which the time runs out.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from minialexnet.data.dataset import compute_stats  # noqa: E402
from minialexnet.data.loader import BatchLoader  # noqa: E402
from minialexnet.data.synthetic import make_synthetic  # noqa: E402
from minialexnet.diagnostics import loss_warning  # noqa: E402
from minialexnet.engine import CPUEngine  # noqa: E402
from minialexnet.model import INITS, AlexNet  # noqa: E402
from minialexnet.optim import SGD, ReduceOnPlateau  # noqa: E402

CSV_COLUMNS = ("epoch", "seconds", "lr", "train_loss", "train_top1_err", "val_top1_err")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--init",
        choices=INITS,
        default="bvlc",
        help="initialisation scheme (default: bvlc, as train --arch paper)",
    )
    parser.add_argument(
        "--n-per-class",
        type=int,
        default=300,
        help="training images per class (default 300: 3,000 images)",
    )
    parser.add_argument(
        "--val-per-class",
        type=int,
        default=50,
        help="validation images per class (default 50: 500 images)",
    )
    parser.add_argument("--image-size", type=int, default=256, help="stored image side")
    parser.add_argument("--epochs", type=int, default=90, help="at most this many epochs")
    parser.add_argument(
        "--minutes",
        type=float,
        default=60.0,
        help="stop after the epoch in which this much time has passed",
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--workers", type=int, default=1, help="batch-loader threads")
    parser.add_argument("--print-freq", type=int, default=20, help="steps between lines")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--csv", default="paper_task.csv", help="where to write the curve")
    return parser.parse_args(argv)


def validation_error(engine: CPUEngine, loader: BatchLoader) -> float:
    """Top-1 error of the centre crops (dropout off)."""
    wrong = total = 0
    for x, y in loader:
        wrong += int((engine.forward(x).argmax(axis=1) != y).sum())
        total += len(y)
    return wrong / total


def train_epoch(engine, loader, losses: list, started: float, print_freq: int) -> tuple:
    """One epoch; appends each step's loss to ``losses``; returns (mean loss, top-1 error)."""
    epoch_loss = correct = seen = 0.0
    for x, y in loader:
        step = engine.train_step(x, y)
        losses.append(step.loss)
        epoch_loss += step.loss * step.batch
        correct += step.top1_correct
        seen += step.batch
        if not math.isfinite(step.loss):
            raise SystemExit(f"the loss is {step.loss}: the run diverged; try a smaller --lr")
        if len(losses) % print_freq == 0:
            warning = loss_warning(len(losses), losses, engine.num_classes)
            print(
                f"  step {len(losses):5d}  {time.perf_counter() - started:7.0f} s  "
                f"loss {np.mean(losses[-print_freq:]):.3f}"
                + (f"  WARNING: {warning}" if warning else ""),
                flush=True,
            )
    return epoch_loss / seen, 1 - correct / seen


def main(argv=None) -> None:
    args = parse_args(argv)
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    train_set = make_synthetic(
        "train", n_per_class=args.n_per_class, image_size=args.image_size, seed=args.seed
    )
    val_set = make_synthetic(
        "val", n_per_class=args.val_per_class, image_size=args.image_size, seed=args.seed
    )
    stats = compute_stats(train_set)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"{len(train_set)} training and {len(val_set)} validation images of "
        f"{args.image_size}x{args.image_size} in {time.perf_counter() - t0:.0f} s; "
        f"load average {load:.1f} on {os.cpu_count()} CPUs",
        flush=True,
    )

    model = AlexNet(train_set.num_classes, "paper", rng=rng, init=args.init)
    optimizer = SGD(model, lr=args.lr, momentum=0.9, weight_decay=0.0005)
    schedule = ReduceOnPlateau(optimizer)
    engine = CPUEngine(model, optimizer)
    train_loader = BatchLoader(
        train_set,
        args.batch_size,
        model.input_size,
        stats,
        train=True,
        rng=rng,
        workers=args.workers,
    )
    val_loader = BatchLoader(val_set, 100, model.input_size, stats, train=False)
    print(
        f"paper AlexNet, init={args.init!r}, batch {args.batch_size}, lr {args.lr}; "
        f"chance: loss {math.log(train_set.num_classes):.2f}, top-1 error "
        f"{1 - 1 / train_set.num_classes:.0%}",
        flush=True,
    )

    losses: list = []
    started = time.perf_counter()
    with open(args.csv, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        for epoch in range(1, args.epochs + 1):
            lr = optimizer.lr
            train_loss, train_err = train_epoch(
                engine, train_loader, losses, started, args.print_freq
            )
            val_err = validation_error(engine, val_loader)
            seconds = time.perf_counter() - started
            schedule.step(val_err)
            writer.writerow(
                [
                    epoch,
                    f"{seconds:.1f}",
                    lr,
                    f"{train_loss:.4f}",
                    f"{train_err:.4f}",
                    f"{val_err:.4f}",
                ]
            )
            f.flush()
            print(
                f"epoch {epoch:3d}  {seconds:7.0f} s  lr {lr:g}  train loss {train_loss:.3f}"
                f"  train top-1 err {train_err:.1%}  val top-1 err {val_err:.1%}",
                flush=True,
            )
            if seconds > 60 * args.minutes:
                break
    print(
        f"curve written to {args.csv}; load average now "
        f"{os.getloadavg()[0] if hasattr(os, 'getloadavg') else float('nan'):.1f}"
    )


if __name__ == "__main__":
    main()
