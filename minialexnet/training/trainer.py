"""The trainer: the paper's recipe (§5) as an epoch loop over one engine (``fit``).

One epoch = one pass over the training set in random order, each image a random crop of
``model.input_size`` with a random horizontal flip and PCA colour noise (§4.1), minus the mean
image (§2); mini-batch SGD with momentum and weight decay (§5); then the validation error on
centre crops, which drives the learning-rate schedule ("divide by 10 when the validation error
stops improving", §5).

The loop drives an engine (``minialexnet.engine``) and never asks which hardware it runs on:
``engine.submit_step`` per batch, its result read one batch later (a GPU then never waits
for the host, nor the host for the GPU, between steps), ``engine.sync_to_host()`` before the
evaluation and the checkpoint, ``metrics.evaluate(engine, ...)`` for the validation error.
``make_engine`` chooses the engine from the ``TrainConfig``.

Every epoch writes, into the output folder, atomically (never half a file, even on Ctrl-C):
``checkpoint_last.npz`` (and ``checkpoint_best.npz`` when the validation top-1 error is the
best so far), ``metrics.csv`` and ``training_curves.png``.

Randomness: one ``numpy.random.Generator`` draws the initial weights, the dropout masks (it is
the model's ``rng``) and, at the start of each epoch, all of that epoch's data choices
(``BatchLoader`` draws them in the main thread, so ``workers`` does not change them). A
checkpoint stores the generator's state (``minialexnet.training.resume``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import time

from minialexnet.atomic import atomic_write
from minialexnet.data.dataset import compute_stats
from minialexnet.data.loader import BatchLoader
from minialexnet.diagnostics import loss_warning
from minialexnet.distributed import SingleProcess, check_batches, evaluate_split, main_only
from minialexnet.metrics import evaluate
from minialexnet.optim import SGD, ReduceOnPlateau
from minialexnet.preprocessing import preprocessing_of
from minialexnet.threads import set_threads
from minialexnet.training.checkpoint import read_meta, save_checkpoint
from minialexnet.training.config import TrainConfig
from minialexnet.training.engines import make_engine
from minialexnet.training.resume import RunState, resume_run, training_meta
from minialexnet.training.runfolder import hold_output
from minialexnet.training.runlog import CURVES_PNG, METRICS_CSV, plot_history, write_metrics_csv

CHECKPOINT_LAST = "checkpoint_last.npz"
CHECKPOINT_BEST = "checkpoint_best.npz"
#: Every file a run writes (atomically) into its output folder.
RUN_FILES = (CHECKPOINT_LAST, CHECKPOINT_BEST, METRICS_CSV, CURVES_PNG)
#: The first steps of a run whose losses are watched for the early warnings of
#: ``minialexnet.diagnostics.loss_warning`` (a loss far above chance, or one that does not
#: move): a user who starts a multi-day run should know within minutes.
WATCHED_STEPS = 1000


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last checkpoint written is the last good one."""


class SaveFailed(RuntimeError):
    """An epoch's files could not be written (e.g. the disk is full); the message names the
    last complete checkpoint, which is intact."""


def hold_run_folder(output, log=print):
    """``hold_output`` for a run of ``fit``: the output folder held by this run alone, with
    the leftovers of a killed run's unfinished writes removed (``training.runfolder``)."""
    return hold_output(output, RUN_FILES, log)


