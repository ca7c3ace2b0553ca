"""The trainer: the paper's recipe (§5) as an epoch loop over one engine (``fit``).

One epoch = one pass over the training set in random order, each image a random crop of
``model.input_size`` with a random horizontal flip and PCA colour noise (§4.1), minus the mean
image (§2); mini-batch SGD with momentum and weight decay (§5); then the validation error on
centre crops, which drives the learning-rate schedule ("divide by 10 when the validation error
stops improving", §5).

The loop drives an engine (``minialexnet.engine``) and never asks which hardware it runs on:
``engine.train_step`` per batch, ``engine.sync_to_host()`` before the evaluation and the
checkpoint, ``metrics.evaluate(engine, ...)`` for the validation error. ``make_engine``
chooses the engine from the ``TrainConfig``.

Every epoch writes, into the output folder, atomically (never half a file, even on Ctrl-C):
``checkpoint_last.npz`` (and ``checkpoint_best.npz`` when the validation top-1 error is the
best so far), ``metrics.csv`` and ``training_curves.png``.

Randomness: one ``numpy.random.Generator`` draws the initial weights, the dropout masks (it is
the model's ``rng``) and, at the start of each epoch, all of that epoch's data choices
(``BatchLoader`` draws them in the main thread, so ``workers`` does not change them). A
checkpoint stores the generator's state (``minialexnet.training.resume``).
"""
from __future__ import annotations

import math
import os
import time

from minialexnet.data.dataset import compute_stats
from minialexnet.data.loader import BatchLoader
from minialexnet.metrics import evaluate
from minialexnet.optim import SGD, ReduceOnPlateau
from minialexnet.preprocessing import preprocessing_of
from minialexnet.training.checkpoint import save_checkpoint
from minialexnet.training.config import TrainConfig
from minialexnet.training.engines import make_engine
from minialexnet.training.resume import RunState, resume_run, training_meta
from minialexnet.training.runlog import CURVES_PNG, METRICS_CSV, plot_history, write_metrics_csv

