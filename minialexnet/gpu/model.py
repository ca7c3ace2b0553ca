"""AlexNet trained on one GPU: the whole step (forward, loss, backward, §5 SGD) on the device.

``CudaAlexNet`` takes a CPU ``minialexnet.model.AlexNet`` (any variant) and builds its device
twin layer by layer (``minialexnet.cuda_layers``), in the same order and with the same
names. Parameters, momentum buffers, activations and gradients stay on the GPU; per training
step only the input batch goes up and three numbers come back (loss, top-1 and top-5 counts).

The CPU model remains the reference and the interchange format: ``copy_to_cpu()`` writes the
trained parameters back into it (and the momentum into the ``SGD`` optimizer), so
checkpoints, evaluation and prediction share one code path with the CPU backend;
``load_from_cpu()`` goes the other way (after a resume).

``forward(x, train=False)`` returns host logits, with the ``input_size`` / ``num_classes``
attributes of ``AlexNet``: ``minialexnet.metrics.evaluate(gpu_net, ...)`` works unchanged.

Randomness: dropout masks come from a counter-based hash (``kernels/cuda/dropout.py``)
keyed by one 63-bit seed per training step, drawn from ``model.rng``; a run resumed with
the same generator state replays the same masks. (They differ from the CPU backend's masks,
which are drawn element by element from the generator.)
"""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import NamedTuple

import numpy as np
from numba import cuda

from minialexnet.checks import check_array, check_labels
from minialexnet.cuda_layers import Scratch, device_layer
from minialexnet.kernels.cuda import require_cuda
from minialexnet.kernels.cuda._launch import check_device_array, is_device_array
from minialexnet.kernels.cuda.sgd import sgd_update
from minialexnet.kernels.cuda.softmax_cross_entropy import (softmax_cross_entropy_backward,
                                                            softmax_cross_entropy_forward)


class StepResult(NamedTuple):
    """What one training step sends back to the host.

    loss : mean cross-entropy of the batch (before the update); top1_correct, top5_correct :
    how many labels were the first / among the five highest logits (ties count for the
    label); batch : examples in the batch; updated : False when the loss was not finite, in
    which case backward and the update were skipped (the parameters are unchanged).
    """
    loss: float
    top1_correct: int
    top5_correct: int
    batch: int
    updated: bool