def fit(
    model,
    train_set,
    val_set,
    config: TrainConfig,
    *,
    stats=None,
    rng=None,
    output=None,
    resume=None,
    log=print,
    meta: dict | None = None,
    context=None,
) -> list[dict]:
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

    The output folder is held by this run alone for the whole run (``hold_run_folder``:
    another run on it is refused, and what a killed run left half-written is removed).
    log : called with each progress line (default ``print``)
    meta : extra JSON-serialisable entries stored in every checkpoint
    context : the processes of a data-parallel run (``minialexnet.distributed.init_context``;
        default: this process alone). Every process calls ``fit`` with the same arguments;
        each computes its shard of every batch and of the validation set, and only the main
        process (rank 0) logs and writes ``output``.

    Each history entry holds ``epoch`` (1-based), ``lr``, ``train_loss``, ``train_top1_err``
    (on the augmented batches, dropout on), ``val_top1_err``, ``val_top5_err``,
    ``epoch_seconds``, ``images_per_second``. Raises ``ValueError`` for data, settings or
    devices that cannot train ``model``, ``CheckpointError`` for a checkpoint that cannot be
    resumed, ``OutputFolderError`` for an output folder that cannot be used,
    ``TrainingDiverged`` as soon as a batch's loss is NaN or infinite (the parameters are
    then not updated and no checkpoint is written for that epoch), and ``SaveFailed`` when
    an epoch's files cannot be written (a full disk): the last complete checkpoint is kept.
    """
    check_datasets(model, train_set, val_set, config.batch_size)
    context = SingleProcess() if context is None else context
    check_batches(len(train_set), config.batch_size, context.size)
    log = main_only(log, context)
    output = output if context.is_main else None
    if config.threads is not None:
        set_threads(config.threads)
    optimizer = SGD(
        model, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    held = contextlib.nullcontext() if output is None else hold_run_folder(output, log)
    with held, make_engine(model, optimizer, config, context) as engine:
        state = RunState(
            engine,
            make_schedule(config.schedule, engine.optimizer),
            model.rng if rng is None else rng,
            stats,
        )
        if resume is not None:
            resume_run(state, resume, train_set, config.batch_size, log)
            if output is not None:
                restore_best_file(state, resume, output, log)
        if state.stats is None:
            state.stats = compute_stats(train_set)
        _check_stats(state.stats, train_set)
        _run_epochs(state, train_set, val_set, config, output, log, meta, context)
        engine.sync_to_host()
        if engine.model is not model:  # the CPU split trained its own copy of the weights
            model.load_state_dict(engine.model.state_dict())
    return state.history


def _run_epochs(
    state: RunState, train_set, val_set, config: TrainConfig, output, log, meta, context
) -> None:
    """Epochs ``state.epoch + 1 .. config.epochs``: train, validate, schedule, save, report."""
    engine, first, run_start = state.engine, state.epoch, time.perf_counter()
    while state.epoch < config.epochs:
        record = train_one_epoch(state, train_set, config, log, output)
        engine.sync_to_host()  # parameters and momentum, for the checkpoint
        top1, top5 = _validate(engine, val_set, state.stats, config, context)
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
        log(
            f"epoch {state.epoch}/{config.epochs}: train loss {record['train_loss']:.4f}, "
            f"top-1 err {100 * record['train_top1_err']:.1f}% | val top-1 err "
            f"{100 * top1:.2f}%, top-5 err {100 * top5:.2f}%{' (best)' if is_best else ''} | "
            f"lr {record['lr']:.3g} | {record['epoch_seconds']:.1f} s, ETA {_clock(left)}"
        )


def _validate(engine, val_set, stats, config: TrainConfig, context) -> tuple[float, float]:
    """``(top1_err, top5_err)`` on the validation set; several processes split it."""
    if context.size == 1:
        return evaluate(
            engine,
            val_set,
            stats,
            batch_size=config.batch_size,
            crops=config.val_crops,
            workers=config.workers,
        )
    counts = evaluate_split(engine, val_set, stats, context, config.batch_size, config.val_crops)
    return counts.top1_error, counts.top5_error


def train_one_epoch(state: RunState, train_set, config: TrainConfig, log, output) -> dict:
    """One pass over the training set, one ``engine.submit_step`` per mini-batch (§5).

    Batch i is submitted before batch i-1's result is read, so the loss is read one step
    late. Returns the epoch's history entry without the validation errors. Raises
    ``TrainingDiverged`` when a batch's loss is not finite, naming that batch: neither it
    nor the batch already submitted after it changed the parameters (``submit_step``).
    """
    engine, epoch = state.engine, state.epoch
    loader = BatchLoader(
        train_set,
        config.batch_size,
        engine.input_size,
        state.stats,
        train=True,
        rng=state.data_rng,
        workers=config.workers,
        preprocessing=preprocessing_of(engine),
    )
    n_batches = len(loader)
    lr = engine.optimizer.lr
    loss_sum, correct, seen = 0.0, 0, 0
    start = time.perf_counter()

    def read(i: int, pending) -> None:
        """Wait for batch i's result; check it, add it up, report progress."""
        nonlocal loss_sum, correct, seen
        step = pending.result()
        if not step.updated:
            last = _last_checkpoint_words(state, "good")
            raise TrainingDiverged(
                f"the loss became {step.loss} at epoch {epoch + 1}, batch {i}/{n_batches} (lr "
                f"{lr:g}): training diverged and was stopped; {last}. Try a smaller "
                f"learning rate (--lr)."
            )
        correct += int(step.top1_correct)
        loss_sum += step.loss * step.batch
        seen += step.batch
        if len(state.losses) < WATCHED_STEPS:
            state.losses.append(step.loss)
        if i % config.print_freq == 0 or i == n_batches:
            elapsed = time.perf_counter() - start
            log(
                f"epoch {epoch + 1}/{config.epochs} [{i:>{len(str(n_batches))}}/{n_batches}] "
                f"loss {step.loss:.4f} (avg {loss_sum / seen:.4f}) top-1 err "
                f"{100 * (1 - correct / seen):5.1f}% | {seen / elapsed:6.1f} img/s | "
                f"ETA {_clock(elapsed / i * (n_batches - i))}"
            )
            _warn_early(state, engine.num_classes, log)

    unread = None  # (batch number, PendingStep) submitted, its result not read yet
    for i, (x, labels) in enumerate(loader, start=1):
        submitted = (i, engine.submit_step(x, labels))
        if unread is not None:
            read(*unread)
        unread = submitted
    if unread is not None:
        read(*unread)
    seconds = time.perf_counter() - start
    return {
        "epoch": epoch + 1,
        "lr": lr,
        "train_loss": loss_sum / seen,
        "train_top1_err": 1 - correct / seen,
        "epoch_seconds": seconds,
        "images_per_second": seen / seconds,
    }


