"""The one engine protocol: what the trainer, evaluation, data parallelism and fine-tuning drive.

An *engine* owns one network's parameters on some hardware and runs the paper's training step
(§5) there. Four engines answer the same calls, so the epoch loop never asks which hardware it
runs on:

========================================  ===============================================
``CPUEngine(AlexNet(...), SGD(...))``      the layers on the CPU (NumPy or Numba kernels)
``CPUEngine(TwoTowerAlexNet(...), ...)``   the §3.2 split on two CPU threads
``minialexnet.gpu.CudaAlexNet``            the whole step on one GPU
``minialexnet.gpu.CudaTwoTowerAlexNet``    the §3.2 split on GPUs
========================================  ===============================================

The protocol (every engine has exactly these members):

``model``
    The host network (``AlexNet`` or ``TwoTowerAlexNet``): the reference and the checkpoint
    format. Current after ``sync_to_host()``.
``optimizer``
    The ``minialexnet.optim.SGD`` over ``model`` (``None`` for inference only). Engines read
    its ``lr``, ``momentum`` and ``weight_decay`` at every step, so schedules work unchanged.
``input_size``, ``num_classes``
    As ``AlexNet``'s.
``forward_backward(x, labels) -> StepResult``
    Forward with dropout, softmax cross-entropy, and, when the loss is finite, backward: the
    gradients (``gradient_arrays()``) hold ``dL/dw`` of the batch's *mean* loss.
``apply_update()``
    One SGD step from the current gradients (``v <- m v - wd lr w - lr g; w <- w + v``).
``train_step(x, labels) -> StepResult``
    ``forward_backward`` then, if the loss was finite, ``apply_update``; otherwise the
    parameters are left untouched and ``StepResult.updated`` is False.
``submit_step(x, labels) -> PendingStep``
    The same step, handed over without waiting for its numbers: ``.result()`` (blocking)
    returns its ``StepResult``. The trainer submits batch i+1 before it reads batch i's
    result, so a GPU engine never waits for the host (nor the host for the GPU) between
    steps. The NaN guard stays exact although the host learns of a non-finite loss one step
    late: once a submitted step's loss is not finite, that step *and every later submitted
    step* leave the parameters and momentum untouched (``updated`` False) until
    ``load_from_host()`` (a resume) clears the divergence. So ``submit_step(...).result()``
    equals ``train_step(...)`` as long as no submitted step has diverged; ``train_step``
    itself never looks at, nor sets, that state. Engines that compute on the host's time
    (the CPU ones, data parallelism) run the step at once and return a ``FinishedStep``;
    the GPU engines queue it (``minialexnet.gpu.step``).
``forward(x, train=False) -> logits``
    Host float32 logits ``(N, num_classes)`` of host images ``(N, 3, S, S)``, for evaluation.
``gradient_arrays() -> list``
    The gradient arrays ``apply_update`` reads, in ``named_parameters`` order, frozen
    parameters (fine-tuning, ``AlexNet.freeze``) left out (host NumPy
    arrays on CPU engines, device arrays on GPU engines). Writing into them changes the next
    update: data parallelism sums them across processes there (one flat Allreduce).
``sync_to_host()`` / ``load_from_host()``
    Copy parameters and momentum from the engine into ``model`` / ``optimizer`` (before a
    checkpoint or an evaluation on the host), and back (after a resume; this also clears a
    divergence of ``submit_step``). Nothing to copy on the CPU.
``close()``
    Release threads or device memory; an engine is also a context manager.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Protocol

import numpy as np

from minialexnet.allocator import reuse_freed_memory
from minialexnet.layers import SoftmaxCrossEntropy
from minialexnet.metrics import topk_correct
from minialexnet.optim import frozen_parameters


class StepResult(NamedTuple):
    """What one training step reports to the host.

    loss : mean cross-entropy of the batch (before the update); top1_correct, top5_correct :
    how many labels were the first / among the five highest logits; batch : examples in the
    batch; updated : False when the loss was not finite, in which case backward and the update
    were skipped (the parameters are unchanged).
    """

    loss: float
    top1_correct: int
    top5_correct: int
    batch: int
    updated: bool


class PendingStep(Protocol):
    """A submitted training step (``Engine.submit_step``): ``result()`` waits for it to end
    and returns its ``StepResult`` (the same object on every call)."""

    def result(self) -> StepResult: ...


class FinishedStep:
    """The ``PendingStep`` of an engine that ran the step at once: ``result()`` is ``step``."""

    __slots__ = ("step",)

    def __init__(self, step: StepResult) -> None:
        self.step = step

    def result(self) -> StepResult:
        return self.step

    def __repr__(self) -> str:
        return f"FinishedStep({self.step!r})"


def run_step(engine, x, labels, halted: bool = False) -> StepResult:
    """``engine.forward_backward`` then ``engine.apply_update`` if the loss was finite and
    ``halted`` is False (a submitted step diverged before: see ``submit_step`` in the module
    docstring); otherwise ``updated`` is False and the parameters are untouched. The
    ``train_step`` (``halted=False``) and ``submit_step`` of the engines that compute on the
    host's time."""
    step = engine.forward_backward(x, labels)
    if step.updated and not halted:
        engine.apply_update()
        return step
    return step._replace(updated=False)