class CudaAlexNet:
    """The device twin of a CPU ``AlexNet``, ready to train with the paper's SGD (§5).

    Parameters
    ----------
    model : a ``minialexnet.model.AlexNet``; its parameters are copied to the GPU, its
        ``rng`` draws the dropout seeds, its layers define the network
    optimizer : a ``minialexnet.optim.SGD`` over ``model`` (or None for inference only); its
        ``lr``, ``momentum`` and ``weight_decay`` are read at every step, so the learning-rate
        schedules keep working, and its momentum buffers are copied to the GPU
    batch_size : the largest batch the device buffers hold (they grow if a larger one comes)
    stream : CUDA stream for every kernel (default: the default stream)

    Device memory for the paper's network at batch 128 is a few GB (im2col matrices of conv1
    and conv2 dominate). Raises ``RuntimeError`` when no GPU (or simulator) is available.
    """

    def __init__(self, model, optimizer=None, batch_size: int = 128, stream=0) -> None:
        require_cuda("CudaAlexNet")
        self.model, self.optimizer, self.stream = model, optimizer, stream
        self.input_size, self.num_classes = model.input_size, model.num_classes
        self.config = dict(model.config)
        self.params: OrderedDict = OrderedDict()
        self.velocity: OrderedDict = OrderedDict()
        self.load_from_cpu()
        self._build(max(1, int(batch_size)))

    # -- construction ---------------------------------------------------------------------

    def load_from_cpu(self, model=None, optimizer=None) -> None:
        """Copy parameters (and momentum buffers, zeros without an optimizer) to the GPU."""
        model = self.model if model is None else model
        optimizer = self.optimizer if optimizer is None else optimizer
        for name, param, _ in model.named_parameters():
            host = np.ascontiguousarray(param, dtype=np.float32)
            velocity = (np.ascontiguousarray(optimizer.velocity[name], dtype=np.float32)
                        if optimizer is not None else np.zeros_like(host))
            if name in self.params:            # in place: the layers hold these arrays
                self.params[name].copy_to_device(host, stream=self.stream)
                self.velocity[name].copy_to_device(velocity, stream=self.stream)
            else:
                self.params[name] = cuda.to_device(host, stream=self.stream)
                self.velocity[name] = cuda.to_device(velocity, stream=self.stream)

    def _build(self, capacity: int) -> None:
        """One device layer per CPU layer, with buffers for batches of up to ``capacity``."""
        self.capacity = capacity
        shape = (3, self.input_size, self.input_size)
        self.layers: OrderedDict = OrderedDict()
        for position, (name, layer) in enumerate(self.model.layers.items()):
            params = {key: self.params[f"{name}.{key}"] for key in layer.params}
            self.layers[name] = device_layer(layer, shape, capacity, params, position,
                                             self.stream)
            shape = self.layers[name].out_shape
        if shape != (self.num_classes,):
            raise ValueError(f"the network ends in shape {shape}, not ({self.num_classes},)")
        s = self.stream
        self._images = Scratch(capacity * 3 * self.input_size ** 2, stream=s)
        self._labels = Scratch(capacity, np.int64, stream=s)
        self._log_z = Scratch(capacity, stream=s)
        self._example = Scratch(capacity * 2, stream=s)
        self._dlogits = Scratch(capacity * self.num_classes, stream=s)
        self._totals = cuda.device_array(3, dtype=np.float32, stream=s)

    def _ensure_capacity(self, n: int) -> None:
        if n > self.capacity:
            self._build(n)                      # the old buffers are freed with the layers

    # -- passes on device arrays ----------------------------------------------------------

    def _upload(self, x, labels):
        """Device views of the batch: host arrays are copied into the input buffers, device
        arrays (already float32 / int64 on the GPU) are used as they are."""
        n = x.shape[0]
        if is_device_array(x):
            x_dev = x
        else:
            x_dev = self._images.view((n, 3, self.input_size, self.input_size))
            x_dev.copy_to_device(np.ascontiguousarray(x, dtype=np.float32), stream=self.stream)
        if labels is None or is_device_array(labels):
            return x_dev, labels
        labels_dev = self._labels.view((n,))
        labels_dev.copy_to_device(np.ascontiguousarray(labels, dtype=np.int64),
                                  stream=self.stream)
        return x_dev, labels_dev

    def forward_device(self, x_dev, train: bool = False, seed: int = 0):
        """Logits (N, num_classes) as a device array (a view of fc8's buffer) from device
        images (N, 3, S, S); ``seed`` names this step's dropout masks when ``train``."""
        for layer in self.layers.values():
            x_dev = layer.forward(x_dev, train, seed)
        return x_dev

    def backward_device(self, dlogits_dev) -> None:
        """Back-propagate device ``dL/dlogits``; fills every layer's ``grads`` (the first
        layer's input gradient is never needed, so it is not computed)."""
        layers = list(self.layers.values())
        for i in range(len(layers) - 1, -1, -1):
            dlogits_dev = layers[i].backward(dlogits_dev, need_dx=i > 0)

    def _loss(self, logits_dev, labels_dev):
        n = logits_dev.shape[0]
        softmax_cross_entropy_forward(logits_dev, labels_dev, log_z=self._log_z.view((n,)),
                                      example=self._example.view((n, 2)),
                                      totals=self._totals, stream=self.stream)
        loss_sum, top1, top5 = self._totals.copy_to_host(stream=self.stream)
        return float(loss_sum), int(top1), int(top5)

    # -- the public API -------------------------------------------------------------------

    def _check_input(self, x, who: str):
        if is_device_array(x):
            check_device_array(x, who, "x", ndim=4)
        else:
            check_array(x, who, 4, "(N, 3, S, S)", channels=3)
        if x.shape[1] != 3 or x.shape[2:] != (self.input_size, self.input_size):
            raise ValueError(f"{who}: this AlexNet ({self.config['variant']!r}) takes "
                             f"{self.input_size}x{self.input_size} RGB crops (N, 3, "
                             f"{self.input_size}, {self.input_size}), got shape "
                             f"{tuple(x.shape)}; crop or resize the input first")
        return x

    def _check_labels(self, labels, n: int, who: str):
        if is_device_array(labels):       # values stay unchecked: that would cost a copy
            return check_device_array(labels, who, "labels", shape=(n,), dtype=np.int64)
        return check_labels(labels, n, self.num_classes, who)

    def train_step(self, x: np.ndarray, labels: np.ndarray) -> StepResult:
        """One SGD step (§5) on a batch, entirely on the GPU.

        x : float32 (N, 3, S, S), mean-subtracted crops (§2); labels : int (N,). Host arrays
        are copied to the GPU; device arrays (float32 / int64) are used in place (labels are
        then not range-checked). Forward with dropout, softmax cross-entropy, backward, then
        for every parameter ``v <- momentum v - weight_decay lr w - lr g; w <- w + v`` with
        the optimizer's current settings. Returns a ``StepResult`` (only these scalars leave
        the device).
        """
        if self.optimizer is None:
            raise RuntimeError("CudaAlexNet.train_step needs an optimizer: build it with "
                               "CudaAlexNet(model, SGD(model, lr=...))")
        self._check_input(x, "CudaAlexNet.train_step")
        n = x.shape[0]
        labels = self._check_labels(labels, n, "CudaAlexNet.train_step")
        self._ensure_capacity(n)
        x_dev, labels_dev = self._upload(x, labels)
        seed = int(self.model.rng.integers(2 ** 63))        # names this step's dropout masks
        logits = self.forward_device(x_dev, train=True, seed=seed)
        loss_sum, top1, top5 = self._loss(logits, labels_dev)
        loss = loss_sum / n
        if not math.isfinite(loss):
            return StepResult(loss, top1, top5, n, updated=False)
        dlogits = softmax_cross_entropy_backward(logits, labels_dev, self._log_z.view((n,)),
                                                 dlogits=self._dlogits.view(logits.shape),
                                                 stream=self.stream)
        self.backward_device(dlogits)
        opt = self.optimizer
        for name, param, grad in self.named_device_parameters():
            sgd_update(param, grad, self.velocity[name], opt.lr, opt.momentum,
                       opt.weight_decay, stream=self.stream)
        return StepResult(loss, top1, top5, n, updated=True)

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        """Logits (N, num_classes) float32 on the host, like ``AlexNet.forward``.

        Any N: the batch is processed in pieces of at most ``capacity`` images.
        ``train=True`` applies dropout with a fresh seed from ``model.rng``.
        """
        self._check_input(x, "CudaAlexNet.forward")
        out = np.empty((x.shape[0], self.num_classes), dtype=np.float32)
        seed = int(self.model.rng.integers(2 ** 63)) if train else 0
        for start in range(0, x.shape[0], self.capacity):
            piece = x[start:start + self.capacity]
            x_dev, _ = self._upload(piece, None)
            logits = self.forward_device(x_dev, train=train, seed=seed)
            logits.copy_to_host(out[start:start + piece.shape[0]], stream=self.stream)
        return out

    __call__ = forward

    def evaluate_batch(self, x: np.ndarray, labels: np.ndarray) -> tuple[float, int, int]:
        """``(sum of losses, top-1 correct, top-5 correct)`` of a batch without dropout; only
        the three numbers come back to the host."""
        self._check_input(x, "CudaAlexNet.evaluate_batch")
        labels = self._check_labels(labels, x.shape[0], "CudaAlexNet.evaluate_batch")
        totals = np.zeros(3)
        for start in range(0, x.shape[0], self.capacity):
            x_dev, labels_dev = self._upload(x[start:start + self.capacity],
                                             labels[start:start + self.capacity])
            totals += self._loss(self.forward_device(x_dev, train=False), labels_dev)
        return float(totals[0]), int(totals[1]), int(totals[2])

    def named_device_parameters(self):
        """Yield ``(name, param, grad)`` device arrays in forward order (names as the CPU's)."""
        for layer_name, layer in self.layers.items():
            for key, param in layer.params.items():
                yield f"{layer_name}.{key}", param, layer.grads[key]

    def state_dict(self) -> "OrderedDict[str, np.ndarray]":
        """Host copies of every parameter, keyed like ``AlexNet.state_dict()``."""
        return OrderedDict((name, p.copy_to_host(stream=self.stream))
                           for name, p in self.params.items())

    def gradients(self) -> "OrderedDict[str, np.ndarray]":
        """Host copies of the gradients of the last ``train_step`` (for tests and debugging)."""
        return OrderedDict((name, g.copy_to_host(stream=self.stream))
                           for name, _, g in self.named_device_parameters())

    def copy_to_cpu(self, model=None, optimizer=None) -> None:
        """Write the parameters into the CPU model (and momentum into the optimizer), in
        place, e.g. before ``save_checkpoint``. Defaults: the model and optimizer given at
        construction."""
        model = self.model if model is None else model
        optimizer = self.optimizer if optimizer is None else optimizer
        model.load_state_dict(self.state_dict())
        if optimizer is not None:
            for name, v in self.velocity.items():
                optimizer.velocity[name][...] = v.copy_to_host(stream=self.stream)

    def __repr__(self) -> str:
        return (f"CudaAlexNet(variant={self.config['variant']!r}, "
                f"num_classes={self.num_classes}, capacity={self.capacity})")
