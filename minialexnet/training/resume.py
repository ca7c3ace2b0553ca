"""Continuing a run: what a training checkpoint stores beyond the weights, and putting it back.

A checkpoint of ``fit`` holds, besides the parameters and the SGD momentum
(``minialexnet.training.checkpoint``), the epoch count, the best validation error, the
schedule's counters, both random generators' states (data choices and dropout), the batch
size, the class names and the history. ``RunState`` is that state in memory;
``training_meta`` writes it and ``resume_run`` reads it, so a resumed run continues
*bit-identically* to an uninterrupted one.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numpy as np

from minialexnet.training.checkpoint import CheckpointError, load_checkpoint, restore_model

#: The entries ``training_meta`` adds; a checkpoint without them cannot be resumed.
TRAINING_KEYS = ("epoch", "history", "best_top1", "schedule", "rng", "optimizer")


@dataclass
class RunState:
    """What a run carries from one epoch to the next (and a checkpoint stores).

    engine : the engine being trained (``minialexnet.engine``); its ``model`` holds the dropout
        generator ``model.rng`` and its ``optimizer`` the learning rate and momentum
    scheduler : ``ReduceOnPlateau``, ``StepSchedule`` or ``None`` (constant rate)
    data_rng : the generator of the data choices (order, crops, flips, colour noise; §4.1)
    stats : the training set's ``DatasetStats`` (mean image §2, RGB PCA §4.1)
    history : one dict per finished epoch; best_top1 : the lowest validation top-1 error so
    far; epoch : how many epochs are done
    last_checkpoint : the path of the last complete checkpoint of this run (written or
        resumed from; ``None`` before the first), whose epoch is ``saved_epoch``
    losses : this process's mini-batch losses of the first ``WATCHED_STEPS`` steps, and
    warned : whether ``minialexnet.diagnostics.loss_warning`` has spoken (not checkpointed)
    """

    engine: object
    scheduler: object
    data_rng: np.random.Generator
    stats: object = None
    history: list = field(default_factory=list)
    best_top1: float = math.inf
    epoch: int = 0
    last_checkpoint: str | None = None
    saved_epoch: int = 0
    losses: list = field(default_factory=list)
    warned: bool = False


def training_meta(state: RunState, class_names, batch_size: int) -> dict:
    """The checkpoint metadata that lets ``resume_run`` continue after ``state``'s last epoch."""
    return {
        "epoch": state.history[-1]["epoch"],
        "best_top1": state.best_top1,
        "batch_size": batch_size,
        "class_names": list(class_names),
        "schedule": None if state.scheduler is None else state.scheduler.state_dict(),
        "rng": {
            "data": state.data_rng.bit_generator.state,
            "model": state.engine.model.rng.bit_generator.state,
        },
        "history": state.history,
    }


def resume_run(state: RunState, path, train_set, batch_size: int, log=print) -> None:
    """Put the run saved in the checkpoint ``path`` back into ``state``, in place.

    Restores the parameters and momentum (then ``engine.load_from_host()``), the learning
    rate and schedule, both generators, the history, the best error and the epoch count;
    the dataset statistics when the checkpoint has them. Raises ``CheckpointError`` naming
    the file when it cannot be resumed on this model, data or schedule.
    """
    ckpt = load_checkpoint(path)
    model, optimizer, meta = state.engine.model, state.engine.optimizer, ckpt.meta
    restore_model(model, ckpt, path)
    _check_resumable(meta, path, train_set)
    try:
        velocity = model.split(ckpt.optim) if hasattr(model, "split") else ckpt.optim
        optimizer.load_state_dict({"velocity": velocity, **meta["optimizer"]})
    except ValueError as err:
        raise CheckpointError(f"{path}: {err}") from None
    _restore_schedule(state.scheduler, meta["schedule"], path)
    _restore_generators(meta["rng"], path, state.data_rng, model.rng)
    if meta.get("batch_size") != batch_size:
        log(
            f"note: resuming with batch size {batch_size}, the checkpoint used "
            f"{meta.get('batch_size')}: the run will differ from an uninterrupted one"
        )
    best = meta["best_top1"]
    state.epoch, state.history = int(meta["epoch"]), list(meta["history"])
    state.best_top1 = math.inf if best is None else best
    state.last_checkpoint, state.saved_epoch = os.fspath(path), state.epoch
    if ckpt.stats is not None:
        state.stats = ckpt.stats
    state.engine.load_from_host()


def check_training_keys(meta: dict, path) -> None:
    """``CheckpointError`` unless the checkpoint holds what resuming needs (``TRAINING_KEYS``;
    a check that needs no data, so a command line makes it before building any)."""
    for key in TRAINING_KEYS:
        if key not in meta:
            raise CheckpointError(
                f"{path} is not a training checkpoint (no {key!r} entry); "
                f"it can be evaluated but not resumed"
            )


def _check_resumable(meta: dict, path, train_set) -> None:
    check_training_keys(meta, path)
    if meta.get("class_names") != list(train_set.class_names):
        names = meta.get("class_names") or []
        raise CheckpointError(
            f"{path} was trained on other classes ({len(names)} "
            f"classes, e.g. {names[:3]}); resume it on the same dataset"
        )


def _restore_schedule(scheduler, saved: dict | None, path) -> None:
    if (scheduler is None) != (saved is None):
        raise CheckpointError(
            f"{path} was trained with schedule {(saved or {}).get('name')!r}; resume with the same"
        )
    if scheduler is not None:
        try:
            scheduler.load_state_dict(saved)
        except (ValueError, KeyError) as err:
            raise CheckpointError(f"{path}: {err}") from None


def _restore_generators(saved: dict, path, data_rng, model_rng) -> None:
    """Both generators back to their states after the checkpoint's epoch (same kinds only)."""
    for gen, gen_state in ((data_rng, saved["data"]), (model_rng, saved["model"])):
        if gen_state["bit_generator"] != type(gen.bit_generator).__name__:
            raise CheckpointError(
                f"{path} stores a {gen_state['bit_generator']} generator "
                f"state; this run uses {type(gen.bit_generator).__name__}"
            )
    data_rng.bit_generator.state = saved["data"]
    model_rng.bit_generator.state = saved["model"]
