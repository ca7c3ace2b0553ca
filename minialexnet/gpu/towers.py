"""The two-tower split of §3.2 trained on GPUs: ``CudaTwoTowerAlexNet``.

``TwoTowerAlexNet`` (``minialexnet.parallel``) on ``CUDADevice`` towers
(``minialexnet.gpu.devices``) already keeps every activation on the GPUs; this engine drives
one (it holds it as ``split_net``, it does not extend it) and adds what ``CudaAlexNet`` does
for one GPU, with the same shared code (``minialexnet.gpu.step``): the whole training step
on the devices, so that per step only the batch goes up and three numbers (loss, top-1 and
top-5 counts) come back (with ``submit_step`` without the host waiting for them)::

    forward    every stage on both towers at once; gathers at conv3, fc6, fc7 and fc8
    loss       the towers' logits gathered on tower 0's GPU; softmax cross-entropy there
    backward   every tower reads its columns of dlogits (a peer copy for a second GPU), the
               stages in reverse, each tower's input gradient reduce-scattered between them
               (a second GPU copies only the columns it adds up, where that saves more than
               the extra copies cost: ``CUDADevice.local_columns``);
               conv1's input gradient (the image's) is skipped, as on one GPU
    update     the §5 SGD kernel on each tower's own parameters and momentum, on its own GPU
               (a submitted step's: skipped while tower 0's divergence flag is set, each
               tower reading the flag after tower 0's queued work, a peer copy for a second
               GPU)

Every parameter and its momentum buffer live on exactly one GPU (the split duplicates
nothing), so there is no gradient exchange: the towers only trade activations and their
gradients, the traffic the paper's connectivity was tuned for.

The CPU ``AlexNet`` stays the reference and the interchange format: ``sync_to_host()`` merges
the towers' parameters (and momentum, into the ``SGD`` optimizer) back under single-device
names, so checkpoints, evaluation and prediction are shared with every other engine;
``load_from_host()`` goes the other way (after a resume).

Dropout: each tower's dropout layers draw their seeds from a generator reseeded from ``rng``
(default ``model.rng``) at every training step (``TwoTowerAlexNet.forward_stages``), so the
model's generator state fixes every mask, and a resumed run repeats them; the masks differ
from the CPU engines' and from ``CudaAlexNet``'s.

Tested under the CUDA simulator on ``"cuda:0,cuda:0"`` (one device, two streams) only; see
``minialexnet.gpu.devices`` for what two real GPUs would exercise that the tests cannot.
"""

from __future__ import annotations

from collections import OrderedDict
from functools import partial

import numpy as np
from numba import cuda

from minialexnet.checks import check_array
from minialexnet.gpu.devices import CUDADevice, enable_peer_access
from minialexnet.gpu.step import GPUEngine, LossHead, sgd_step
from minialexnet.kernels.cuda import require_cuda
from minialexnet.kernels.cuda.cublas import choose_gemm
from minialexnet.parallel import TwoTowerAlexNet


def default_devices() -> str:
    """``"cuda:0,cuda:1"`` where two GPUs are visible (the paper's setup), else
    ``"cuda:0,cuda:0"`` (both towers on one GPU, a stream each)."""
    return "cuda:0,cuda:1" if len(cuda.gpus) >= 2 else "cuda:0,cuda:0"


