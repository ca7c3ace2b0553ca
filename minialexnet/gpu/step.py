"""What both GPU engines share, written once: the checks, the upload, the loss, the §5 update.

``CudaAlexNet`` (one GPU, ``model.py``) and ``CudaTwoTowerAlexNet`` (the §3.2 split over GPU
towers, ``towers.py``) run the same training step and differ only in how a forward and a
backward pass travel through the network::

    check       images (N, 3, S, S) and labels (N,), on the host or already on the GPU
    upload      host arrays copied once into reused device buffers (``LossHead.upload``),
                through pinned host memory, asynchronously (``PinnedStaging``)
    forward     the engine's own pass, dropout on                     -> device logits
    loss        softmax cross-entropy on the GPU: the loss sum and the top-1 and top-5
                counts, three numbers in a device buffer (``LossHead``)
    backward    dL/dlogits on the GPU (``LossHead.gradient``), then the engine's own pass
    update      v <- m v - wd lr w - lr g;  w <- w + v  for every named device parameter

Two ways to run it. ``train_step`` (and ``forward_backward``) reads the three numbers back at
once (``LossHead.loss``) and skips backward and the update when the loss is not finite: the
host waits for the GPU at every step. ``submit_step`` queues the whole step and returns
without waiting: between the loss and the backward a one-thread kernel sets the engine's
sticky device flag when the loss is not finite (``kernels/cuda/divergence.py``), the update
kernel skips every parameter while the flag is set, and the numbers (with the flag) are
copied asynchronously into pinned host memory (``StepReports``, two buffers in turn, as step
i+1 is queued before the host reads step i); ``PendingGPUStep.result()`` waits for that copy
alone. The flag is cleared only by ``load_from_host()`` (a resume), so the step queued
after a diverged one, before the host knew, leaves the parameters alone too.

``GPUEngine`` holds the part of the engine protocol (``minialexnet.engine``) that follows
from this: ``forward_backward``, ``apply_update``, ``train_step``, ``submit_step``,
``evaluate_batch``, ``gradient_arrays``, the input checks with their messages, and the
context manager. An engine subclass supplies ``_reserve(n)`` (buffers for ``n`` images),
``_forward_loss(x, labels, train, diverged=None)``, ``_backward()``,
``_update(diverged=None)``, ``named_parameters()`` and ``config``, and calls
``_make_divergence_flag`` once and ``_clear_divergence`` in its ``load_from_host``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda

from minialexnet.checks import check_array, check_labels
from minialexnet.engine import StepResult
from minialexnet.gpu.layers import Scratch
from minialexnet.kernels.cuda._launch import check_device_array, is_device_array
from minialexnet.kernels.cuda.divergence import mark_divergence
from minialexnet.kernels.cuda.sgd import sgd_update
from minialexnet.kernels.cuda.softmax_cross_entropy import (
    softmax_cross_entropy_backward,
    softmax_cross_entropy_forward,
)


class PinnedStaging:
    """Host-to-device copies through page-locked ("pinned") host memory, two buffers in turn.

    A copy from ordinary (pageable) memory makes the driver first copy the data into a pinned
    buffer of its own, with the host waiting; from pinned memory the GPU's copy engine reads
    it directly, at full bus speed, while the host goes on (``cudaMemcpyAsync``). The batch
    is written into one of two pinned buffers, and the copy is queued on ``stream``; an event
    recorded after the copy says when that buffer may be written again, so the next batch
    goes into the other buffer and the host waits only if *that* one is still being read.

    The images arrive as float32: the augmentation (§4.1: mean subtraction, PCA colour noise)
    has made them real numbers on the host, so uint8 would need that work moved to the GPU.
    """

    def __init__(self, size: int, dtype, stream=0) -> None:
        self.size, self.dtype, self.stream = max(1, int(size)), np.dtype(dtype), stream
        self._buffers = [None, None]
        self._done = [None, None]  # event after the last copy out of each buffer
        self._turn = 0

    def copy(self, host, device_view) -> None:
        """Queue ``device_view[...] = host`` (cast to this dtype) on the stream."""
        k = self._turn
        self._turn = 1 - k
        if self._done[k] is not None:
            self._done[k].synchronize()  # the copy that read buffer k is over
        if self._buffers[k] is None:
            self._buffers[k] = cuda.pinned_array(self.size, dtype=self.dtype)
            self._done[k] = cuda.event()
        staged = self._buffers[k][: host.size].reshape(host.shape)
        np.copyto(staged, host, casting="unsafe")
        device_view.copy_to_device(staged, stream=self.stream)
        self._done[k].record(self.stream)


class PendingGPUStep:
    """A step queued by ``GPUEngine.submit_step``: its four numbers (loss sum, top-1, top-5,
    the diverged flag) are on their way into a pinned host buffer; ``done`` is recorded on
    the stream after the copy. ``result()`` waits for that event only (not for the rest of
    the step: backward and the update may still run) and builds the ``StepResult`` once."""

    def __init__(self, report: np.ndarray, done, batch: int) -> None:
        self._report, self._done, self._batch = report, done, batch
        self._result: StepResult | None = None

    def result(self) -> StepResult:
        if self._result is None:
            self._done.synchronize()
            loss_sum, top1, top5, diverged = (float(value) for value in self._report)
            self._result = StepResult(
                loss_sum / self._batch, int(top1), int(top5), self._batch, diverged == 0
            )
            self._report = self._done = None  # the buffer may now take another step's
        return self._result


class StepReports:
    """Where the four numbers of submitted steps land on the host: two pinned buffers (and
    events) used in turn, so step i+1's copy is queued while the host has not yet read
    step i. A buffer is only reused once the step it holds has been read (``result()`` is
    called here first if the caller has not): three steps in flight make the host wait."""

    def __init__(self, stream=0) -> None:
        self.stream = stream
        self._buffers = [None, None]
        self._events = [None, None]
        self._steps: list[PendingGPUStep | None] = [None, None]
        self._turn = 0

    def submit(self, totals, batch: int) -> PendingGPUStep:
        """Queue the copy of device ``totals`` (4,) into the next pinned buffer."""
        k = self._turn
        self._turn = 1 - k
        if self._steps[k] is not None:
            self._steps[k].result()  # read before its buffer is overwritten
        if self._buffers[k] is None:
            self._buffers[k] = cuda.pinned_array(4, dtype=np.float32)
            self._events[k] = cuda.event()
        totals.copy_to_host(self._buffers[k], stream=self.stream)
        self._events[k].record(self.stream)
        self._steps[k] = PendingGPUStep(self._buffers[k], self._events[k], batch)
        return self._steps[k]


class LossHead:
    """The buffers at both ends of the network on one GPU stream: the uploaded batch and the
    softmax cross-entropy's (log-sum-exp, per-example loss and rank, dL/dlogits, totals),
    each sized for ``capacity`` images and allocated on first use (with the GPU current),
    and the pinned buffers that bring submitted steps' totals back (``StepReports``)."""

    def __init__(self, capacity: int, input_size: int, num_classes: int, stream=0) -> None:
        self.input_size, self.stream = input_size, stream
        self._images = Scratch(capacity * 3 * input_size**2, stream=stream)
        self._labels = Scratch(capacity, np.int64, stream=stream)
        self._image_staging = PinnedStaging(capacity * 3 * input_size**2, np.float32, stream)
        self._label_staging = PinnedStaging(capacity, np.int64, stream)
        self._log_z = Scratch(capacity, stream=stream)
        self._example = Scratch(2 * capacity, stream=stream)
        self._dlogits = Scratch(capacity * num_classes, stream=stream)
        self._totals = Scratch(4, stream=stream)  # loss sum, top-1, top-5, diverged flag
        self._reports = StepReports(stream)

    def upload(self, x, labels=None):
        """Device views of the batch: host arrays are copied into the reused buffers (as
        float32 / int64) through pinned memory, asynchronously on the stream
        (``PinnedStaging``); device arrays are used as they are; ``labels`` may be None."""
        if not is_device_array(x):
            host = np.asarray(x)
            x = self._images.view(host.shape)
            self._image_staging.copy(host, x)
        if labels is not None and not is_device_array(labels):
            host = np.asarray(labels)
            labels = self._labels.view(host.shape)
            self._label_staging.copy(host, labels)
        return x, labels

    def loss(self, logits, labels) -> tuple[float, int, int]:
        """``(sum of losses, top-1 correct, top-5 correct)`` of device logits (N, C) for
        device labels (N,): computed on the GPU, only these three numbers are copied back
        (the host waits for them)."""
        self._queue_totals(logits, labels)
        loss_sum, top1, top5 = self._totals.view((3,)).copy_to_host(stream=self.stream)
        return float(loss_sum), int(top1), int(top5)

    def submit(self, logits, labels, diverged) -> PendingGPUStep:
        """The loss of a submitted step, without waiting: the three numbers are computed,
        ``diverged`` (int32 device (1,), sticky) is set if the loss sum is not finite, and
        the numbers with the flag are copied asynchronously to pinned host memory."""
        self._queue_totals(logits, labels)
        totals = self._totals.view((4,))
        mark_divergence(totals, diverged, stream=self.stream)
        return self._reports.submit(totals, logits.shape[0])

    def _queue_totals(self, logits, labels) -> None:
        n = logits.shape[0]
        softmax_cross_entropy_forward(
            logits,
            labels,
            log_z=self._log_z.view((n,)),
            example=self._example.view((n, 2)),
            totals=self._totals.view((3,)),
            stream=self.stream,
        )

    def gradient(self, logits, labels):
        """dL/dlogits (N, C) of the batch's mean loss, from the last ``loss`` of the same
        logits (it reuses their log-sum-exp); a view of this head's buffer."""
        n = logits.shape[0]
        return softmax_cross_entropy_backward(
            logits,
            labels,
            self._log_z.view((n,)),
            dlogits=self._dlogits.view(tuple(logits.shape)),
            stream=self.stream,
        )


