"""Train AlexNet with the paper's recipe (§5), from Python (``fit``) or the command line.

    python -m minialexnet.train                   # mini AlexNet on the built-in shapes, minutes
    python -m minialexnet.train --data-dir /data/imagenet --subset imagenet-100 --arch paper
    python -m minialexnet.train --resume runs/X/checkpoint_last.npz --epochs 30   # continue
    python -m minialexnet.train --resume runs/X/checkpoint_best.npz --evaluate    # 10-crop test

One epoch = one pass over the training set in random order, each image a random crop of
``model.input_size`` with a random horizontal flip and PCA colour noise (§4.1), minus the mean
image (§2); mini-batch SGD with momentum and weight decay (§5); then the validation error on
centre crops, which drives the learning-rate schedule ("divide by 10 when the validation error
stops improving", §5; the short default run of "mini" divides at a fixed epoch instead, see
``ARCH_DEFAULTS``).

Every epoch writes, into the output folder, atomically (never half a file, even on Ctrl-C):

- ``checkpoint_last.npz`` (and ``checkpoint_best.npz`` when the validation top-1 error is the
  best so far): parameters, momentum, dataset statistics, schedule, random-generator states
  and the history, so that ``--resume`` continues *bit-identically* to an uninterrupted run;
- ``metrics.csv`` (one row per epoch) and ``training_curves.png``.

Randomness: one ``numpy.random.Generator`` (``--seed``) draws the initial weights, the dropout
masks (it is the model's ``rng``) and, at the start of each epoch, all of that epoch's data
choices (order, crops, flips, colour noise; ``BatchLoader`` draws them in the main thread, so
``--workers`` does not change them). A checkpoint stores the generator's state.
"""
from __future__ import annotations

import argparse
import csv
import io
import math
import os
import sys
import time

import numpy as np

from minialexnet.checkpoint import (CheckpointError, atomic_write, load_checkpoint,
                                    restore_model, save_checkpoint)
from minialexnet.metrics import evaluate, topk_correct
from minialexnet.optim import SGD, ReduceOnPlateau, StepSchedule

