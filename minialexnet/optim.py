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
  rate stopped improving with the current learning rate" (three times in about 90 epochs);
- ``StepSchedule``: a fixed "divide by 10 every ``step_size`` epochs", reproducible without a
  validation set.

Everything a resumed run needs (momentum buffers, learning rate, schedule counters) round-trips
through ``state_dict()`` / ``load_state_dict()``; ``minialexnet.checkpoint`` stores it.
"""
from __future__ import annotations

import math

import numpy as np


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

    i.e. the paper's formula, term by term, in the parameter's dtype (float32 in training).
    Frozen parameters (``frozen_parameters``, fine-tuning) are skipped entirely: no
    momentum, no weight decay, so they stay bit-identical.
    """

    def __init__(self, model, lr: float = 0.01, momentum: float = 0.9,
                 weight_decay: float = 0.0005) -> None:
        self.model = model
        self.lr = _check_hyperparameter(lr, "lr", allow_zero=False)
        self.momentum = _check_hyperparameter(momentum, "momentum", allow_zero=True)
        self.weight_decay = _check_hyperparameter(weight_decay, "weight_decay",
                                                  allow_zero=True)
        self.velocity: dict[str, np.ndarray] = {
            name: np.zeros(param.shape, dtype=param.dtype)
            for name, param, _ in model.named_parameters()}

    def step(self) -> None:
        """Apply one update to every parameter from the gradients of the last ``backward``."""
        frozen = frozen_parameters(self.model)
        for name, w, g in self.model.named_parameters():
            if name in frozen:
                continue
            if g is None or g.shape != w.shape:
                raise RuntimeError(f"SGD.step: no gradient of shape {w.shape} for {name}; run "
                                   f"model.backward(...) before optimizer.step()")
            v = self.velocity[name]
            dtype = w.dtype.type
            v *= dtype(self.momentum)
            v -= dtype(self.weight_decay * self.lr) * w
            v -= dtype(self.lr) * g
            w += v

    def state_dict(self) -> dict:
        """``{"lr", "momentum", "weight_decay": float, "velocity": {name: array}}`` (copies)."""
        return {"lr": self.lr, "momentum": self.momentum, "weight_decay": self.weight_decay,
                "velocity": {name: v.copy() for name, v in self.velocity.items()}}

    def load_state_dict(self, state: dict) -> None:
        """Restore what ``state_dict`` returned; momentum buffers must match names and shapes."""
        velocity = state.get("velocity", {})
        missing = sorted(set(self.velocity) - set(velocity))
        unexpected = sorted(set(velocity) - set(self.velocity))
        if missing or unexpected:
            raise ValueError(f"optimizer state does not match the model: missing momentum "
                             f"buffers {missing}, unexpected {unexpected}")
        for name, v in velocity.items():
            if v.shape != self.velocity[name].shape:
                raise ValueError(f"optimizer state: momentum buffer {name} has shape {v.shape}, "
                                 f"the parameter has {self.velocity[name].shape}")
            self.velocity[name][...] = v
        for key in ("lr", "momentum", "weight_decay"):
            if key in state:
                setattr(self, key, float(state[key]))


class ReduceOnPlateau:
    """Divide the learning rate by 10 when the validation error stops improving (§5).

    ``step(val_error)`` is called once per epoch. An epoch *improves* when its error is below
    the best so far by more than ``threshold``. After more than ``patience`` epochs in a row
    without improvement, ``optimizer.lr *= factor`` and the count starts again; this happens
    at most ``max_reductions`` times (the paper: three times, 0.01 -> 0.00001).

    The paper watched the curves by hand; ``patience`` makes "stopped improving" a rule (the
    default 2 lets one noisy epoch of a small validation set pass without a reduction).
    """

    def __init__(self, optimizer: SGD, factor: float = 0.1, patience: int = 2,
                 max_reductions: int = 3, threshold: float = 0.0) -> None:
        if not 0 < factor < 1:
            raise ValueError(f"factor must lie in (0, 1), got {factor!r}")
        if int(patience) != patience or patience < 0:
            raise ValueError(f"patience must be an integer >= 0, got {patience!r}")
        if int(max_reductions) != max_reductions or max_reductions < 0:
            raise ValueError(f"max_reductions must be an integer >= 0, got {max_reductions!r}")
        self.optimizer = optimizer
        self.factor = float(factor)
        self.patience = int(patience)
        self.max_reductions = int(max_reductions)
        self.threshold = _check_hyperparameter(threshold, "threshold", allow_zero=True)
        self.best = math.inf
        self.bad_epochs = 0
        self.reductions = 0

    def step(self, val_error: float) -> float:
        """Record one epoch's validation error; returns the learning rate for the next epoch."""
        if val_error < self.best - self.threshold:
            self.best = float(val_error)
            self.bad_epochs = 0
        else:
            self.bad_epochs += 1
            if self.bad_epochs > self.patience and self.reductions < self.max_reductions:
                self.optimizer.lr *= self.factor
                self.reductions += 1
                self.bad_epochs = 0
        return self.optimizer.lr

    def state_dict(self) -> dict:
        """JSON-serialisable counters (``best`` is ``None`` before the first epoch)."""
        return {"name": "plateau", "factor": self.factor, "patience": self.patience,
                "max_reductions": self.max_reductions, "threshold": self.threshold,
                "best": None if math.isinf(self.best) else self.best,
                "bad_epochs": self.bad_epochs, "reductions": self.reductions}

    def load_state_dict(self, state: dict) -> None:
        _check_schedule_name(state, "plateau")
        self.factor = float(state["factor"])
        self.patience = int(state["patience"])
        self.max_reductions = int(state["max_reductions"])
        self.threshold = float(state["threshold"])
        self.best = math.inf if state["best"] is None else float(state["best"])
        self.bad_epochs = int(state["bad_epochs"])
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
        return {"name": "step", "step_size": self.step_size, "gamma": self.gamma,
                "base_lr": self.base_lr, "epochs": self.epochs}

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