def sgd_step(parameters, velocity: dict, optimizer, stream=0, skip_if=None) -> None:
    """The §5 update ``v <- momentum v - weight_decay lr w - lr g; w <- w + v`` of every
    ``(name, param, grad)`` device triple, with ``velocity[name]`` its momentum buffer on the
    same GPU; ``optimizer``'s current ``lr``, ``momentum`` and ``weight_decay`` are used, so
    learning-rate schedules keep working. ``skip_if``: an int32 device flag (1,) on that
    GPU; while it is set the GPU leaves every array alone (``sgd_update``)."""
    for name, param, grad in parameters:
        sgd_update(
            param,
            grad,
            velocity[name],
            optimizer.lr,
            optimizer.momentum,
            optimizer.weight_decay,
            stream=stream,
            skip_if=skip_if,
        )


def check_images(x, input_size: int, variant: str, who: str):
    """Images (N, 3, S, S), a host array or a float32 device array; returns ``x``."""
    if is_device_array(x):
        check_device_array(x, who, "x", ndim=4)
    else:
        check_array(x, who, 4, "(N, 3, S, S)", channels=3)
    if x.shape[1] != 3 or tuple(x.shape[2:]) != (input_size, input_size):
        raise ValueError(
            f"{who}: this AlexNet ({variant!r}) takes {input_size}x{input_size} "
            f"RGB crops (N, 3, {input_size}, {input_size}), got shape "
            f"{tuple(x.shape)}; crop or resize the input first"
        )
    return x


