"""Where the towers of the two-device split live (§3.2): ``Device``, ``CPUDevice``, names.

``minialexnet.parallel`` cuts AlexNet into two *towers*, one per device. A ``Device``
answers the question the split asks of the hardware, where a tower's arrays live and how its
work runs, so that the split itself never mentions threads, GPUs or streams: it moves arrays
in and out (``asarray``, ``to_host``, ``assign``), turns a NumPy layer into the layer it runs
(``adopt``), runs a tower's work with the device current (``run``), and performs the split's
two collectives on its own memory: ``concatenate`` (gather every tower's maps in forward)
and ``sum_slices`` (add up every tower's gradient for this tower's maps in backward). How
the host drives the towers (threads or one after another) is ``runner.TowerRunner``'s job.

``CPUDevice`` is the device implemented here: two CPU "devices" share the host's memory, so
the collectives are plain ``np.concatenate`` and ``+``. Its towers can run at the same time
because OpenBLAS (NumPy's ``matmul``) and Numba's compiled kernels release the GIL. The GPU
device (the same split on two GPUs, or on one GPU with one stream per tower) is
``minialexnet.gpu.devices.CUDADevice``: the same seven methods on device arrays.

Devices are passed in, never registered: ``parse_devices("cuda:0,cuda:1")`` builds
``CUDADevice`` objects by importing ``minialexnet.gpu`` when (and only when) a name asks for a
GPU, since numba-cuda is an optional dependency; ``"cpu:0,cpu:1"`` needs nothing but NumPy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from minialexnet.kernels.cuda import is_available as cuda_is_available


class Device:
    """What the two-tower model needs from the device a tower lives on (the interface).

    Arrays "on the device" are whatever the device computes with: NumPy arrays for
    ``CPUDevice``, ``numba.cuda`` device arrays for a GPU. Every method's array arguments
    may come from any tower's device (a GPU implementation copies peer-to-peer), and every
    result lives on *this* device. ``axis 1`` is the channel axis of (N, C, H, W) maps and the
    feature axis of (N, D) vectors: the axis along which AlexNet's layers are split.
    """

    name: str = "device"

    def adopt(self, layer, in_shape: tuple):
        """The layer as this device runs it, with ``layer.params`` copied onto the device
        (``CPUDevice``: the layer itself). Called once per layer when a tower is built;
        ``in_shape`` is the shape of one example of its input, e.g. (256, 13, 13) for conv3
        of the paper's network (it reads both towers), for buffers sized in advance.

        The returned object has the layer protocol: ``forward(x, train)``, ``backward(dy)``,
        ``params`` / ``grads`` dicts (the optimizer reads them through
        ``named_parameters()``), ``astype``; a layer that draws random numbers while running
        keeps its generator in ``rng``, which the model replaces at every training pass."""
        raise NotImplementedError

    def asarray(self, x):
        """A host NumPy array (the images, ``dlogits``) as an array on this device."""
        raise NotImplementedError

    def to_host(self, a) -> np.ndarray:
        """An array of this device as a NumPy array (the logits, ``dx``, parameters)."""
        raise NotImplementedError

    def assign(self, dst, src: np.ndarray) -> None:
        """Copy the host array ``src`` into ``dst`` (an array of this device, same shape) in
        place, casting to ``dst``'s dtype (``load_state_dict``)."""
        raise NotImplementedError

    def concatenate(self, pieces: Sequence):
        """The gather of forward: ``pieces`` (one per tower, in tower order, shapes
        (N, C_t, ...)) joined along axis 1 into (N, sum C_t, ...) on this device. A single
        piece (the image read by conv1) is returned as this device's copy of it."""
        raise NotImplementedError

    def sum_slices(self, arrays: Sequence, start: int, stop: int):
        """The reduction of backward: ``sum_u arrays[u][:, start:stop]`` on this device, the
        tower order fixing the order of the additions (so every run adds identically)."""
        raise NotImplementedError

    def run(self, task: Callable):
        """Call ``task()`` with this device current and return its result once the device has
        finished the work (a GPU: ``with cuda.gpus[i]``, launches on its stream, then a
        stream synchronize, because the next gather reads the result)."""
        raise NotImplementedError

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class CPUDevice(Device):
    """A tower computed by one CPU thread on the host's memory (``"cpu:0"``, ``"cpu:1"``).

    Both CPU devices share one memory, so arrays need no moving: ``asarray``/``to_host``
    return their argument, ``concatenate`` is ``np.concatenate(..., axis=1)`` and
    ``sum_slices`` adds fresh contiguous copies (never views into another tower's arrays,
    which that tower's layers may still be reading).
    """

    index: int = 0

    @property
    def name(self) -> str:
        return f"cpu:{self.index}"

    def adopt(self, layer, in_shape: tuple):
        return layer

    def asarray(self, x):
        return x

    def to_host(self, a) -> np.ndarray:
        return a

    def assign(self, dst, src: np.ndarray) -> None:
        dst[...] = src

    def concatenate(self, pieces: Sequence):
        if len(pieces) == 1:
            return pieces[0]
        return np.concatenate(pieces, axis=1)

    def sum_slices(self, arrays: Sequence, start: int, stop: int):
        total = np.array(arrays[0][:, start:stop], copy=True, order="C")
        for a in arrays[1:]:
            total += a[:, start:stop]
        return total

    def run(self, task: Callable):
        return task()

    def __str__(self) -> str:
        return self.name


