"""Stochastic gradient descent exactly as the paper's §5, and its learning-rate schedules.

The update rule (§5, with the paper's symbols: ``v`` momentum, ``epsilon`` learning rate)::

    v <- 0.9 * v - 0.0005 * epsilon * w - epsilon * dL/dw
    w <- w + v

Note where weight decay sits: it is *inside* the momentum buffer and *scaled by the learning
rate*, so dividing the learning rate by 10 also divides the decay by 10 (as in Caffe and
``torch.optim.SGD(weight_decay=...)``, whose buffer is ``v`` divided by ``-lr``). The paper
applies it to every weight and bias alike; so does this class.

The schedules change ``optimizer.lr`` once per epoch:

- ``ReduceOnPlateau``: the paper's "divide the learning rate by 10 when the validation error
  rate stopped improving with the current learning rate" (three times in about 90 epochs),
  as a rule that waits at least 20 epochs at each rate;
- ``StepSchedule``: a fixed "divide by 10 every ``step_size`` epochs", reproducible without a
  validation set.

Everything a resumed run needs (momentum buffers, learning rate, schedule counters) round-trips
through ``state_dict()`` / ``load_state_dict()``; ``minialexnet.training.checkpoint`` stores it.
"""

from __future__ import annotations

import math

import numpy as np

from minialexnet.backend import kernels


def _check_hyperparameter(value, name: str, allow_zero: bool) -> float:
    """A finite float > 0 (or >= 0 with ``allow_zero``); clear ``ValueError`` otherwise."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")
    return value


def frozen_parameters(model) -> set:
    """Names of ``model``'s frozen parameters (``AlexNet.freeze``); empty for a network that
    cannot freeze layers (e.g. the two-tower split)."""
    frozen = getattr(model, "frozen_parameters", None)
    return set(frozen()) if frozen is not None else set()


class SGD:
    """Momentum SGD with the paper's weight decay (§5), updating parameters in place.

    Parameters
    ----------
    model : anything with ``named_parameters()`` yielding ``(name, param, grad)`` (an
        ``AlexNet``); the parameter arrays are updated in place, so every layer keeps seeing
        its own arrays, and ``grad`` is read afresh at each ``step`` (``backward`` overwrites it).
    lr : learning rate ``epsilon`` (paper: 0.01)
    momentum : (paper: 0.9); 0 gives plain SGD
    weight_decay : (paper: 0.0005), multiplied by ``lr`` inside the update

    ``velocity[name]`` (the momentum ``v``) has the parameter's shape and dtype and starts at 0.
    Each step computes, per parameter array ``w`` with gradient ``g``::

        v *= momentum;  v -= (weight_decay * lr) * w;  v -= lr * g;  w += v

    i.e. the paper's formula, term by term, in the parameter's dtype (float32 in training):
    ``sgd_update`` of the CPU backend's kernels (``kernels/numpy/sgd.py``, compiled in
    ``kernels/cpu/sgd.py``, the same numbers).
    Frozen parameters (``frozen_parameters``, fine-tuning) are skipped entirely: no
    momentum, no weight decay, so they stay bit-identical.
    """

    def __init__(
        self, model, lr: float = 0.01, momentum: float = 0.9, weight_decay: float = 0.0005
    ) -> None:
        self.model = model
        self.lr = _check_hyperparameter(lr, "lr", allow_zero=False)
        self.momentum = _check_hyperparameter(momentum, "momentum", allow_zero=True)
        self.weight_decay = _check_hyperparameter(weight_decay, "weight_decay", allow_zero=True)
        self.velocity: dict[str, np.ndarray] = {
            name: np.zeros(param.shape, dtype=param.dtype)
            for name, param, _ in model.named_parameters()
        }

    def step(self) -> None:
        """Apply one update to every parameter from the gradients of the last ``backward``."""
        frozen = frozen_parameters(self.model)
        for name, w, g in self.model.named_parameters():
            if name in frozen:
                continue
            if g is None or g.shape != w.shape:
                raise RuntimeError(
                    f"SGD.step: no gradient of shape {w.shape} for {name}; run "
                    f"model.backward(...) before optimizer.step()"
                )
            # kernels/numpy/sgd.py reads like the formula; the Numba twin does it in one pass.
            kernels().sgd_update(
                w, g, self.velocity[name], self.lr, self.momentum, self.weight_decay
            )

    def state_dict(self) -> dict:
        """``{"lr", "momentum", "weight_decay": float, "velocity": {name: array}}`` (copies)."""
        return {
            "lr": self.lr,
            "momentum": self.momentum,
            "weight_decay": self.weight_decay,
            "velocity": {name: v.copy() for name, v in self.velocity.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore what ``state_dict`` returned; momentum buffers must match names and shapes."""
        velocity = state.get("velocity", {})
        missing = sorted(set(self.velocity) - set(velocity))
        unexpected = sorted(set(velocity) - set(self.velocity))
        if missing or unexpected:
            raise ValueError(
                f"optimizer state does not match the model: missing momentum "
                f"buffers {missing}, unexpected {unexpected}"
            )
        for name, v in velocity.items():
            if v.shape != self.velocity[name].shape:
                raise ValueError(
                    f"optimizer state: momentum buffer {name} has shape {v.shape}, "
                    f"the parameter has {self.velocity[name].shape}"
                )
            self.velocity[name][...] = v
        for key in ("lr", "momentum", "weight_decay"):
            if key in state:
                setattr(self, key, float(state[key]))