def check_batch_labels(labels, n: int, num_classes: int, who: str):
    """Labels (N,): a host integer array (range-checked) or an int64 device array (values
    unchecked: that would cost a copy to the host); returns them."""
    if is_device_array(labels):
        return check_device_array(labels, who, "labels", shape=(n,), dtype=np.int64)
    return check_labels(labels, n, num_classes, who)


class GPUEngine:
    """The members of the engine protocol that both GPU engines share (module docstring).

    Attributes set by the subclass: ``model``, ``optimizer``, ``input_size``,
    ``num_classes``, ``config`` (the host ``AlexNet``'s) and ``capacity`` (the largest batch
    the buffers hold now).
    """

    _diverged = None  # int32 device (1,): a submitted step's loss was not finite (sticky)

    def forward_backward(self, x, labels) -> StepResult:
        """Forward with dropout, mean softmax cross-entropy and, if it is finite, backward:
        the gradients (``gradient_arrays()``, on the GPU) are then dL/dw of the batch.

        x : float32 (N, 3, S, S), mean-subtracted crops (§2); labels : int (N,). Host arrays
        are copied to the GPU; device arrays (float32 / int64) are used in place (labels are
        then not range-checked). Only the loss and the two counts come back to the host.
        """
        labels = self._check_batch(x, labels, "forward_backward")
        n = x.shape[0]
        self._reserve(n)
        loss_sum, top1, top5 = self._forward_loss(x, labels, train=True)
        loss = loss_sum / n
        if not math.isfinite(loss):
            return StepResult(loss, top1, top5, n, updated=False)
        self._backward()
        return StepResult(loss, top1, top5, n, updated=True)

    def apply_update(self) -> None:
        """One SGD step (§5) of every parameter from the current gradients, on the GPU(s)."""
        self._require_optimizer("apply_update")
        self._update()

    def train_step(self, x, labels) -> StepResult:
        """One SGD step (§5) on a batch, entirely on the GPU(s): ``forward_backward``, then
        ``apply_update`` when the loss was finite (otherwise the parameters are untouched and
        ``StepResult.updated`` is False)."""
        self._require_optimizer("train_step")
        step = self.forward_backward(x, labels)
        if step.updated:
            self.apply_update()
        return step

    def submit_step(self, x, labels) -> PendingGPUStep:
        """``train_step`` queued on the GPU(s) without waiting for the loss (module
        docstring): forward, loss, the divergence flag, backward and the update guarded by
        the flag. ``result()`` of the returned step waits for its numbers only; ``updated``
        is False when this step's loss, or a submitted one's before it since the last
        ``load_from_host()``, was not finite: then no parameter or momentum changed. Backward
        runs in any case (the gradients may then hold NaNs)."""
        self._require_optimizer("submit_step")
        labels = self._check_batch(x, labels, "submit_step")
        self._reserve(x.shape[0])
        pending = self._forward_loss(x, labels, train=True, diverged=self._diverged)
        self._backward()
        self._update(self._diverged)
        return pending

    def evaluate_batch(self, x, labels) -> tuple[float, int, int]:
        """``(sum of losses, top-1 correct, top-5 correct)`` of a batch without dropout, in
        pieces of at most ``capacity`` images; only the three numbers come to the host."""
        labels = self._check_batch(x, labels, "evaluate_batch")
        self._reserve(1)
        totals = np.zeros(3)
        for start in range(0, x.shape[0], self.capacity):
            stop = start + self.capacity
            totals += self._forward_loss(x[start:stop], labels[start:stop], train=False)
        return float(totals[0]), int(totals[1]), int(totals[2])

    def gradient_arrays(self) -> list:
        """The device gradient arrays ``apply_update`` reads, in ``named_parameters`` order."""
        return [grad for _, _, grad in self.named_parameters()]

    def _check_batch(self, x, labels, method: str):
        """Check images and labels (see ``check_images``); returns the labels."""
        who = f"{type(self).__name__}.{method}"
        check_images(x, self.input_size, self.config["variant"], who)
        return check_batch_labels(labels, x.shape[0], self.num_classes, who)

    def _make_divergence_flag(self, stream) -> None:
        """Allocate the sticky divergence flag (cleared) on the GPU current now, where the
        loss is computed; ``stream`` is the loss's stream."""
        self._diverged_stream = stream
        self._diverged = cuda.to_device(np.zeros(1, dtype=np.int32), stream=stream)

    def _clear_divergence(self) -> None:
        """Clear the flag (queued on the loss's stream, so after every step already
        submitted): call with its GPU current, from ``load_from_host``."""
        self._diverged.copy_to_device(np.zeros(1, dtype=np.int32), stream=self._diverged_stream)

    def _require_optimizer(self, method: str) -> None:
        if self.optimizer is None:
            name = type(self).__name__
            raise RuntimeError(
                f"{name}.{method} needs an optimizer: build it with "
                f"{name}(model, SGD(model, lr=...))"
            )

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
