"""The two-tower split of §3.2 trained on GPUs: ``CudaTwoTowerAlexNet``.

``TwoTowerAlexNet`` (``minialexnet.parallel``) on ``CUDADevice`` towers
(``minialexnet.cuda_devices``) already keeps every activation on the GPUs; this class adds
what ``CudaAlexNet`` does for one GPU: the whole training step on the devices, so that per
step only the batch goes up and three numbers (loss, top-1 and top-5 counts) come back::

    forward    every stage on both towers at once; gathers at conv3, fc6, fc7 and fc8
    loss       the towers' logits gathered on tower 0's GPU; softmax cross-entropy there
    backward   every tower reads its columns of dlogits (a peer copy for a second GPU), the
               stages in reverse, each tower's input gradient reduce-scattered between them;
               conv1's input gradient (the image's) is skipped, as on one GPU
    update     the §5 SGD kernel on each tower's own parameters and momentum, on its own GPU

Every parameter and its momentum buffer live on exactly one GPU (the split duplicates
nothing), so there is no gradient exchange: the towers only trade activations and their
gradients, the traffic the paper's connectivity was tuned for.

The CPU ``AlexNet`` stays the reference and the interchange format: ``copy_to_cpu()`` merges
the towers' parameters (and momentum, into the ``SGD`` optimizer) back under single-device
names, so checkpoints, evaluation and prediction are shared with every other engine;
``load_from_cpu()`` goes the other way (after a resume).

Dropout: each tower's dropout layers draw their seeds from a generator reseeded from ``rng``
(default ``model.rng``) at every training step (``TwoTowerAlexNet._reseed_dropout``), so the
model's generator state fixes every mask, and a resumed run repeats them; the masks differ
from the CPU engines' and from ``CudaAlexNet``'s.

Tested under the CUDA simulator on ``"cuda:0,cuda:0"`` (one device, two streams) only; see
``minialexnet.cuda_devices`` for what two real GPUs would exercise that the tests cannot.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from functools import partial

import numpy as np
from numba import cuda

from minialexnet.checks import check_array, check_labels
from minialexnet.cuda_devices import CUDADevice
from minialexnet.cuda_layers import Scratch
from minialexnet.cuda_model import StepResult
from minialexnet.kernels.cuda import require_cuda
from minialexnet.kernels.cuda._launch import check_device_array, is_device_array
from minialexnet.kernels.cuda.sgd import sgd_update
from minialexnet.kernels.cuda.softmax_cross_entropy import (softmax_cross_entropy_backward,
                                                            softmax_cross_entropy_forward)
from minialexnet.parallel import TwoTowerAlexNet


def default_devices() -> str:
    """``"cuda:0,cuda:1"`` where two GPUs are visible (the paper's setup), else
    ``"cuda:0,cuda:0"`` (both towers on one GPU, a stream each)."""
    return "cuda:0,cuda:1" if len(cuda.gpus) >= 2 else "cuda:0,cuda:0"


class CudaTwoTowerAlexNet(TwoTowerAlexNet):
    """A CPU ``AlexNet`` split into two GPU towers (§3.2), ready to train with §5's SGD.

    Parameters
    ----------
    model : a ``minialexnet.model.AlexNet`` (any variant); its parameters are split and
        copied to the GPUs (the CPU model is not changed until ``copy_to_cpu``)
    optimizer : a ``minialexnet.optim.SGD`` over ``model`` (single-device names), or None for
        inference only; ``lr``, ``momentum`` and ``weight_decay`` are read at every step (the
        schedules keep working), its momentum buffers are split and copied to the GPUs
    batch_size : the largest batch the device buffers hold (they grow if a larger one comes)
    devices : ``"cuda:0,cuda:1"``, ``"cuda:0,cuda:0"``, ``"0,1"``, or two ``CUDADevice``;
        default ``default_devices()``
    mode : ``"threads"`` (the towers' work at the same time: on one GPU their streams
        overlap) or ``"sequential"`` (same numbers)
    rng : the generator of the dropout seeds (default ``model.rng``)

    Everything ``TwoTowerAlexNet`` offers works too (``forward`` -> host logits,
    ``backward`` -> host dx, ``named_parameters`` with device arrays, ``state_dict``,
    ``merge`` / ``split``, ``summary``), plus ``train_step``, ``evaluate_batch``,
    ``gradients``, ``copy_to_cpu``, ``load_from_cpu``. Attributes: ``model``,
    ``optimizer``, ``velocity`` (tower name -> device momentum buffer), ``capacity``.
    """

    def __init__(self, model, optimizer=None, batch_size: int = 128, devices=None,
                 mode: str = "threads", rng: np.random.Generator | None = None) -> None:
        require_cuda("CudaTwoTowerAlexNet")
        self._split(model, default_devices() if devices is None else devices, mode, rng)
        if not all(isinstance(device, CUDADevice) for device in self.devices):
            raise ValueError(f"CudaTwoTowerAlexNet runs its towers on GPUs, got devices "
                             f"{[str(d) for d in self.devices]}; write e.g. "
                             f"devices='cuda:0,cuda:1', or use TwoTowerAlexNet for CPU towers")
        self.model, self.optimizer = model, optimizer
        self.velocity: OrderedDict = OrderedDict()
        self._load_velocity(optimizer)
        self.capacity = 0
        self._in_pieces = False
        self._reserve(max(1, int(batch_size)))

    # -- buffers --------------------------------------------------------------------------------

    def _reserve(self, batch: int) -> None:
        """Size every tower's buffers (and the loss's, on tower 0) for ``batch`` images."""
        if batch <= self.capacity:
            return
        for tower in self.towers:
            tower.device.run(partial(_reserve_tower, tower, batch))
        stream = self.towers[0].device.stream
        self._log_z = Scratch(batch, stream=stream)
        self._example = Scratch(2 * batch, stream=stream)
        self._dlogits = Scratch(batch * self.num_classes, stream=stream)
        self._totals = Scratch(3, stream=stream)
        self.capacity = batch

    def _load_velocity(self, optimizer) -> None:
        """Momentum buffers from the optimizer (single-device names), split and copied to
        each tower's GPU, in place when they exist; zeros without an optimizer."""
        if optimizer is None:
            host = {name: np.zeros(tuple(p.shape), dtype=np.float32)
                    for name, p, _ in self.named_parameters()}
        else:
            try:
                host = self.split(optimizer.velocity)
            except ValueError as err:
                raise ValueError(f"CudaTwoTowerAlexNet expects an SGD over the single-device "
                                 f"model (SGD(model)): {err}") from None
        for name, _, _ in self.named_parameters():
            device = self._device_of(name)
            if name in self.velocity:
                device.assign(self.velocity[name], host[name])
            else:
                self.velocity[name] = device.asarray(host[name])

    # -- checks ---------------------------------------------------------------------------------

    def _check_batch(self, x, labels, who: str):
        """Check images (host or device, (N, 3, S, S)) and labels; returns the labels."""
        if is_device_array(x):
            check_device_array(x, who, "x", ndim=4)
        else:
            check_array(x, who, 4, "(N, 3, S, S)", channels=3)
        if x.shape[1] != 3 or tuple(x.shape[2:]) != (self.input_size, self.input_size):
            raise ValueError(f"{who}: this AlexNet ({self.config['variant']!r}) takes "
                             f"{self.input_size}x{self.input_size} RGB crops (N, 3, "
                             f"{self.input_size}, {self.input_size}), got shape "
                             f"{tuple(x.shape)}; crop or resize the input first")
        n = x.shape[0]
        if is_device_array(labels):       # values stay unchecked: that would cost a copy
            return check_device_array(labels, who, "labels", shape=(n,), dtype=np.int64)
        return check_labels(labels, n, self.num_classes, who)

    # -- the training step ----------------------------------------------------------------------

    def train_step(self, x, labels) -> StepResult:
        """One SGD step (§5) of the split network on a batch, entirely on the GPUs.

        x : float32 (N, 3, S, S), mean-subtracted crops (§2); labels : int (N,). Host arrays
        are copied up; device arrays (float32 / int64) are used in place (labels are then not
        range-checked). Forward with dropout, softmax cross-entropy on tower 0's GPU,
        backward, then on each tower ``v <- momentum v - weight_decay lr w - lr g;
        w <- w + v`` with the optimizer's current settings. Returns a ``StepResult``
        (``updated=False``, parameters untouched, when the loss is not finite).
        """
        if self.optimizer is None:
            raise RuntimeError("CudaTwoTowerAlexNet.train_step needs an optimizer: build it "
                               "with CudaTwoTowerAlexNet(model, SGD(model, lr=...))")
        labels = self._check_batch(x, labels, "CudaTwoTowerAlexNet.train_step")
        n = x.shape[0]
        self._reserve(n)
        self._logits_shape = None          # the parameters change: no backward after this
        first = self.towers[0].device
        x, labels = first.run(partial(self._upload, x, labels))
        pieces = self._forward_stages(x, train=True)
        loss_sum, top1, top5 = first.run(partial(self._loss, pieces, labels))
        loss = float(loss_sum) / n
        if not math.isfinite(loss):
            return StepResult(loss, int(top1), int(top5), n, updated=False)
        dlogits = first.run(self._loss_gradient)
        self._backward_stages(dlogits, need_dx=False)
        self.runner.map([partial(tower.device.run, partial(self._update, tower))
                         for tower in self.towers])
        return StepResult(loss, int(top1), int(top5), n, updated=True)

    def evaluate_batch(self, x, labels) -> tuple[float, int, int]:
        """``(sum of losses, top-1 correct, top-5 correct)`` of a batch without dropout, in
        pieces of at most ``capacity`` images; only the three numbers come to the host."""
        labels = self._check_batch(x, labels, "CudaTwoTowerAlexNet.evaluate_batch")
        self._logits_shape = None
        first = self.towers[0].device
        totals = np.zeros(3)
        for start in range(0, x.shape[0], self.capacity):
            stop = start + self.capacity
            x_dev, labels_dev = first.run(partial(self._upload, x[start:stop],
                                                  labels[start:stop]))
            pieces = self._forward_stages(x_dev, train=False)
            totals += first.run(partial(self._loss, pieces, labels_dev))
        return float(totals[0]), int(totals[1]), int(totals[2])

    def _upload(self, x, labels):
        """The batch on tower 0's GPU, host arrays copied up once into reused buffers (device
        arrays elsewhere are copied, device arrays there used as they are); tower 1 then
        reads the images in place (one GPU) or copies them from GPU to GPU."""
        device = self.towers[0].device
        return device.local(x, "images"), device.local(labels, "labels", np.int64)

    def _loss(self, pieces, labels) -> np.ndarray:
        """On tower 0's GPU: gather the logits (N, num_classes), softmax cross-entropy;
        returns the host array (sum of losses, top-1 correct, top-5 correct)."""
        device = self.towers[0].device
        logits = device.concatenate(pieces)
        labels_dev = device.local(labels, "labels", np.int64)      # already there: itself
        n = logits.shape[0]
        softmax_cross_entropy_forward(logits, labels_dev, log_z=self._log_z.view((n,)),
                                      example=self._example.view((n, 2)),
                                      totals=self._totals.view((3,)), stream=device.stream)
        self._last_loss = (logits, labels_dev)            # for _loss_gradient
        return self._totals.view((3,)).copy_to_host(stream=device.stream)

    def _loss_gradient(self):
        """On tower 0's GPU: dL/dlogits (N, num_classes) of the last ``_loss``."""
        logits, labels_dev = self._last_loss
        n = logits.shape[0]
        return softmax_cross_entropy_backward(logits, labels_dev, self._log_z.view((n,)),
                                              dlogits=self._dlogits.view(tuple(logits.shape)),
                                              stream=self.towers[0].device.stream)

    def _update(self, tower) -> None:
        """The §5 update of every parameter of ``tower``, on its GPU and stream."""
        opt = self.optimizer
        for name, param, grad in self.named_parameters():
            if self._where[name][0] == tower.index:
                sgd_update(param, grad, self.velocity[name], opt.lr, opt.momentum,
                           opt.weight_decay, stream=tower.device.stream)

    # -- the model protocol, in pieces where the buffers are too small ---------------------------

    def forward(self, x, train: bool = False) -> np.ndarray:
        """Host logits (N, num_classes), as ``TwoTowerAlexNet.forward``. With ``train=False``
        a batch larger than ``capacity`` runs in pieces (ten-crop evaluation feeds ten times
        the batch); ``backward`` then refuses, as no single pass saw the whole batch."""
        check_array(x, "CudaTwoTowerAlexNet", 4, "(N, 3, H, W)", channels=3)
        n = x.shape[0]
        self._in_pieces = not train and n > self.capacity
        if not self._in_pieces:
            self._reserve(n)
            return super().forward(x, train)
        logits = np.concatenate([super(CudaTwoTowerAlexNet, self).forward(
            x[start:start + self.capacity]) for start in range(0, n, self.capacity)])
        self._logits_shape = None
        return logits

    __call__ = forward

    def backward(self, dlogits: np.ndarray) -> np.ndarray:
        if self._in_pieces:
            raise RuntimeError(f"CudaTwoTowerAlexNet.backward: the last forward ran in pieces "
                               f"of {self.capacity} images (its batch exceeded the buffers); "
                               f"build the model with batch_size >= the batch to back-propagate")
        return super().backward(dlogits)

    # -- host copies ----------------------------------------------------------------------------

    def gradients(self) -> "OrderedDict[str, np.ndarray]":
        """Host copies of the last backward's gradients, merged to single-device names."""
        return self.merge({name: self._device_of(name).to_host(g)
                           for name, _, g in self.named_parameters()})

    def copy_to_cpu(self, model=None, optimizer=None) -> None:
        """Write the merged parameters into the CPU model and the merged momentum into the
        optimizer, in place (e.g. before ``save_checkpoint``). Defaults: those given at
        construction."""
        model = self.model if model is None else model
        optimizer = self.optimizer if optimizer is None else optimizer
        model.load_state_dict(self.state_dict())
        if optimizer is not None:
            merged = self.merge({name: self._device_of(name).to_host(v)
                                 for name, v in self.velocity.items()})
            for name, v in merged.items():
                optimizer.velocity[name][...] = v

    def load_from_cpu(self, model=None, optimizer=None) -> None:
        """Copy the CPU model's parameters and the optimizer's momentum into the towers, in
        place (e.g. after restoring a checkpoint)."""
        model = self.model if model is None else model
        optimizer = self.optimizer if optimizer is None else optimizer
        self.load_state_dict(model.state_dict())
        self._load_velocity(optimizer)

    def __repr__(self) -> str:
        return (f"CudaTwoTowerAlexNet(num_classes={self.num_classes}, "
                f"variant={self.config['variant']!r}, devices="
                f"{','.join(str(d) for d in self.devices)!r}, mode={self.mode!r}, "
                f"capacity={self.capacity})")


def _reserve_tower(tower, batch: int) -> None:
    """Size the buffers of every layer of ``tower`` for ``batch`` images (on its GPU)."""
    for layer in tower.layers.values():
        layer.reserve(batch)
    tower.device.drop_buffers()