CHECKPOINT_LAST = "checkpoint_last.npz"
CHECKPOINT_BEST = "checkpoint_best.npz"


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last checkpoint written is the last good one."""


def fit(model, train_set, val_set, config: TrainConfig, *, stats=None, rng=None,
        output=None, resume=None, log=print, meta: dict | None = None) -> list[dict]:
    """Train ``model`` for ``config.epochs`` epochs in total; returns the history.

    Parameters
    ----------
    model : an ``AlexNet`` (or a ``TwoTowerAlexNet``); trained in place
    train_set, val_set : ``ImageDataset`` of uint8 ``(N, 3, S, S)`` images, ``S >=
        model.input_size``, with ``model.num_classes`` classes
    config : ``TrainConfig``: epochs, SGD settings, schedule, workers, validation crops,
        progress frequency and the hardware (``make_engine`` builds the engine from it)
    stats : ``DatasetStats`` of the training set (default: ``compute_stats(train_set)``)
    rng : the generator for data randomness (default: ``model.rng``, so one seed fixes the
        whole run); dropout always draws from ``model.rng``
    output : folder for checkpoints, ``metrics.csv`` and the plot (``None``: write nothing)
    resume : path of a checkpoint written by ``fit``: restores parameters, momentum,
        learning rate, schedule, statistics, generator states, history and epoch count (the
        optimizer's settings come from the checkpoint, not from ``config.lr`` etc.)
    log : called with each progress line (default ``print``)
    meta : extra JSON-serialisable entries stored in every checkpoint

    Each history entry holds ``epoch`` (1-based), ``lr``, ``train_loss``, ``train_top1_err``
    (on the augmented batches, dropout on), ``val_top1_err``, ``val_top5_err``,
    ``epoch_seconds``, ``images_per_second``. Raises ``ValueError`` for data, settings or
    devices that cannot train ``model``, ``CheckpointError`` for a checkpoint that cannot be
    resumed, and ``TrainingDiverged`` as soon as a batch's loss is NaN or infinite (the
    parameters are then not updated and no checkpoint is written for that epoch).
    """
    check_datasets(model, train_set, val_set, config.batch_size)
    optimizer = SGD(model, lr=config.lr, momentum=config.momentum,
                    weight_decay=config.weight_decay)
    with make_engine(model, optimizer, config) as engine:
        state = RunState(engine, make_schedule(config.schedule, engine.optimizer),
                         model.rng if rng is None else rng, stats)
        if resume is not None:
            resume_run(state, resume, train_set, config.batch_size, log)
        if state.stats is None:
            state.stats = compute_stats(train_set)
        _check_stats(state.stats, train_set)
        if output is not None:
            os.makedirs(output, exist_ok=True)
        _run_epochs(state, train_set, val_set, config, output, log, meta)
        engine.sync_to_host()
        if engine.model is not model:      # the CPU split trained its own copy of the weights
            model.load_state_dict(engine.model.state_dict())
    return state.history


def _run_epochs(state: RunState, train_set, val_set, config: TrainConfig, output, log,
                meta) -> None:
    """Epochs ``state.epoch + 1 .. config.epochs``: train, validate, schedule, save, report."""
    engine, first, run_start = state.engine, state.epoch, time.perf_counter()
    while state.epoch < config.epochs:
        record = train_one_epoch(state, train_set, config, log, output)
        engine.sync_to_host()              # parameters and momentum, for the checkpoint
        top1, top5 = evaluate(engine, val_set, state.stats, batch_size=config.batch_size,
                              crops=config.val_crops, workers=config.workers)
        record.update(val_top1_err=top1, val_top5_err=top5)
        state.history.append(record)
        is_best = top1 < state.best_top1
        state.best_top1 = min(state.best_top1, top1)
        state.epoch += 1
        if state.scheduler is not None:
            state.scheduler.step(top1)
        if output is not None:
            save_epoch(state, output, train_set.class_names, config.batch_size, is_best, meta)
        elapsed = time.perf_counter() - run_start
        left = elapsed / (state.epoch - first) * (config.epochs - state.epoch)
        log(f"epoch {state.epoch}/{config.epochs}: train loss {record['train_loss']:.4f}, "
            f"top-1 err {100 * record['train_top1_err']:.1f}% | val top-1 err "
            f"{100 * top1:.2f}%, top-5 err {100 * top5:.2f}%{' (best)' if is_best else ''} | "
            f"lr {record['lr']:.3g} | {record['epoch_seconds']:.1f} s, ETA {_clock(left)}")


def train_one_epoch(state: RunState, train_set, config: TrainConfig, log, output) -> dict:
    """One pass over the training set, one ``engine.train_step`` per mini-batch (§5).

    Returns the epoch's history entry without the validation errors. Raises
    ``TrainingDiverged`` when a batch's loss is not finite (that step left the parameters
    untouched).
    """
    engine, epoch = state.engine, state.epoch
    loader = BatchLoader(train_set, config.batch_size, engine.input_size, state.stats,
                         train=True, rng=state.data_rng, workers=config.workers,
                         preprocessing=preprocessing_of(engine))
    n_batches = len(loader)
    lr = engine.optimizer.lr
    loss_sum, correct, seen = 0.0, 0, 0
    start = time.perf_counter()
    for i, (x, labels) in enumerate(loader, start=1):
        step = engine.train_step(x, labels)
        if not step.updated:
            last = (f"the last good checkpoint is {os.path.join(output, CHECKPOINT_LAST)} "
                    f"(epoch {epoch})" if output is not None and epoch > 0
                    else "no checkpoint was written")
            raise TrainingDiverged(
                f"the loss became {step.loss} at epoch {epoch + 1}, batch {i}/{n_batches} (lr "
                f"{lr:g}): training diverged and was stopped; {last}. Try a smaller "
                f"learning rate (--lr).")
        correct += int(step.top1_correct)
        loss_sum += step.loss * len(labels)
        seen += len(labels)
        if i % config.print_freq == 0 or i == n_batches:
            elapsed = time.perf_counter() - start
            log(f"epoch {epoch + 1}/{config.epochs} [{i:>{len(str(n_batches))}}/{n_batches}] "
                f"loss {step.loss:.4f} (avg {loss_sum / seen:.4f}) top-1 err "
                f"{100 * (1 - correct / seen):5.1f}% | {seen / elapsed:6.1f} img/s | "
                f"ETA {_clock(elapsed / i * (n_batches - i))}")
    seconds = time.perf_counter() - start
    return {"epoch": epoch + 1, "lr": lr, "train_loss": loss_sum / seen,
            "train_top1_err": 1 - correct / seen, "epoch_seconds": seconds,
            "images_per_second": seen / seconds}


def save_epoch(state: RunState, output, class_names, batch_size: int, is_best: bool,
               meta: dict | None) -> None:
    """checkpoint_last (and _best), metrics.csv and the plot, each written atomically.

    Call after ``engine.sync_to_host()``: the checkpoint saves ``engine.model`` and
    ``engine.optimizer`` (the host copies), with ``training_meta`` over ``meta``.
    """
    info = dict(meta or {})
    info.update(training_meta(state, class_names, batch_size))
    model, optimizer = state.engine.model, state.engine.optimizer
    save_checkpoint(os.path.join(output, CHECKPOINT_LAST), model, optimizer, state.stats, info)
    if is_best:
        save_checkpoint(os.path.join(output, CHECKPOINT_BEST), model, optimizer, state.stats,
                        info)
    write_metrics_csv(os.path.join(output, METRICS_CSV), state.history)
    plot_history(state.history, os.path.join(output, CURVES_PNG))


def check_datasets(model, train_set, val_set, batch_size: int) -> None:
    """Clear errors (``ValueError``) for data that cannot train this model."""
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


def _check_stats(stats, train_set) -> None:
    if stats.image_size != train_set.image_size:
        raise ValueError(f"the dataset statistics are for {stats.image_size}x{stats.image_size} "
                         f"images, the training images are {train_set.image_size}x"
                         f"{train_set.image_size}")


def make_schedule(schedule, optimizer):
    """The learning-rate schedule of ``TrainConfig.schedule`` over ``optimizer`` (or None)."""
    if schedule is None or schedule == "none":
        return None
    if schedule == "plateau":
        return ReduceOnPlateau(optimizer)
    if callable(schedule):
        return schedule(optimizer)
    raise ValueError(f"schedule must be 'plateau', None or a callable optimizer -> schedule, "
                     f"got {schedule!r}")


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