class Engine(Protocol):
    """The calls every engine answers (see the module docstring)."""

    model: object
    optimizer: object
    input_size: int
    num_classes: int

    def forward_backward(self, x, labels) -> StepResult: ...

    def apply_update(self) -> None: ...

    def train_step(self, x, labels) -> StepResult: ...

    def submit_step(self, x, labels) -> PendingStep: ...

    def forward(self, x, train: bool = False) -> np.ndarray: ...

    def gradient_arrays(self) -> list: ...

    def sync_to_host(self) -> None: ...

    def load_from_host(self) -> None: ...

    def close(self) -> None: ...


def count_correct(logits: np.ndarray, labels: np.ndarray) -> tuple[int, int]:
    """``(top-1, top-5)`` correct counts of host ``logits`` (N, C) for ``labels`` (N,)."""
    return (int(topk_correct(logits, labels, 1).sum()), int(topk_correct(logits, labels, 5).sum()))


class CPUEngine:
    """The engine of a host network: ``AlexNet`` or the CPU ``TwoTowerAlexNet``.

    Parameters
    ----------
    model : anything with ``AlexNet``'s protocol (``forward``, ``backward``,
        ``named_parameters``, ``input_size``, ``num_classes``)
    optimizer : ``minialexnet.optim.SGD`` over ``model``, or ``None`` for inference only
    """

    def __init__(self, model, optimizer=None) -> None:
        self.model, self.optimizer = model, optimizer
        self.input_size, self.num_classes = model.input_size, model.num_classes
        self._loss = SoftmaxCrossEntropy()
        reuse_freed_memory()  # each step's large arrays: no fresh pages (allocator.py)
        self._diverged = False  # a submitted step's loss was not finite (submit_step)

    def forward_backward(self, x: np.ndarray, labels: np.ndarray) -> StepResult:
        """Forward (dropout on), mean cross-entropy and, if finite, backward."""
        logits = self.model.forward(x, train=True)
        loss = self._loss.forward(logits, labels)
        top1, top5 = count_correct(logits, labels)
        finite = math.isfinite(loss)
        if finite:
            self.model.backward(self._loss.backward(), need_dx=False)
        return StepResult(loss, top1, top5, len(labels), finite)

    def apply_update(self) -> None:
        if self.optimizer is None:
            raise RuntimeError(
                "this engine has no optimizer: build it with CPUEngine(model, SGD(model, lr=...))"
            )
        self.optimizer.step()

    def train_step(self, x: np.ndarray, labels: np.ndarray) -> StepResult:
        return run_step(self, x, labels)

    def submit_step(self, x: np.ndarray, labels: np.ndarray) -> FinishedStep:
        """``train_step`` at once, except that after a submitted step whose loss was not
        finite no update happens until ``load_from_host()`` (module docstring)."""
        step = run_step(self, x, labels, halted=self._diverged)
        self._diverged = not step.updated
        return FinishedStep(step)

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        return self.model.forward(x, train=train)

    def gradient_arrays(self) -> list:
        """The trainable parameters' gradients (frozen ones have none, ``AlexNet.freeze``)."""
        frozen = frozen_parameters(self.model)
        return [grad for name, _, grad in self.model.named_parameters() if name not in frozen]

    def sync_to_host(self) -> None:
        """Nothing to copy: the parameters already live in ``model``."""

    def load_from_host(self) -> None:
        """Nothing to copy (the parameters already live in ``model``); clears a divergence
        of ``submit_step``."""
        self._diverged = False

    def close(self) -> None:
        close = getattr(self.model, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> CPUEngine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"CPUEngine({self.model!r})"