class CudaTwoTowerAlexNet(GPUEngine):
    """A CPU ``AlexNet`` split into two GPU towers (§3.2), ready to train with §5's SGD.

    Parameters
    ----------
    model : a ``minialexnet.model.AlexNet`` (any variant); its parameters are split and
        copied to the GPUs (the CPU model is not changed until ``sync_to_host``)
    optimizer : a ``minialexnet.optim.SGD`` over ``model`` (single-device names), or None for
        inference only; ``lr``, ``momentum`` and ``weight_decay`` are read at every step (the
        schedules keep working), its momentum buffers are split and copied to the GPUs
    batch_size : the largest batch the device buffers hold (they grow if a larger one comes)
    devices : ``"cuda:0,cuda:1"``, ``"cuda:0,cuda:0"``, ``"0,1"``, or two ``CUDADevice``;
        default ``default_devices()``
    mode : ``"threads"`` (the towers' work at the same time: on one GPU their streams
        overlap) or ``"sequential"`` (same numbers)
    rng : the generator of the dropout seeds (default ``model.rng``)
    gemm : ``"auto"``, ``"numba"`` or ``"cublas"``, as for ``CudaAlexNet`` (``self.gemm``)

    The engine protocol (``minialexnet.engine``), plus ``evaluate_batch``, ``gradients``,
    ``state_dict``, ``named_parameters`` (per-tower names, device arrays) and, for tests and
    teaching, ``backward`` (host dlogits -> host dx after a ``forward``). Attributes:
    ``split_net`` (the ``TwoTowerAlexNet`` on the GPU towers), ``towers``, ``devices``,
    ``velocity`` (tower name -> device momentum buffer), ``capacity``.
    """

    def __init__(
        self,
        model,
        optimizer=None,
        batch_size: int = 128,
        devices=None,
        mode: str = "threads",
        rng: np.random.Generator | None = None,
        gemm: str = "auto",
    ) -> None:
        require_cuda("CudaTwoTowerAlexNet")
        self.gemm = choose_gemm(gemm)
        self.split_net = TwoTowerAlexNet.from_model(
            model, default_devices() if devices is None else devices, mode, rng
        )
        self.towers, self.devices = self.split_net.towers, self.split_net.devices
        if not all(isinstance(device, CUDADevice) for device in self.devices):
            raise ValueError(
                f"CudaTwoTowerAlexNet runs its towers on GPUs, got devices "
                f"{[str(d) for d in self.devices]}; write e.g. "
                f"devices='cuda:0,cuda:1', or use TwoTowerAlexNet for CPU towers"
            )
        for device in self.devices:
            device.gemm = self.gemm
            device.partners = [other for other in self.devices if other is not device]
        self.peer_access = enable_peer_access(self.devices)  # [(i, j)] enabled now
        self.model, self.optimizer = model, optimizer
        self.input_size, self.num_classes = model.input_size, model.num_classes
        self.config = dict(model.config)
        self.velocity: OrderedDict = OrderedDict()
        self._load_velocity()
        first = self.towers[0].device  # where the loss, and so the divergence flag, live
        first.run(partial(self._make_divergence_flag, first.stream))
        self.capacity, self._head = max(1, int(batch_size)), None
        self._backward_from = None  # why backward() may not run now (None: it may)
        self._reserve(self.capacity)

    # -- buffers ----------------------------------------------------------------------------

    def _reserve(self, batch: int) -> None:
        """Size every tower's buffers (and the loss's, on tower 0) for ``batch`` images (at
        least the current capacity)."""
        if self._head is not None and batch <= self.capacity:
            return
        batch = max(batch, self.capacity)
        for tower in self.towers:
            tower.device.run(partial(_reserve_tower, tower, batch))
        first = self.towers[0].device
        self._head = LossHead(batch, self.input_size, self.num_classes, first.stream)
        self.capacity = batch

    def close(self) -> None:
        """Stop the tower threads and free the activation buffers (parameters and momentum
        stay on the GPUs); the next call starts and builds them again."""
        self.split_net.close()
        for tower in self.towers:
            for layer in tower.layers.values():
                layer.release()
            tower.device.drop_buffers()
        self._head = None

    def _load_velocity(self) -> None:
        """Momentum buffers from the optimizer (single-device names), split and copied to
        each tower's GPU, in place when they exist; zeros without an optimizer."""
        if self.optimizer is None:
            host = {
                name: np.zeros(tuple(p.shape), dtype=np.float32)
                for name, p, _ in self.named_parameters()
            }
        else:
            try:
                host = self.split_net.split(self.optimizer.velocity)
            except ValueError as err:
                raise ValueError(
                    f"CudaTwoTowerAlexNet expects an SGD over the single-device "
                    f"model (SGD(model)): {err}"
                ) from None
        for name, _, _ in self.named_parameters():
            device = self.split_net.device_of(name)
            if name in self.velocity:
                device.assign(self.velocity[name], host[name])
            else:
                self.velocity[name] = device.asarray(host[name])

    # -- the step's passes (the step itself is GPUEngine's) ---------------------------------

    def _forward_loss(self, x, labels, train: bool, diverged=None):
        """Upload to tower 0's GPU, every stage on both towers (dropout reseeded from ``rng``
        when ``train``), then the loss on tower 0's GPU: its three numbers, or with the
        device flag ``diverged`` a ``PendingGPUStep`` (``LossHead.submit``)."""
        self._backward_from = "a training step or an evaluation"
        first = self.towers[0].device
        x, labels = first.run(partial(self._head.upload, x, labels))
        pieces = self.split_net.forward_stages(x, train)
        return first.run(partial(self._loss, pieces, labels, diverged))

    def _loss(self, pieces, labels, diverged=None):
        """On tower 0's GPU: gather the logits (N, num_classes), softmax cross-entropy."""
        device = self.towers[0].device
        logits = device.concatenate(pieces)
        labels = device.local(labels, "labels", np.int64)  # already there: itself
        self._last_pass = logits, labels
        if diverged is None:
            return self._head.loss(logits, labels)
        return self._head.submit(logits, labels, diverged)

    def _backward(self) -> None:
        """dL/dlogits on tower 0's GPU, then the stages in reverse (the image's gradient is
        not needed, so conv1's input gradient is skipped)."""
        dlogits = self.towers[0].device.run(partial(self._head.gradient, *self._last_pass))
        self.split_net.backward_stages(dlogits, need_dx=False)

    def _update(self, diverged=None) -> None:
        """The §5 update of each tower's own parameters, on its GPU and stream; none while
        the device flag ``diverged`` (on tower 0's GPU) is set."""
        self.split_net.runner.map(
            [
                partial(tower.device.run, partial(self._update_tower, tower, diverged))
                for tower in self.towers
            ]
        )

    def _update_tower(self, tower, diverged=None) -> None:
        mine = [
            (name, p, g)
            for name, p, g in self.named_parameters()
            if self.split_net.device_of(name) is tower.device
        ]
        if diverged is not None and tower is not self.towers[0]:
            # The flag is written on tower 0's stream, before its last queued work: wait for
            # that on this stream, then read the flag here (itself on the same GPU).
            tower.device._after_the_others()
            diverged = tower.device.local(diverged, "diverged", np.int32)
        sgd_step(mine, self.velocity, self.optimizer, tower.device.stream, skip_if=diverged)

    # -- the engine protocol (the rest is GPUEngine's) --------------------------------------

    def forward(self, x, train: bool = False) -> np.ndarray:
        """Host logits (N, num_classes), as ``TwoTowerAlexNet.forward``. With ``train=False``
        a batch larger than ``capacity`` runs in pieces (ten-crop evaluation feeds ten times
        the batch); ``backward`` then refuses, as no single pass saw the whole batch."""
        check_array(x, "CudaTwoTowerAlexNet", 4, "(N, 3, H, W)", channels=3)
        n = x.shape[0]
        if train or n <= self.capacity:
            self._reserve(n)
            self._backward_from = None
            return self.split_net.forward(x, train)
        self._reserve(1)
        self._backward_from = (
            f"the last forward ran in pieces of {self.capacity} images (its "
            f"batch exceeded the buffers)"
        )
        return np.concatenate(
            [
                self.split_net.forward(x[start : start + self.capacity])
                for start in range(0, n, self.capacity)
            ]
        )

    __call__ = forward

    def backward(self, dlogits: np.ndarray) -> np.ndarray:
        """Host dL/dx (N, 3, S, S) of host ``dlogits`` after ``forward`` (not after a training
        step or an evaluation); fills the towers' gradients, as ``TwoTowerAlexNet.backward``."""
        if self._backward_from is not None:
            raise RuntimeError(
                f"CudaTwoTowerAlexNet.backward: {self._backward_from} came "
                f"last; run forward(x) on the whole batch first (with "
                f"batch_size >= the batch to back-propagate)"
            )
        return self.split_net.backward(dlogits)

    def named_parameters(self):
        """``(tower name, param, grad)`` device arrays, e.g. ``("tower0.conv1.W", ...)``."""
        return self.split_net.named_parameters()

    def sync_to_host(self) -> None:
        """Write the merged parameters into the host model and the merged momentum into the
        optimizer, in place (e.g. before a checkpoint)."""
        self.model.load_state_dict(self.state_dict())
        if self.optimizer is not None:
            merged = self.split_net.merge(
                {
                    name: self.split_net.device_of(name).to_host(v)
                    for name, v in self.velocity.items()
                }
            )
            for name, v in merged.items():
                self.optimizer.velocity[name][...] = v

    def load_from_host(self) -> None:
        """Copy the host model's parameters and the optimizer's momentum into the towers, in
        place (e.g. after restoring a checkpoint), and clear the divergence flag of
        ``submit_step``."""
        self.towers[0].device.run(self._clear_divergence)
        self.split_net.load_state_dict(self.model.state_dict())
        self._load_velocity()

    # -- host copies, for checkpoints, tests and debugging ----------------------------------

    def state_dict(self) -> OrderedDict[str, np.ndarray]:
        """The merged single-device parameters, as host arrays (``AlexNet.state_dict()``)."""
        return self.split_net.state_dict()

    def gradients(self) -> OrderedDict[str, np.ndarray]:
        """Host copies of the last backward's gradients, merged to single-device names."""
        return self.split_net.merge(
            {
                name: self.split_net.device_of(name).to_host(g)
                for name, _, g in self.named_parameters()
            }
        )

    def __repr__(self) -> str:
        return (
            f"CudaTwoTowerAlexNet(num_classes={self.num_classes}, "
            f"variant={self.config['variant']!r}, devices="
            f"{','.join(str(d) for d in self.devices)!r}, "
            f"mode={self.split_net.mode!r}, capacity={self.capacity})"
        )


def _reserve_tower(tower, batch: int) -> None:
    """Size the buffers of every layer of ``tower`` for ``batch`` images (on its GPU)."""
    for layer in tower.layers.values():
        layer.reserve(batch)
    tower.device.drop_buffers()