#: Defaults per architecture: the paper's recipe (§5), and one measured to train "mini" on the
#: built-in dataset in a few minutes on two CPU cores. Mini's validation error still jumps by
#: several points from epoch to epoch at lr 0.003, so a short run divides the rate by 10 at a
#: fixed epoch (``step``) rather than waiting for a plateau that a 15-epoch run may not see.
ARCH_DEFAULTS = {
    "paper": {"epochs": 90, "batch_size": 128, "lr": 0.01, "image_size": 256,
              "schedule": "plateau", "step_size": 30},
    "mini": {"epochs": 15, "batch_size": 32, "lr": 0.003, "image_size": 64,
             "schedule": "step", "step_size": 10},
}
CHECKPOINT_LAST = "checkpoint_last.npz"
CHECKPOINT_BEST = "checkpoint_best.npz"
METRICS_CSV = "metrics.csv"
CURVES_PNG = "training_curves.png"
CSV_COLUMNS = ("epoch", "lr", "train_loss", "train_top1_err", "val_top1_err", "val_top5_err",
               "epoch_seconds", "images_per_second")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last checkpoint written is the last good one."""


# -- the programmatic API -------------------------------------------------------------------

def fit(model, train_set, val_set, *, epochs: int, batch_size: int = 128, lr: float = 0.01,
        momentum: float = 0.9, weight_decay: float = 0.0005, schedule="plateau",
        stats=None, rng: np.random.Generator | None = None, workers: int = 0,
        val_crops: str = "center", output: str | None = None, resume: str | None = None,
        print_freq: int = 20, log=print, meta: dict | None = None,
        device: str = "cpu", devices: str | None = None) -> list[dict]:
    """Train ``model`` for ``epochs`` epochs in total; returns the history (one dict per epoch).

    Parameters
    ----------
    model : an ``AlexNet`` (anything with its protocol); trained in place
    train_set, val_set : ``ImageDataset`` of uint8 ``(N, 3, S, S)`` images, ``S >=
        model.input_size``, with ``model.num_classes`` classes
    epochs : total number of epochs; with ``resume`` the count includes those already done
    batch_size, lr, momentum, weight_decay : SGD as in §5 (paper: 128, 0.01, 0.9, 0.0005)
    schedule : ``"plateau"`` (the paper: divide lr by 10 when the validation error stops
        improving, at most 3 times), ``None`` (constant lr), or a callable ``optimizer ->
        schedule`` such as ``lambda opt: StepSchedule(opt, step_size=30)``
    stats : ``DatasetStats`` of the training set (default: ``compute_stats(train_set)``)
    rng : the generator for data randomness (default: ``model.rng``, so one seed fixes the
        whole run); dropout always draws from ``model.rng``
    workers : threads that prepare batches (0: in the calling thread)
    val_crops : ``"center"`` or ``"ten"`` (the paper's test protocol, 10x slower)
    output : folder for checkpoints, ``metrics.csv`` and the plot (``None``: write nothing)
    resume : path of a checkpoint written by ``fit``: restores parameters, momentum,
        learning rate, schedule, statistics, generator states, history and epoch count (the
        optimizer's settings come from the checkpoint, not from ``lr`` etc.)
    print_freq : log a progress line every this many batches
    log : called with each progress line (default ``print``)
    meta : extra JSON-serialisable entries stored in every checkpoint
    device : ``"cpu"`` (the layers, on the current CPU backend) or ``"cuda"`` (the whole
        step stays on the GPU: ``minialexnet.cuda_model.CudaAlexNet``; parameters are copied
        back to ``model`` before every evaluation and checkpoint)
    devices : with ``device="cuda"``, the paper's two-tower split (§3.2) on these GPUs, e.g.
        ``"cuda:0,cuda:1"`` or ``"cuda:0,cuda:0"`` (one GPU, two streams). For the split on
        CPU threads, pass a ``minialexnet.parallel.TwoTowerAlexNet`` as ``model`` instead.

    Each history entry holds ``epoch`` (1-based), ``lr``, ``train_loss``, ``train_top1_err``
    (on the augmented batches, dropout on), ``val_top1_err``, ``val_top5_err``,
    ``epoch_seconds``, ``images_per_second``.

    Raises ``TrainingDiverged`` as soon as a batch's loss is NaN or infinite (the parameters
    are then not updated and no checkpoint is written for that epoch).
    """
    from minialexnet.checks import check_positive_int
    from minialexnet.data.dataset import compute_stats
    from minialexnet.layers import SoftmaxCrossEntropy

    epochs = check_positive_int(epochs, "epochs")
    batch_size = check_positive_int(batch_size, "batch_size")
    print_freq = check_positive_int(print_freq, "print_freq")
    _check_datasets(model, train_set, val_set, batch_size)
    rng = model.rng if rng is None else rng
    optimizer = SGD(model, lr=lr, momentum=momentum, weight_decay=weight_decay)
    scheduler = _make_schedule(schedule, optimizer)
    history: list[dict] = []
    best_top1 = math.inf
    start_epoch = 0
    if resume is not None:
        ckpt = load_checkpoint(resume)
        restore_model(model, ckpt, resume)
        start_epoch, history, best_top1 = _restore_training_state(
            ckpt, resume, optimizer, scheduler, rng, model, train_set, batch_size, log)
        stats = ckpt.stats if ckpt.stats is not None else stats
    if stats is None:
        stats = compute_stats(train_set)
    if stats.image_size != train_set.image_size:
        raise ValueError(f"the dataset statistics are for {stats.image_size}x{stats.image_size} "
                         f"images, the training images are {train_set.image_size}x"
                         f"{train_set.image_size}")
    if output is not None:
        os.makedirs(output, exist_ok=True)

    engine = _gpu_engine(model, optimizer, batch_size, devices) if device == "cuda" else None
    loss_fn = SoftmaxCrossEntropy()
    run_start = time.perf_counter()
    for epoch in range(start_epoch, epochs):
        record = _train_one_epoch(model, engine, loss_fn, optimizer, train_set, stats,
                                  batch_size,
                                  rng, workers, epoch, epochs, print_freq, log, output)
        if engine is not None:
            engine.sync_to_host()          # parameters and momentum, for the checkpoint
        top1, top5 = evaluate(engine or model, val_set, stats, batch_size=batch_size,
                              crops=val_crops, workers=workers)
        record.update(val_top1_err=top1, val_top5_err=top5)
        history.append(record)
        is_best = top1 < best_top1
        best_top1 = min(best_top1, top1)
        if scheduler is not None:
            scheduler.step(top1)
        if output is not None:
            _save_epoch(output, model, optimizer, scheduler, stats, rng, train_set, history,
                        best_top1, batch_size, is_best, meta)
        elapsed = time.perf_counter() - run_start
        done = epoch + 1 - start_epoch
        log(f"epoch {epoch + 1}/{epochs}: train loss {record['train_loss']:.4f}, top-1 err "
            f"{100 * record['train_top1_err']:.1f}% | val top-1 err {100 * top1:.2f}%, top-5 "
            f"err {100 * top5:.2f}%{' (best)' if is_best else ''} | lr {record['lr']:.3g} | "
            f"{record['epoch_seconds']:.1f} s, ETA {_clock(elapsed / done * (epochs - epoch - 1))}")
    return history


def _check_datasets(model, train_set, val_set, batch_size: int) -> None:
    """Clear errors for data that cannot train this model."""
    for name, ds in (("training", train_set), ("validation", val_set)):
        if ds.num_classes != model.num_classes:
            raise ValueError(f"the {name} set has {ds.num_classes} classes, the model "
                             f"{model.num_classes}; build AlexNet(num_classes="
                             f"{ds.num_classes}, ...)")
        if ds.image_size < model.input_size:
            raise ValueError(f"the {name} images are {ds.image_size}x{ds.image_size}, smaller "
                             f"than the {model.input_size}x{model.input_size} crops this "
                             f"AlexNet takes")
    if val_set.image_size != train_set.image_size:
        raise ValueError(f"training images are {train_set.image_size} px, validation images "
                         f"{val_set.image_size} px; both splits must have the same size")
    if batch_size > len(train_set):
        raise ValueError(f"batch size {batch_size} is larger than the training set "
                         f"({len(train_set)} images); use a batch size <= {len(train_set)}")


def _make_schedule(schedule, optimizer):
    if schedule is None or schedule == "none":
        return None
    if schedule == "plateau":
        return ReduceOnPlateau(optimizer)
    if callable(schedule):
        return schedule(optimizer)
    raise ValueError(f"schedule must be 'plateau', None or a callable optimizer -> schedule, "
                     f"got {schedule!r}")


def _restore_training_state(ckpt, path, optimizer, scheduler, rng, model, train_set,
                            batch_size, log):
    """Put optimizer, schedule and generators back as they were after the checkpoint's epoch."""
    meta = ckpt.meta
    for key in ("epoch", "history", "best_top1", "schedule", "rng", "optimizer"):
        if key not in meta:
            raise CheckpointError(f"{path} is not a training checkpoint (no {key!r} entry); "
                                  f"it can be evaluated but not resumed")
    if meta.get("class_names") != list(train_set.class_names):
        raise CheckpointError(f"{path} was trained on other classes ({len(meta.get('class_names') or [])} "
                              f"classes, e.g. {(meta.get('class_names') or [])[:3]}); resume it on "
                              f"the same dataset")
    try:
        velocity = model.split(ckpt.optim) if hasattr(model, "split") else ckpt.optim
        optimizer.load_state_dict({"velocity": velocity, **meta["optimizer"]})
    except ValueError as err:
        raise CheckpointError(f"{path}: {err}") from None
    if (scheduler is None) != (meta["schedule"] is None):
        raise CheckpointError(f"{path} was trained with schedule "
                              f"{(meta['schedule'] or {}).get('name')!r}; resume with the same")
    if scheduler is not None:
        try:
            scheduler.load_state_dict(meta["schedule"])
        except (ValueError, KeyError) as err:
            raise CheckpointError(f"{path}: {err}") from None
    for gen, state in ((rng, meta["rng"]["data"]), (model.rng, meta["rng"]["model"])):
        if state["bit_generator"] != type(gen.bit_generator).__name__:
            raise CheckpointError(f"{path} stores a {state['bit_generator']} generator state; "
                                  f"this run uses {type(gen.bit_generator).__name__}")
    rng.bit_generator.state = meta["rng"]["data"]
    model.rng.bit_generator.state = meta["rng"]["model"]
    if meta.get("batch_size") != batch_size:
        log(f"note: resuming with batch size {batch_size}, the checkpoint used "
            f"{meta.get('batch_size')}: the run will differ from an uninterrupted one")
    best = meta["best_top1"]
    return int(meta["epoch"]), list(meta["history"]), math.inf if best is None else best


def _gpu_engine(model, optimizer, batch_size: int, devices: str | None):
    """The device-resident training step: one GPU, or the two-tower split over GPUs (§3.2).

    Either engine reads ``optimizer.lr``/momentum/weight decay at every step (so schedules
    work unchanged) and copies parameters and momentum back with ``copy_to_cpu()``.
    """
    if devices:
        from minialexnet.gpu import CudaTwoTowerAlexNet
        return CudaTwoTowerAlexNet(model, optimizer, batch_size=batch_size, devices=devices)
    from minialexnet.gpu import CudaAlexNet
    return CudaAlexNet(model, optimizer, batch_size=batch_size)


def _train_one_epoch(model, engine, loss_fn, optimizer, train_set, stats, batch_size,
                     data_rng, workers, epoch, epochs, print_freq, log, output) -> dict:
    """One pass over the training set; returns the epoch's history entry (without val).

    With ``engine`` (a GPU engine, see ``_gpu_engine``) each step runs on the device and only
    the loss and the correct count come back; otherwise forward, loss, backward and the SGD
    step run here on the CPU layers.
    """
    from minialexnet.data.loader import BatchLoader

    loader = BatchLoader(train_set, batch_size, model.input_size, stats, train=True,
                         rng=data_rng, workers=workers)
    n_batches = len(loader)
    lr = optimizer.lr
    loss_sum, correct, seen = 0.0, 0, 0
    start = time.perf_counter()
    for i, (x, labels) in enumerate(loader, start=1):
        if engine is None:
            logits = model.forward(x, train=True)
            loss = loss_fn.forward(logits, labels)
            finite = math.isfinite(loss)
        else:
            step = engine.train_step(x, labels)   # parameters untouched if the loss is not finite
            loss, finite = step.loss, step.updated
        if not finite:
            last = (f"the last good checkpoint is {os.path.join(output, CHECKPOINT_LAST)} "
                    f"(epoch {epoch})" if output is not None and epoch > 0
                    else "no checkpoint was written")
            raise TrainingDiverged(
                f"the loss became {loss} at epoch {epoch + 1}, batch {i}/{n_batches} (lr "
                f"{lr:g}): training diverged and was stopped; {last}. Try a smaller "
                f"learning rate (--lr).")
        if engine is None:
            model.backward(loss_fn.backward())
            optimizer.step()
            correct += int(topk_correct(logits, labels, 1).sum())
        else:
            correct += int(step.top1_correct)
        loss_sum += loss * len(labels)
        seen += len(labels)
        if i % print_freq == 0 or i == n_batches:
            elapsed = time.perf_counter() - start
            log(f"epoch {epoch + 1}/{epochs} [{i:>{len(str(n_batches))}}/{n_batches}] loss "
                f"{loss:.4f} (avg {loss_sum / seen:.4f}) top-1 err {100 * (1 - correct / seen):5.1f}% "
                f"| {seen / elapsed:6.1f} img/s | ETA {_clock(elapsed / i * (n_batches - i))}")
    seconds = time.perf_counter() - start
    return {"epoch": epoch + 1, "lr": lr, "train_loss": loss_sum / seen,
            "train_top1_err": 1 - correct / seen, "epoch_seconds": seconds,
            "images_per_second": seen / seconds}


def _save_epoch(output, model, optimizer, scheduler, stats, rng, train_set, history,
                best_top1, batch_size, is_best, meta) -> None:
    """checkpoint_last (and _best), metrics.csv and the plot, each written atomically."""
    info = dict(meta or {})
    info.update({
        "epoch": history[-1]["epoch"],
        "best_top1": best_top1,
        "batch_size": batch_size,
        "class_names": list(train_set.class_names),
        "schedule": None if scheduler is None else scheduler.state_dict(),
        "rng": {"data": rng.bit_generator.state, "model": model.rng.bit_generator.state},
        "history": history,
    })
    save_checkpoint(os.path.join(output, CHECKPOINT_LAST), model, optimizer, stats, info)
    if is_best:
        save_checkpoint(os.path.join(output, CHECKPOINT_BEST), model, optimizer, stats, info)
    write_metrics_csv(os.path.join(output, METRICS_CSV), history)
    plot_history(history, os.path.join(output, CURVES_PNG))


def write_metrics_csv(path: str, history: list[dict]) -> None:
    """One row per epoch with the columns ``CSV_COLUMNS`` (rewritten whole, atomically)."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=CSV_COLUMNS, extrasaction="ignore",
                            lineterminator="\n")
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
    ax_err.plot(epochs, [100 * h["train_top1_err"] for h in history], "o-",
                label="train top-1 (augmented, dropout)")
    ax_err.plot(epochs, [100 * h["val_top1_err"] for h in history], "o-", label="val top-1")
    ax_err.plot(epochs, [100 * h["val_top5_err"] for h in history], "o--", label="val top-5")
    ax_err.set(xlabel="epoch", ylabel="error (%)", title="error rates")
    for ax in (ax_loss, ax_err):
        ax.grid(alpha=0.3)
        ax.legend()
    if path is not None:
        atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
    return fig


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


# -- the command line -----------------------------------------------------------------------

# The argparse types shared with ``python -m minialexnet.prepare`` (one place for the check).
from minialexnet.prepare import nonnegative_int as _nonnegative_int  # noqa: E402
from minialexnet.prepare import positive_int as _positive_int  # noqa: E402

def _float_at_least(minimum: float, allow_equal: bool):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value) or value < minimum or (value == minimum and not allow_equal):
            bound = f">= {minimum:g}" if allow_equal else f"> {minimum:g}"
            raise argparse.ArgumentTypeError(f"must be a finite number {bound}, got {text}")
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="minialexnet-train",
        description="Train AlexNet (Krizhevsky et al. 2012) with the paper's SGD recipe. "
                    "Without arguments: the mini AlexNet on the built-in synthetic shapes "
                    "dataset, a few minutes on a laptop CPU.")
    data = p.add_argument_group("data")
    data.add_argument("--data-dir", metavar="DIR",
                      help="ImageNet-style folder (train/<class>/*.JPEG, val/...) or a prepared "
                           "cache; default: the built-in synthetic dataset")
    data.add_argument("--subset", metavar="NAME",
                      help="class subset of --data-dir: imagenet-100, imagenet-1k or a text file "
                           "of class folder names")
    data.add_argument("--workers", type=_nonnegative_int, default=0,
                      help="threads preparing batches (default 0: the main thread)")
    model = p.add_argument_group("model and optimization")
    model.add_argument("--arch", choices=sorted(ARCH_DEFAULTS), default=None,
                       help="network variant (default: mini, or the checkpoint's with --resume)")
    model.add_argument("--epochs", type=_positive_int, default=None,
                       help="total epochs (default: 90 for paper, "
                            f"{ARCH_DEFAULTS['mini']['epochs']} for mini)")
    model.add_argument("-b", "--batch-size", type=_positive_int, default=None,
                       help="mini-batch size (default: 128 for paper, "
                            f"{ARCH_DEFAULTS['mini']['batch_size']} for mini; with --resume "
                            f"the checkpoint's)")
    model.add_argument("--lr", type=_float_at_least(0, False), default=None,
                       help="initial learning rate (default: 0.01 for paper, "
                            f"{ARCH_DEFAULTS['mini']['lr']} for mini)")
    model.add_argument("--momentum", type=_float_at_least(0, True), default=0.9,
                       help="SGD momentum (default: 0.9, the paper's)")
    model.add_argument("--wd", "--weight-decay", dest="weight_decay",
                       type=_float_at_least(0, True), default=0.0005,
                       help="weight decay inside the momentum update (default: 0.0005)")
    model.add_argument("--schedule", choices=("plateau", "step", "none"), default=None,
                       help="plateau: divide lr by 10 when val error stops improving (at most "
                            "3 times, the paper; default for paper); step: divide by 10 every "
                            "--step-size epochs (default for mini); none: constant. With "
                            "--resume: the checkpoint's")
    model.add_argument("--step-size", type=_positive_int, default=None,
                       help="epochs between divisions with --schedule step (default: 30 for "
                            f"paper, {ARCH_DEFAULTS['mini']['step_size']} for mini)")
    model.add_argument("--seed", type=_nonnegative_int, default=0,
                       help="seed of the one generator behind all randomness (default: 0)")
    run = p.add_argument_group("run")
    run.add_argument("--output", metavar="DIR",
                     help="folder for checkpoints, metrics.csv and the plot (default: "
                          "runs/<arch>-<data>-<time>, or the resumed checkpoint's folder)")
    run.add_argument("--resume", metavar="CHECKPOINT",
                     help="continue training from a checkpoint (bit-identical to an "
                          "uninterrupted run)")
    run.add_argument("--evaluate", action="store_true",
                     help="only evaluate the --resume checkpoint on the validation set "
                          "(centre crop and the paper's 10 crops)")
    run.add_argument("--backend", choices=("numba", "numpy", "cuda"), default="numba",
                     help="kernels: numba (compiled CPU, default), numpy (readable "
                          "reference), cuda")
    run.add_argument("--devices", default=None, metavar="LIST",
                     help="split the net over two devices as in the paper (§3.2): "
                          "cpu:0,cpu:1 (two CPU threads), cuda:0,cuda:1 (two GPUs, with "
                          "--backend cuda), cuda:0,cuda:0 (one GPU, two streams). Default: "
                          "one device (the same function, via grouped convolutions)")
    run.add_argument("--tower-mode", choices=("threads", "sequential"), default="threads",
                     help="with --devices on the CPU: run the towers at the same time "
                          "(threads) or one after the other (sequential, for stepping through)")
    run.add_argument("--print-freq", type=_positive_int, default=20, metavar="N",
                     help="progress line every N batches (default: 20)")
    return p


def select_backend(name: str) -> None:
    """The one place that switches the hot loops: ``numba``/``numpy`` CPU kernels, or CUDA."""
    from minialexnet import set_backend

    if name == "cuda":
        from minialexnet.kernels.cuda import require_cuda
        require_cuda("--backend cuda")
        name = "numba"          # what still runs on the host (augmentation) stays compiled
    set_backend(name)


def open_datasets(args, image_size: int, val_only: bool = False):
    """``(train_set, val_set, stats, name)`` for the command line's data arguments.

    Without ``--data-dir``/``--subset``: the built-in synthetic dataset drawn at
    ``image_size`` px (``stats`` is ``None``: ``fit`` computes them). Otherwise the one call
    into ``minialexnet.data.imagenet`` (its ``DataError`` says what is missing and how to
    get it). With ``val_only`` the training set is not built (``None``).
    """
    if args.data_dir is None and args.subset is None:
        from minialexnet.data.synthetic import make_synthetic
        train_set = None if val_only else make_synthetic("train", image_size=image_size)
        return train_set, make_synthetic("val", image_size=image_size), None, "synthetic"
    from minialexnet.data import imagenet
    name = os.path.splitext(os.path.basename(os.path.normpath(args.subset or args.data_dir)))[0]
    if val_only:
        return None, imagenet.open_val_dataset(args.data_dir, args.subset, image_size=image_size,
                                               log=_print), None, name
    train_set, val_set, stats = imagenet.open_dataset(args.data_dir, args.subset,
                                                      image_size=image_size, log=_print)
    return train_set, val_set, stats, name


def _prepare_output(folder: str) -> None:
    """Create ``folder`` and prove it is writable (a clear error now, not after an epoch)."""
    import tempfile

    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise ValueError(f"cannot write to the output folder {folder!r}: "
                         f"{err.strerror or err}; choose another --output") from None


def _schedule_from_args(args, defaults: dict, ckpt):
    """The ``fit`` schedule: ``--schedule``, else the resumed checkpoint's, else the arch's.

    (A resumed schedule's counters and step size come back from the checkpoint itself.)
    """
    name = args.schedule
    if name is None and ckpt is not None and "schedule" in ckpt.meta:
        name = (ckpt.meta["schedule"] or {"name": "none"})["name"]
    name = name or defaults["schedule"]
    if name == "step":
        step_size = args.step_size or defaults["step_size"]
        return lambda opt: StepSchedule(opt, step_size=step_size)
    return None if name == "none" else "plateau"


def _print(line: str) -> None:
    print(line, flush=True)


def main(argv=None) -> int:
    """``minialexnet-train``: parse, check every input up front, train (or evaluate).

    Bad input exits with status 2 and an argparse-style message (no traceback); a diverged
    run exits with 1, Ctrl-C with 130, each keeping the last complete checkpoint.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return _run(args, parser)
    except KeyboardInterrupt:
        print("\ninterrupted: nothing was written for the unfinished epoch; the last "
              "complete checkpoint (if any) is intact", file=sys.stderr)
        return 130


def _run(args, parser) -> int:
    from minialexnet.data.folders import DataError
    from minialexnet.data.imagenet import dataset_record
    from minialexnet.model import AlexNet

    try:
        select_backend(args.backend)
    except (ValueError, RuntimeError) as err:      # unknown backend, or no usable GPU
        parser.error(str(err))
    if args.evaluate and args.resume is None:
        parser.error("--evaluate needs a checkpoint: pass --resume CHECKPOINT")

    ckpt = None
    if args.resume is not None:
        try:
            ckpt = load_checkpoint(args.resume)
        except CheckpointError as err:
            parser.error(str(err))
        if args.arch is not None and args.arch != ckpt.meta["arch"]:
            parser.error(f"{args.resume} holds a {ckpt.meta['arch']!r} AlexNet, not "
                         f"{args.arch!r}: drop --arch or pass --arch {ckpt.meta['arch']}")
        if ckpt.meta["arch"] not in ARCH_DEFAULTS:
            parser.error(f"{args.resume} holds an AlexNet variant {ckpt.meta['arch']!r} that "
                         f"the command line does not train; choose one of "
                         f"{', '.join(sorted(ARCH_DEFAULTS))}")
    arch = ckpt.meta["arch"] if ckpt is not None else (args.arch or "mini")
    defaults = ARCH_DEFAULTS[arch]
    image_size = ckpt.meta.get("image_size", defaults["image_size"]) if ckpt else \
        defaults["image_size"]
    try:
        train_set, val_set, stats, data_name = open_datasets(args, image_size,
                                                             val_only=args.evaluate)
    except (DataError, ValueError, OSError) as err:
        parser.error(str(err))

    if args.evaluate:
        return _evaluate_checkpoint(args, parser, ckpt, val_set)

    epochs = args.epochs or defaults["epochs"]
    batch_size = args.batch_size or (ckpt.meta.get("batch_size") if ckpt else None) \
        or defaults["batch_size"]
    if ckpt is not None and epochs <= ckpt.meta.get("epoch", 0):
        parser.error(f"{args.resume} has already trained {ckpt.meta['epoch']} epochs; pass "
                     f"--epochs larger than that to continue")
    output = args.output or (os.path.dirname(os.path.abspath(args.resume)) if ckpt else
                             os.path.join("runs", f"{arch}-{data_name}-"
                                                  f"{time.strftime('%Y%m%d-%H%M%S')}"))
    try:
        _prepare_output(output)
    except ValueError as err:
        parser.error(str(err))
    if ckpt is None and os.path.exists(os.path.join(output, CHECKPOINT_LAST)):
        parser.error(f"{output} already holds a run ({CHECKPOINT_LAST}); continue it with "
                     f"--resume {os.path.join(output, CHECKPOINT_LAST)}, or choose another "
                     f"--output")

    rng = np.random.default_rng(args.seed)
    try:
        model = AlexNet(train_set.num_classes, arch, rng=rng)
        if args.devices and args.backend != "cuda":
            from minialexnet.parallel import TwoTowerAlexNet
            model = TwoTowerAlexNet.from_model(model, devices=args.devices,
                                               mode=args.tower_mode)
    except ValueError as err:
        parser.error(str(err))
    try:
        _check_datasets(model, train_set, val_set, batch_size)
    except ValueError as err:
        parser.error(str(err))
    if ckpt is not None and args.lr is not None:
        _print("note: --lr is ignored with --resume: the checkpoint's learning rate and "
               "schedule continue")
    _print(model.summary())
    _print(f"data: {data_name}, {len(train_set)} training and {len(val_set)} validation images "
           f"of {train_set.image_size}x{train_set.image_size}, {train_set.num_classes} classes")
    _print(f"output: {output}  (backend {args.backend}, batch {batch_size}, {epochs} epochs)")
    try:
        fit(model, train_set, val_set, epochs=epochs, batch_size=batch_size,
            lr=args.lr or defaults["lr"], momentum=args.momentum,
            weight_decay=args.weight_decay, schedule=_schedule_from_args(args, defaults, ckpt), stats=stats,
            rng=rng,
            workers=args.workers, output=output, resume=args.resume,
            print_freq=args.print_freq, log=_print,
            meta={"data": data_name, "seed": args.seed,
                  "dataset": dataset_record(args.data_dir, args.subset)},
            device="cuda" if args.backend == "cuda" else "cpu",
            devices=args.devices if args.backend == "cuda" else None)
    except CheckpointError as err:
        parser.error(str(err))
    except TrainingDiverged as err:
        print(f"minialexnet-train: {err}", file=sys.stderr)
        return 1
    _print(f"done: checkpoints, {METRICS_CSV} and {CURVES_PNG} in {output}")
    return 0


def _evaluate_checkpoint(args, parser, ckpt, val_set) -> int:
    from minialexnet.model import AlexNet

    model = AlexNet.from_config(ckpt.meta["model"])
    try:
        restore_model(model, ckpt, args.resume)
    except CheckpointError as err:
        parser.error(str(err))
    if ckpt.stats is None:
        parser.error(f"{args.resume} holds no dataset statistics (mean image); it cannot be "
                     f"evaluated")
    if ckpt.meta.get("class_names", val_set.class_names) != val_set.class_names:
        parser.error(f"{args.resume} was trained on other classes than this validation set")
    batch_size = args.batch_size or ckpt.meta.get("batch_size", 128)
    if args.backend == "cuda":
        from minialexnet.gpu import CudaAlexNet
        model = CudaAlexNet(model)             # evaluation forward passes on the GPU
    for crops in ("center", "ten"):
        top1, top5 = evaluate(model, val_set, ckpt.stats, batch_size=batch_size, crops=crops,
                              workers=args.workers)
        _print(f"{crops:>6} crop{'s' if crops == 'ten' else ''}: top-1 error {100 * top1:.2f}%, "
               f"top-5 error {100 * top5:.2f}%  ({len(val_set)} images)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