def _warn_early(state: RunState, num_classes: int, log) -> None:
    """Say once, in the first progress lines, when the loss shows the run is not learning."""
    if state.warned or len(state.losses) >= WATCHED_STEPS:
        return
    warning = loss_warning(len(state.losses), state.losses, num_classes)
    if warning is not None:
        log(f"warning: {warning}")
        state.warned = True


def save_epoch(
    state: RunState, output, class_names, batch_size: int, is_best: bool, meta: dict | None
) -> None:
    """checkpoint_last (and _best), metrics.csv and the plot, each written atomically.

    Call after ``engine.sync_to_host()``: the checkpoint saves ``engine.model`` and
    ``engine.optimizer`` (the host copies), with ``training_meta`` over ``meta``.
    Raises ``SaveFailed`` (one message, no chained tracebacks) when a file cannot be
    written; ``state.last_checkpoint`` still names the last complete checkpoint.
    """
    info = dict(meta or {})
    info.update(training_meta(state, class_names, batch_size))
    model, optimizer = state.engine.model, state.engine.optimizer
    last = os.path.join(output, CHECKPOINT_LAST)
    try:
        save_checkpoint(last, model, optimizer, state.stats, info)
        state.last_checkpoint, state.saved_epoch = last, state.epoch
        if is_best:
            save_checkpoint(
                os.path.join(output, CHECKPOINT_BEST), model, optimizer, state.stats, info
            )
        write_metrics_csv(os.path.join(output, METRICS_CSV), state.history)
        plot_history(state.history, os.path.join(output, CURVES_PNG))
    except OSError as err:
        raise SaveFailed(_save_failed_message(err, state, output)) from None