class ReduceOnPlateau:
    """Divide the learning rate by 10 when the validation error stops improving (§5).

    §5: "The heuristic which we followed was to divide the learning rate by 10 when the
    validation error rate stopped improving with the current learning rate. The learning rate
    was initialized at 0.01 and reduced three times prior to termination. We trained the
    network for roughly 90 cycles". That is about 20-30 epochs at each rate, decided by a
    person looking at the curves; BVLC's Caffe reproduction fixed it to a division every
    100,000 iterations of 256 images (20 epochs), 450,000 in all. This class makes "stopped
    improving" a rule with that rhythm, robust to a small or noisy validation set.

    ``step(val_error)`` is called once per epoch. An epoch *improves* when its error is below
    the best so far by more than ``max(threshold, rel_threshold * best)``. The rate is
    multiplied by ``factor`` at the end of an epoch when all of these hold:

    - more than ``patience`` epochs in a row have not improved;
    - at least ``min_epochs`` epochs have run at the current rate (counted from the start or
      from the last reduction): no reduction before epoch 20, 40, 60 by default, the paper's
      rhythm, however flat the start;
    - fewer than ``max_reductions`` reductions so far (the paper: three, 0.01 -> 0.00001).

    After a reduction both counts start again (``best`` is kept).

    Why these defaults (``min_epochs=20, patience=3, rel_threshold=0.01``): the earlier rule
    (patience 2, no minimum, any improvement counts) fired at epochs 5, 8 and 11 on a run whose
    error sat at 99% from the start (a slow start on 100 validation images, where one image is
    1%), so the rate was 0.00001 before the network had begun to learn. The minimum keeps the
    rate at least as long as the paper's shortest stretch; the relative threshold ignores
    changes under 1% of the error (under 0.4 points at 40% error: the noise of four images in
    a 1,000-image validation set), and more than ``patience`` (3) epochs without such a gain
    still catches a real plateau within a few epochs of the minimum. A run shorter than
    ``min_epochs`` keeps its rate: use ``StepSchedule`` (or a smaller ``min_epochs``) there.

    ``state_dict`` / ``load_state_dict`` round-trip every field. A state saved before
    ``min_epochs`` and ``rel_threshold`` existed loads as the rule it was written under
    (``min_epochs=0``, ``rel_threshold=0``), so an old run resumes exactly as it would have
    continued.
    """

    def __init__(
        self,
        optimizer: SGD,
        factor: float = 0.1,
        patience: int = 3,
        max_reductions: int = 3,
        threshold: float = 0.0,
        *,
        min_epochs: int = 20,
        rel_threshold: float = 0.01,
    ) -> None:
        if not 0 < factor < 1:
            raise ValueError(f"factor must lie in (0, 1), got {factor!r}")
        for value, name in (
            (patience, "patience"),
            (max_reductions, "max_reductions"),
            (min_epochs, "min_epochs"),
        ):
            if isinstance(value, bool) or int(value) != value or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        self.optimizer = optimizer
        self.factor = float(factor)
        self.patience = int(patience)
        self.max_reductions = int(max_reductions)
        self.min_epochs = int(min_epochs)
        self.threshold = _check_hyperparameter(threshold, "threshold", allow_zero=True)
        self.rel_threshold = _check_hyperparameter(rel_threshold, "rel_threshold", allow_zero=True)
        if self.rel_threshold >= 1:
            raise ValueError(
                f"rel_threshold is a fraction of the best error and must lie in "
                f"[0, 1), got {rel_threshold!r}"
            )
        self.best = math.inf
        self.bad_epochs = 0
        self.epochs_at_rate = 0
        self.reductions = 0

    def improves(self, val_error: float) -> bool:
        """Whether ``val_error`` beats the best so far by the thresholds (always, at first)."""
        if math.isinf(self.best):
            return True
        return val_error < self.best - max(self.threshold, self.rel_threshold * self.best)

    def step(self, val_error: float) -> float:
        """Record one epoch's validation error; returns the learning rate for the next epoch."""
        self.epochs_at_rate += 1
        if self.improves(val_error):
            self.best = float(val_error)
            self.bad_epochs = 0
            return self.optimizer.lr
        self.bad_epochs += 1
        if (
            self.bad_epochs > self.patience
            and self.epochs_at_rate >= self.min_epochs
            and self.reductions < self.max_reductions
        ):
            self.optimizer.lr *= self.factor
            self.reductions += 1
            self.bad_epochs = 0
            self.epochs_at_rate = 0
        return self.optimizer.lr

    def state_dict(self) -> dict:
        """JSON-serialisable counters (``best`` is ``None`` before the first epoch)."""
        return {
            "name": "plateau",
            "factor": self.factor,
            "patience": self.patience,
            "max_reductions": self.max_reductions,
            "threshold": self.threshold,
            "min_epochs": self.min_epochs,
            "rel_threshold": self.rel_threshold,
            "best": None if math.isinf(self.best) else self.best,
            "bad_epochs": self.bad_epochs,
            "epochs_at_rate": self.epochs_at_rate,
            "reductions": self.reductions,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore ``state_dict()``; fields missing from older states get the old rule's values."""
        _check_schedule_name(state, "plateau")
        self.factor = float(state["factor"])
        self.patience = int(state["patience"])
        self.max_reductions = int(state["max_reductions"])
        self.threshold = float(state["threshold"])
        self.min_epochs = int(state.get("min_epochs", 0))  # the rule before min_epochs
        self.rel_threshold = float(state.get("rel_threshold", 0.0))
        self.best = math.inf if state["best"] is None else float(state["best"])
        self.bad_epochs = int(state["bad_epochs"])
        self.epochs_at_rate = int(state.get("epochs_at_rate", 0))
        self.reductions = int(state["reductions"])


class StepSchedule:
    """Multiply the learning rate by ``gamma`` (default 0.1) every ``step_size`` epochs.

    ``step(val_error=None)`` is called once per epoch (the error is ignored), so after epoch
    ``e`` (1-based) the rate is ``base_lr * gamma ** (e // step_size)``.
    """

    def __init__(self, optimizer: SGD, step_size: int, gamma: float = 0.1) -> None:
        if int(step_size) != step_size or step_size < 1:
            raise ValueError(f"step_size must be an integer >= 1, got {step_size!r}")
        if not 0 < gamma < 1:
            raise ValueError(f"gamma must lie in (0, 1), got {gamma!r}")
        self.optimizer = optimizer
        self.step_size = int(step_size)
        self.gamma = float(gamma)
        self.base_lr = optimizer.lr
        self.epochs = 0

    def step(self, val_error: float | None = None) -> float:
        """Count one epoch; returns the learning rate for the next epoch."""
        self.epochs += 1
        self.optimizer.lr = self.base_lr * self.gamma ** (self.epochs // self.step_size)
        return self.optimizer.lr

    def state_dict(self) -> dict:
        return {
            "name": "step",
            "step_size": self.step_size,
            "gamma": self.gamma,
            "base_lr": self.base_lr,
            "epochs": self.epochs,
        }

    def load_state_dict(self, state: dict) -> None:
        _check_schedule_name(state, "step")
        self.step_size = int(state["step_size"])
        self.gamma = float(state["gamma"])
        self.base_lr = float(state["base_lr"])
        self.epochs = int(state["epochs"])


SCHEDULES = {"plateau": ReduceOnPlateau, "step": StepSchedule}


def _check_schedule_name(state: dict, expected: str) -> None:
    if state.get("name") != expected:
        raise ValueError(f"schedule state is for {state.get('name')!r}, not {expected!r}")