# -- naming devices -------------------------------------------------------------------------


def parse_devices(spec) -> list[Device]:
    """Devices from a command-line style string or a list of names/``Device`` objects.

    ``"cpu:0,cpu:1"`` -> two ``CPUDevice``; ``"cpu"`` -> the same two; ``"cuda:0,cuda:1"``
    -> two ``minialexnet.gpu.devices.CUDADevice``; ``"0,1"`` (bare integers, as
    ``CUDA_VISIBLE_DEVICES`` writes them) means ``"cuda:0,cuda:1"``. The same name twice is
    allowed (``"cuda:0,cuda:0"``: one GPU running both towers, each on its own stream).
    Raises ``ValueError`` for a name it cannot read, an unknown kind, or a GPU name where
    no GPU (or CUDA simulator) is usable.
    """
    if isinstance(spec, str):
        names = [part.strip() for part in spec.split(",") if part.strip()]
        if names == ["cpu"]:
            names = ["cpu:0", "cpu:1"]
    else:
        names = list(spec)
    devices = []
    for name in names:
        if isinstance(name, Device):
            devices.append(name)
            continue
        text = str(name).strip().lower()
        kind, _, index = text.rpartition(":") if ":" in text else ("cuda", ":", text)
        if not index.isdigit():
            raise ValueError(
                f"cannot read the device name {name!r}: write 'cpu:0', 'cuda:1' "
                f"or a bare GPU number like '1' (the whole list: {spec!r})"
            )
        if kind not in DEVICE_KINDS:
            raise ValueError(
                f"unknown device kind {kind!r} in {name!r}; known kinds: "
                f"{', '.join(DEVICE_KINDS)} (the whole list: {spec!r})"
            )
        devices.append(DEVICE_KINDS[kind](int(index)))
    return devices


def cuda_device(index: int) -> Device:
    """``minialexnet.gpu.devices.CUDADevice(index)``, imported here because numba-cuda is an
    optional dependency: ``import minialexnet.parallel`` never loads CUDA."""
    if not cuda_is_available():
        raise ValueError(
            f"the device 'cuda:{index}' needs an NVIDIA GPU with a working CUDA "
            f"driver and numba-cuda (pip install 'minialexnet[cuda]'), and none "
            f"is usable here. Run the towers on the CPU with "
            f"devices='cpu:0,cpu:1', or set NUMBA_ENABLE_CUDASIM=1 before "
            f"starting Python to use the (very slow) CUDA simulator."
        )
    from minialexnet.gpu.devices import CUDADevice

    return CUDADevice(index)


#: The kinds of device a name may start with, and what builds one from its index.
DEVICE_KINDS: dict[str, Callable[[int], Device]] = {"cpu": CPUDevice, "cuda": cuda_device}