def _save_failed_message(err: OSError, state: RunState, output) -> str:
    what = (
        "the disk is full"
        if err.errno in (errno.ENOSPC, errno.EDQUOT)
        else (err.strerror or str(err))
    )
    size = sum(p.nbytes for _, p, _ in state.engine.model.named_parameters()) * 2
    resume = (
        f", then continue with --resume {state.last_checkpoint}" if state.last_checkpoint else ""
    )
    return (
        f"could not save epoch {state.epoch} in {output}: {what} "
        f"({err.filename or 'writing a file'}). {_last_checkpoint_words(state, 'complete')}"
        f". Free some space (one checkpoint takes {size / 2**20:.0f} MB, a run keeps two) "
        f"or choose another --output{resume}"
    )


def _last_checkpoint_words(state: RunState, adjective: str) -> str:
    if state.last_checkpoint is None:
        return "no checkpoint was written"
    return (
        f"the last {adjective} checkpoint is {state.last_checkpoint} (epoch {state.saved_epoch})"
    )


def restore_best_file(state: RunState, resumed, output, log) -> None:
    """Put ``checkpoint_best`` back when a killed run lost it.

    ``checkpoint_last`` is written before ``checkpoint_best``: a run killed between the two
    leaves a last checkpoint whose epoch was the best while the best file is missing or
    older. That last checkpoint *is* the best one, so it is copied into place.
    """
    history = state.history
    if not history or history[-1]["val_top1_err"] != state.best_top1:
        return
    best = os.path.join(output, CHECKPOINT_BEST)
    if os.path.exists(best) and (
        os.path.samefile(best, resumed) or read_meta(best).get("epoch") == state.epoch
    ):
        return
    log(
        f"note: {best} is missing or older than the best epoch ({state.epoch}); "
        f"restoring it from {resumed}"
    )
    with open(resumed, "rb") as source:
        atomic_write(best, lambda f: shutil.copyfileobj(source, f, 1 << 24))


def check_datasets(model, train_set, val_set, batch_size: int) -> None:
    """Clear errors (``ValueError``) for data that cannot train this model."""
    for name, ds in (("training", train_set), ("validation", val_set)):
        if ds.num_classes != model.num_classes:
            raise ValueError(
                f"the {name} set has {ds.num_classes} classes, the model "
                f"{model.num_classes}; build AlexNet(num_classes="
                f"{ds.num_classes}, ...)"
            )
        if ds.image_size < model.input_size:
            raise ValueError(
                f"the {name} images are {ds.image_size}x{ds.image_size}, smaller "
                f"than the {model.input_size}x{model.input_size} crops this "
                f"AlexNet takes"
            )
    if val_set.image_size != train_set.image_size:
        raise ValueError(
            f"training images are {train_set.image_size} px, validation images "
            f"{val_set.image_size} px; both splits must have the same size"
        )
    if batch_size > len(train_set):
        raise ValueError(
            f"batch size {batch_size} is larger than the training set "
            f"({len(train_set)} images); use a batch size <= {len(train_set)}"
        )


def _check_stats(stats, train_set) -> None:
    if stats.image_size != train_set.image_size:
        raise ValueError(
            f"the dataset statistics are for {stats.image_size}x{stats.image_size} "
            f"images, the training images are {train_set.image_size}x"
            f"{train_set.image_size}"
        )


def make_schedule(schedule, optimizer):
    """The learning-rate schedule of ``TrainConfig.schedule`` over ``optimizer`` (or None)."""
    if schedule is None or schedule == "none":
        return None
    if schedule == "plateau":
        return ReduceOnPlateau(optimizer)
    if callable(schedule):
        return schedule(optimizer)
    raise ValueError(
        f"schedule must be 'plateau', None or a callable optimizer -> schedule, got {schedule!r}"
    )


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
