"""AlexNet trained on one GPU: the whole step (forward, loss, backward, §5 SGD) on the device.

``CudaAlexNet`` takes a CPU ``minialexnet.model.AlexNet`` (any variant) and builds its device
twin layer by layer (``minialexnet.gpu.layers``), in the same order and with the same
names. Parameters, momentum buffers, activations and gradients stay on the GPU; per training
step only the input batch goes up and three numbers come back (loss, top-1 and top-5 counts;
with ``submit_step`` without the host waiting for them, ``minialexnet.gpu.step``).

It is an engine (``minialexnet.engine``): ``forward_backward``, ``apply_update``,
``train_step``, ``submit_step``, ``forward``, ``gradient_arrays``, ``sync_to_host``,
``load_from_host``, ``close``; the step's checks, upload, loss and update are shared with
the GPU towers (``minialexnet.gpu.step``). The CPU model remains the reference and the
interchange format:
``sync_to_host()`` writes the trained parameters back into it (and the momentum into the
``SGD`` optimizer), so checkpoints, evaluation and prediction share one code path with the
CPU backend; ``load_from_host()`` goes the other way (after a resume).

``forward(x, train=False)`` returns host logits, with the ``input_size`` / ``num_classes``
attributes of ``AlexNet``: ``minialexnet.metrics.evaluate(gpu_net, ...)`` works unchanged.

Randomness: dropout masks come from a counter-based hash (``kernels/cuda/dropout.py``)
keyed by one 63-bit seed per training step, drawn from ``model.rng``; a run resumed with
the same generator state replays the same masks. (They differ from the CPU backend's masks,
which are drawn element by element from the generator.)
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
from numba import cuda

from minialexnet.gpu.layers import device_layer
from minialexnet.gpu.step import GPUEngine, LossHead, check_images, sgd_step
from minialexnet.kernels.cuda import require_cuda
from minialexnet.kernels.cuda.cublas import choose_gemm


class CudaAlexNet(GPUEngine):
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
    gemm : ``"auto"`` (cuBLAS where nvmath-python and a GPU are present, never under the
        simulator), ``"numba"`` (the hand-written SGEMM of ``kernels/cuda/gemm.py``) or
        ``"cublas"`` (``RuntimeError`` where it cannot run); the choice made is ``self.gemm``

    Device memory for the paper's network at batch 128 is a few GB (im2col matrices of conv1
    and conv2 dominate). Raises ``RuntimeError`` when no GPU (or simulator) is available.
    Attributes: ``layers`` (name -> device layer), ``params`` / ``velocity`` (name -> device
    array, single-device names), ``capacity``.
    """

    def __init__(
        self, model, optimizer=None, batch_size: int = 128, stream=0, gemm: str = "auto"
    ) -> None:
        require_cuda("CudaAlexNet")
        self.model, self.optimizer, self.stream = model, optimizer, stream
        self.gemm = choose_gemm(gemm)
        self.input_size, self.num_classes = model.input_size, model.num_classes
        self.config = dict(model.config)
        self.params: OrderedDict = OrderedDict()
        self.velocity: OrderedDict = OrderedDict()
        self._make_divergence_flag(stream)
        self.load_from_host()
        self.layers = None
        self.capacity = max(1, int(batch_size))
        self._reserve(self.capacity)

    # -- buffers ----------------------------------------------------------------------------

    def _reserve(self, n: int) -> None:
        """Device layers with buffers for ``n`` images (at least the current capacity): built
        on first use, rebuilt for a larger batch (the old buffers are freed with them)."""
        if self.layers is not None and n <= self.capacity:
            return
        self.capacity = capacity = max(n, self.capacity)
        shape = (3, self.input_size, self.input_size)
        self.layers = OrderedDict()
        for position, (name, layer) in enumerate(self.model.layers.items()):
            params = {key: self.params[f"{name}.{key}"] for key in layer.params}
            self.layers[name] = device_layer(
                layer, shape, capacity, params, position, self.stream, self.gemm
            )
            shape = self.layers[name].out_shape
        if shape != (self.num_classes,):
            raise ValueError(f"the network ends in shape {shape}, not ({self.num_classes},)")
        self._head = LossHead(capacity, self.input_size, self.num_classes, self.stream)

    def close(self) -> None:
        """Free the activation buffers (parameters and momentum stay on the GPU); the next
        call builds them again."""
        self.layers, self._head = None, None

    # -- passes on device arrays ------------------------------------------------------------

    def _forward_pass(self, x_dev, train: bool, seed: int):
        """Logits (N, num_classes) as a device array (a view of fc8's buffer) from device
        images (N, 3, S, S); ``seed`` names this step's dropout masks when ``train``."""
        for layer in self.layers.values():
            x_dev = layer.forward(x_dev, train, seed)
        return x_dev

    def _forward_loss(self, x, labels, train: bool, diverged=None):
        """Upload, forward (with a fresh dropout seed from ``model.rng`` when ``train``), loss:
        its three numbers, or with the device flag ``diverged`` a ``PendingGPUStep``
        (``LossHead.submit``)."""
        x_dev, labels_dev = self._head.upload(x, labels)
        seed = int(self.model.rng.integers(2**63)) if train else 0
        logits = self._forward_pass(x_dev, train, seed)
        self._last_pass = logits, labels_dev
        if diverged is None:
            return self._head.loss(logits, labels_dev)
        return self._head.submit(logits, labels_dev, diverged)

    def _backward(self) -> None:
        """dL/dlogits of the last loss, back through every layer; fills every layer's
        ``grads`` (the first layer's input gradient is never needed, so it is not computed)."""
        dy = self._head.gradient(*self._last_pass)
        layers = list(self.layers.values())
        for i in range(len(layers) - 1, -1, -1):
            dy = layers[i].backward(dy, need_dx=i > 0)

    def _update(self, diverged=None) -> None:
        """The §5 update of every parameter; none while the device flag ``diverged`` is set."""
        sgd_step(
            self.named_parameters(), self.velocity, self.optimizer, self.stream, skip_if=diverged
        )

    # -- the engine protocol (the rest is GPUEngine's) --------------------------------------

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        """Logits (N, num_classes) float32 on the host, like ``AlexNet.forward``.

        Any N: the batch is processed in pieces of at most ``capacity`` images.
        ``train=True`` applies dropout with a fresh seed from ``model.rng``.
        """
        check_images(x, self.input_size, self.config["variant"], "CudaAlexNet.forward")
        self._reserve(1)
        out = np.empty((x.shape[0], self.num_classes), dtype=np.float32)
        seed = int(self.model.rng.integers(2**63)) if train else 0
        for start in range(0, x.shape[0], self.capacity):
            piece = x[start : start + self.capacity]
            x_dev, _ = self._head.upload(piece)
            logits = self._forward_pass(x_dev, train, seed)
            logits.copy_to_host(out[start : start + piece.shape[0]], stream=self.stream)
        return out

    __call__ = forward

    def named_parameters(self):
        """Yield ``(name, param, grad)`` device arrays in forward order (names as the CPU's)."""
        self._reserve(1)
        for layer_name, layer in self.layers.items():
            for key, param in layer.params.items():
                yield f"{layer_name}.{key}", param, layer.grads[key]

    def sync_to_host(self) -> None:
        """Write the parameters into the host model (and the momentum into the optimizer), in
        place, e.g. before a checkpoint."""
        self.model.load_state_dict(self.state_dict())
        if self.optimizer is not None:
            for name, v in self.velocity.items():
                self.optimizer.velocity[name][...] = v.copy_to_host(stream=self.stream)

    def load_from_host(self) -> None:
        """Copy the host model's parameters and the optimizer's momentum (zeros without an
        optimizer) to the GPU, in place once they exist (the layers hold these arrays), and
        clear the divergence flag of ``submit_step``."""
        self._clear_divergence()
        for name, param, _ in self.model.named_parameters():
            host = np.ascontiguousarray(param, dtype=np.float32)
            velocity = (
                np.ascontiguousarray(self.optimizer.velocity[name], dtype=np.float32)
                if self.optimizer is not None
                else np.zeros_like(host)
            )
            if name in self.params:
                self.params[name].copy_to_device(host, stream=self.stream)
                self.velocity[name].copy_to_device(velocity, stream=self.stream)
            else:
                self.params[name] = cuda.to_device(host, stream=self.stream)
                self.velocity[name] = cuda.to_device(velocity, stream=self.stream)

    # -- host copies, for checkpoints, tests and debugging ----------------------------------

    def state_dict(self) -> OrderedDict[str, np.ndarray]:
        """Host copies of every parameter, keyed like ``AlexNet.state_dict()``."""
        return OrderedDict(
            (name, p.copy_to_host(stream=self.stream)) for name, p in self.params.items()
        )

    def gradients(self) -> OrderedDict[str, np.ndarray]:
        """Host copies of the gradients of the last backward."""
        return OrderedDict(
            (name, g.copy_to_host(stream=self.stream)) for name, _, g in self.named_parameters()
        )

    def __repr__(self) -> str:
        return (
            f"CudaAlexNet(variant={self.config['variant']!r}, "
            f"num_classes={self.num_classes}, capacity={self.capacity}, gemm={self.gemm!r})"
        )
