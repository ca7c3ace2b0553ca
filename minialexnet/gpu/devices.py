"""GPU towers for the two-device split (§3.2): ``CUDADevice``, the ``Device`` of numba.cuda.

``minialexnet.parallel`` cuts AlexNet into two towers and asks each tower's ``Device`` (see
``minialexnet.parallel.devices``) to hold its arrays, run its work and perform the split's
two collectives. This file answers those questions for a GPU; ``parse_devices("cuda:0,cuda:1")``
builds its ``CUDADevice`` (importing this module only then: numba-cuda is optional):

- **arrays** are numba.cuda device arrays (float32). ``adopt`` copies a tower's share of each
  layer's parameters onto the GPU and wraps the layer's device twin
  (``minialexnet.gpu.layers``) in the layer protocol (``TowerLayer``);
- **work** runs in ``run(task)``: inside ``with cuda.gpus[index]`` (allocations and launches
  go to this GPU), every kernel on the device's own stream; the host does not wait for it.
  ``run`` records an event on the stream when the task's work is queued, and the next
  gather or reduce on the *other* tower makes its own stream wait for that event
  (``_after_the_others``) before reading the result: the two streams are ordered on the
  GPU, with no host synchronisation per stage (the host waits only where it reads numbers:
  the loss, ``to_host``);
- **gather** (``concatenate``, forward): every tower's maps joined along the channel axis,
  ``out[:, offset_u : offset_u + C_u] = piece_u`` (``kernels/cuda/columns.py``:
  ``place_columns``, one thread per output element);
- **reduce** (``sum_slices``, backward): ``out = sum_u arrays[u][:, start:stop]`` in tower
  order (``add_columns``; gather-style: each thread reads the values it adds, so no
  atomics and a fixed order of additions).

An array that lives on the *other* GPU is first copied into a local staging buffer with
``copy_to_device`` (a device-to-device copy, peer-to-peer where the two GPUs allow it:
``enable_peer_access`` turns that on when the engine is built), and the small kernels then
read local memory only. The paper's GPUs likewise "read from and write to one another's
memory directly" (§3.2). Only what is read crosses over:

- a gather needs every tower's piece whole (each lands in its own columns of ``out``): one
  copy of the piece;
- a reduce needs only columns ``start:stop`` of each tower's (N, C, P) gradient: for every
  image n, ``grad[n, start:stop]`` is one contiguous block of ``(stop - start) * P`` values,
  so ``local_columns`` copies those N blocks into an (N, stop - start, P) buffer (half the
  bytes of the split's even halves), N copies instead of one. Each copy has a fixed cost,
  so where the bytes saved are fewer than ``(N - 1) * _COPY_COST_BYTES`` (at the paper's
  batch of 128: the feature vectors, fc6-fc8's inputs and the logits) the whole array is
  copied at once instead (``_copy_columns_per_image``). A host array
  (``backward(dlogits)``) has its columns uploaded only.

An array already on this GPU (``"cuda:0,cuda:0"``) is read where it is: no copy.

**Which names mean what.** Each ``CUDADevice`` object owns one stream, so:

- ``"cuda:0,cuda:1"``: two GPUs, the paper's setup, one tower each;
- ``"cuda:0,cuda:0"``: one GPU running both towers, each on its own stream (the towers'
  kernels may overlap when the runner uses threads); the only two-tower configuration the
  CUDA simulator can run (it has one device), and the default on a one-GPU machine.

**What has and has not been tested.** The tests (``tests/test_cuda_parallel.py``) run
``"cuda:0,cuda:0"`` under the CUDA simulator: one device, streams that execute
synchronously, kernels that run one at a time (the simulator allows no other: there the
towers take turns, ``_SIMULATOR_TURN``); there the events that order the two streams
are recorded and waited on, but a synchronous stream cannot show a missing one. Not run
anywhere yet: two host threads driving two real streams at once, and everything only two
GPUs do, ``with cuda.gpus[1]``, peer access, copies between GPUs (``_gpu_of`` finding an
array on the other device) and two GPUs computing at once. That code follows numba-cuda's
documented API, but a first run on such a machine should compare the split against the CPU
model (as the tests do) before it is trusted.

Buffers are allocated once and reused (numba.cuda frees memory lazily, and a flush
synchronises the device): the gathered input of every stage has its own buffer (it must
live until that stage's backward: a fully connected layer keeps its input for
``dW = dy^T x``), the reduced gradient one buffer per device and the staging copies one per
device and tower.
"""

from __future__ import annotations

import contextlib
import copy
import math
import threading
import weakref
from collections.abc import Callable, Sequence

import numpy as np
from numba import cuda

from minialexnet.gpu.layers import device_layer
from minialexnet.kernels.cuda import require_cuda
from minialexnet.kernels.cuda._launch import SIMULATOR, check_device_array, is_device_array
from minialexnet.kernels.cuda.columns import add_columns, place_columns
from minialexnet.layers import Dropout
from minialexnet.parallel.devices import Device

# The CUDA simulator executes one kernel at a time per process (it asserts so): under it the
# towers take turns, whatever the runner's mode. On a GPU the towers run freely.
_SIMULATOR_TURN = threading.RLock() if SIMULATOR else contextlib.nullcontext()

# Every CUDADevice alive: a gather or reduce waits for the others' last queued work.
_DEVICES = weakref.WeakSet()


def _as_ncp(a):
    """(N, C) or (N, C, H, W) -> an (N, C, P) view (P = H*W, or 1 for feature vectors)."""
    n, c = a.shape[0], a.shape[1]
    return a.reshape(n, c, a.size // (n * c))


def _gpu_of(a) -> int:
    """The index of the GPU whose memory holds device array ``a`` (0 in the simulator)."""
    if SIMULATOR:
        return 0
    return a.gpu_data.context.device.id


# The fixed cost of one copy between GPUs (a call from Python into the driver, the copy
# engine's set-up: several microseconds), as the bytes a PCIe link moves meanwhile (about
# 12 GB/s x 5 us). A rough rule, not measured: no machine with two GPUs has run this code
# yet (see the module docstring). Over NVLink (hundreds of GB/s) the whole copy wins more
# often: raise it there.
_COPY_COST_BYTES = 64 * 1024


def _copy_columns_per_image(shape: tuple, start: int, stop: int, itemsize: int) -> bool:
    """Whether to copy columns ``start:stop`` of an array of ``shape`` (N, C, ...) from another
    GPU as N per-image blocks (True) rather than the whole array at once (False).

    The N copies move ``N * (C - W) * P * itemsize`` bytes fewer (W = stop - start, P =
    H*W or 1) for ``N - 1`` extra copies, each worth ``_COPY_COST_BYTES``. With the paper's
    sizes (N = 128, even halves) conv3's input gradient, (N, 256, 13, 13), saves 86.5 KB per
    image and is copied by image; fc6's input gradient, (N, 9216), saves 18 KB per image,
    fc7's and fc8's 8 KB, the logits 2 KB: copied whole. One image: always the columns (one
    copy, fewer bytes)."""
    n, c = shape[0], shape[1]
    saved = n * (c - (stop - start)) * math.prod(shape[2:]) * itemsize
    return saved >= (n - 1) * _COPY_COST_BYTES


def _copy(dst, src, stream) -> None:
    """``dst[...] = src``: C-contiguous arrays of one size, ``dst`` on this GPU, ``src`` on
    another GPU (device to device, peer to peer where possible) or the host. Every copy
    into a tower goes through here (the tests count its bytes)."""
    dst.copy_to_device(src, stream=stream)


def _address(a) -> int:
    """The device address of ``a``'s first element: which buffer (and where in it) ``a`` views."""
    if SIMULATOR:  # a FakeCUDAArray wraps a NumPy array
        return a.__array_interface__["data"][0]
    return a.__cuda_array_interface__["data"][0]


# -- the device ------------------------------------------------------------------------------


class CUDADevice(Device):
    """A tower on GPU ``index`` (``"cuda:0"``), with its own CUDA stream (see the module
    docstring). Two objects for the same GPU are two towers on two streams.

    Raises ``RuntimeError`` when no GPU (or simulator) is usable, ``ValueError`` when GPU
    ``index`` does not exist. Array arguments are float32 device arrays (or host NumPy arrays,
    which are copied up), shaped (N, C, H, W) or (N, D); every result lives on this GPU.
    """

    def __init__(self, index: int = 0) -> None:
        require_cuda(f"the device 'cuda:{index}'")
        count = len(cuda.gpus)
        if not 0 <= int(index) < count:
            have = (
                "the CUDA simulator has one device"
                if SIMULATOR
                else (f"this machine has {count} GPU{'s' if count != 1 else ''}")
            )
            raise ValueError(
                f"there is no GPU 'cuda:{index}': {have} ("
                f"{', '.join(f'cuda:{i}' for i in range(count))}). To run both towers of the "
                f"§3.2 split on one GPU, each on its own stream, write devices='cuda:0,cuda:0'."
            )
        self.index = int(index)
        self._stream = None
        self._buffers: dict = {}
        self._queued = None  # event after the work of the last ``run``
        # The towers whose outputs this one reads (set by CudaTwoTowerAlexNet); None: every
        # CUDADevice alive, which is always safe.
        self.partners = None
        _DEVICES.add(self)
        # The GEMM of this tower's layers: "numba" or "cublas" (set by CudaTwoTowerAlexNet).
        self.gemm = "numba"

    @property
    def name(self) -> str:
        return f"cuda:{self.index}"

    @property
    def stream(self):
        """This tower's CUDA stream (created in the GPU's context on first use)."""
        if self._stream is None:
            with cuda.gpus[self.index]:
                self._stream = cuda.stream()
        return self._stream

    # -- the Device interface -----------------------------------------------------------------

    def adopt(self, layer, in_shape: tuple):
        """``TowerLayer`` (``TowerDropout`` for a ``Dropout``): ``layer`` on this GPU."""
        with cuda.gpus[self.index]:
            kind = TowerDropout if isinstance(layer, Dropout) else TowerLayer
            return kind(layer, in_shape, self)

    def asarray(self, x):
        """A new device array on this GPU holding ``x``: a host array (as float32), or a
        device array of any GPU (same dtype)."""
        with cuda.gpus[self.index]:
            if is_device_array(x):
                out = cuda.device_array(tuple(x.shape), dtype=x.dtype, stream=self.stream)
                out.copy_to_device(x, stream=self.stream)
            else:
                out = cuda.to_device(np.ascontiguousarray(x, dtype=np.float32), stream=self.stream)
            self.stream.synchronize()
        return out

    def to_host(self, a) -> np.ndarray:
        if not is_device_array(a):
            return np.asarray(a)
        with cuda.gpus[self.index]:
            host = a.copy_to_host(stream=self.stream)
            self.stream.synchronize()
        return host

    def assign(self, dst, src: np.ndarray) -> None:
        src = np.ascontiguousarray(src, dtype=dst.dtype)
        if src.shape != tuple(dst.shape):
            raise ValueError(
                f"{self}: cannot copy an array of shape {src.shape} into a device "
                f"array of shape {tuple(dst.shape)}"
            )
        with cuda.gpus[self.index]:
            dst.copy_to_device(src, stream=self.stream)
            self.stream.synchronize()

    def concatenate(self, pieces: Sequence):
        """Gather along axis 1 (see ``Device.concatenate``); a single piece (the image) is
        returned as is when it lives on this GPU, else copied here. Call inside ``run``."""
        self._after_the_others()
        if len(pieces) == 1:
            return self.local(pieces[0], "input")
        n, rest = pieces[0].shape[0], tuple(pieces[0].shape[2:])
        for u, piece in enumerate(pieces):
            if piece.shape[0] != n or tuple(piece.shape[2:]) != rest:
                raise ValueError(
                    f"{self}.concatenate: tower {u}'s piece has shape "
                    f"{tuple(piece.shape)}, tower 0's {tuple(pieces[0].shape)}; "
                    f"they may differ only along axis 1"
                )
        widths = [piece.shape[1] for piece in pieces]
        # Every stage gathers the outputs of other layers: their buffers name its own buffer.
        out = self._buffer(
            ("gather", *(_address(piece) for piece in pieces)), (n, sum(widths), *rest)
        )
        out3 = _as_ncp(out)
        offset = 0
        for u, piece in enumerate(pieces):
            here = _as_ncp(self.local(piece, ("peer", u)))
            place_columns(here, out3, offset, stream=self.stream)
            offset += widths[u]
        return out

    def sum_slices(self, arrays: Sequence, start: int, stop: int):
        """Reduce along axis 1 (see ``Device.sum_slices``), in tower order. The result is a
        view of one reused buffer, valid until the next ``sum_slices`` on this device (the
        stage's backward consumes it first). Of an array on another GPU only columns
        ``start:stop`` are copied (``local_columns``). Call inside ``run``."""
        self._after_the_others()
        n, rest = arrays[0].shape[0], tuple(arrays[0].shape[2:])
        out = self._buffer("reduce", (n, stop - start, *rest))
        out3 = _as_ncp(out)
        for u, full in enumerate(arrays):
            if full.shape[0] != n or tuple(full.shape[2:]) != rest or full.shape[1] < stop:
                raise ValueError(
                    f"{self}.sum_slices: tower {u}'s gradient has shape "
                    f"{tuple(full.shape)}, which has no columns {start}:{stop} "
                    f"of a (N={n}, ..., {rest}) array"
                )
            # Where ``full`` lives on another GPU (or the host), only its columns come over.
            here, first = self.local_columns(full, start, stop, ("peer", u))
            add_columns(_as_ncp(here), first, out3, accumulate=u > 0, stream=self.stream)
        return out

    def run(self, task: Callable):
        """``task()`` with this GPU current; its kernels are queued on this tower's stream
        and an event is recorded after them (the host does not wait)."""
        with _SIMULATOR_TURN, cuda.gpus[self.index]:
            result = task()
            if self._queued is None:
                self._queued = cuda.event()
            self._queued.record(self.stream)
        return result

    def _after_the_others(self) -> None:
        """Make this stream wait (on the GPU) for the work the other towers have queued so
        far: their outputs are what a gather or a reduce reads."""
        for other in list(_DEVICES) if self.partners is None else self.partners:
            if other is not self and other._queued is not None:
                other._queued.wait(self.stream)

    # -- buffers --------------------------------------------------------------------------------

    def local(self, a, slot, dtype=np.float32):
        """``a`` as an array of this GPU: ``a`` itself when it already lives here, else a copy
        in the reused buffer ``slot`` (a host upload, or a copy from the other GPU). Host
        arrays are converted to ``dtype``. Call inside ``run`` (the copy is on this stream)."""
        if is_device_array(a):
            if _gpu_of(a) == self.index:
                return a
            check_device_array(a, f"{self}.local", "a", dtype=a.dtype)
            here = self._buffer(slot, tuple(a.shape), a.dtype)
            _copy(here, a, self.stream)  # peer-to-peer where possible
            return here
        host = np.ascontiguousarray(a, dtype=dtype)
        here = self._buffer(slot, host.shape, host.dtype)
        _copy(here, host, self.stream)
        return here

    def local_columns(self, a, start: int, stop: int, slot):
        """Columns ``start:stop`` of ``a`` (N, C, ...) where this GPU can read them: returns
        ``(b, first)``, with ``b[:, first : first + stop - start]`` those columns.

        - ``a`` lives on this GPU: ``(a, start)``, no copy;
        - ``a`` lives on another GPU: its columns copied into the reused buffer ``slot``, one
          contiguous block of ``(stop - start) * P`` values per image (a C-contiguous array's
          ``a[n, start:stop]`` is one), ``(b, 0)`` with ``b`` (N, stop - start, ...); or, where
          ``_copy_columns_per_image`` says N copies would cost more than the bytes they
          save, the whole array in one copy, ``(b, start)``;
        - ``a`` is a host array: its columns uploaded (one copy), ``(b, 0)``.

        Call inside ``run`` (the copies are on this stream)."""
        if not is_device_array(a):
            return self.local(np.asarray(a)[:, start:stop], slot), 0
        if _gpu_of(a) == self.index:
            return a, start
        check_device_array(a, f"{self}.local_columns", "a", dtype=a.dtype)
        shape = tuple(a.shape)
        if not _copy_columns_per_image(shape, start, stop, np.dtype(a.dtype).itemsize):
            return self.local(a, slot), start
        n, c, pixels = shape[0], shape[1], math.prod(shape[2:])
        here = self._buffer(slot, (n, stop - start, *shape[2:]), a.dtype)
        src, dst = a.reshape(a.size), here.reshape(here.size)  # flat views: no copies
        row, block = c * pixels, (stop - start) * pixels
        for i in range(n):
            begin = i * row + start * pixels
            _copy(dst[i * block : (i + 1) * block], src[begin : begin + block], self.stream)
        return here, 0

    def drop_buffers(self) -> None:
        """Forget the gather, reduce and staging buffers (their memory is freed once no layer
        holds a view of them). Called when the layers' buffers are rebuilt for a larger batch:
        the old gathers are named after buffers that no longer exist."""
        self._buffers.clear()

    def _buffer(self, slot, shape: tuple, dtype=np.float32):
        """A C-contiguous device array of ``shape``: the front of a flat buffer kept under
        ``slot`` and reallocated only when a larger (or differently typed) one is needed."""
        size = math.prod(shape)
        flat = self._buffers.get(slot)
        if flat is None or flat.size < size or np.dtype(flat.dtype) != np.dtype(dtype):
            flat = cuda.device_array(max(size, 1), dtype=dtype, stream=self.stream)
            self._buffers[slot] = flat
        return flat[:size].reshape(tuple(shape))

    def __repr__(self) -> str:
        return f"CUDADevice({self.index})"


def enable_peer_access(devices: Sequence) -> list:
    """Let every pair of the ``devices``' GPUs that can read each other's memory do so
    (``cuCtxEnablePeerAccess``), so that copies between the towers go GPU to GPU (NVLink or
    PCIe) instead of through the host. Returns the ``(i, j)`` pairs enabled now; pairs that
    cannot, or already are, are left as they are. Nothing to do on one GPU or the simulator."""
    indices = sorted({d.index for d in devices})
    if SIMULATOR or len(indices) < 2:
        return []
    enabled = []
    for i in indices:
        for j in indices:
            if i == j:
                continue
            with cuda.gpus[j]:
                peer = cuda.current_context()
            with cuda.gpus[i]:
                context = cuda.current_context()
                try:
                    if context.can_access_peer(j):
                        context.enable_peer_access(peer.handle)
                        enabled.append((i, j))
                except Exception:  # noqa: BLE001 - already enabled, or refused: copies still work
                    continue
    return enabled


# -- a tower's layer on the GPU ----------------------------------------------------------------


class TowerLayer:
    """One layer of a tower on a GPU, with the layer protocol ``TwoTowerAlexNet`` speaks.

    Wraps the layer's device twin (``minialexnet.gpu.layers.device_layer``):
    ``forward(x, train=False) -> y`` and ``backward(dy, need_dx=True) -> dx`` take and return
    float32 device arrays ((N, C, H, W) or (N, D)); ``need_dx=False`` skips the input
    gradient (the first layer in training) and returns None. ``params`` / ``grads``: dicts of
    float32 device arrays on this GPU, owned here (the twin computes into them), so the GPU's
    SGD kernel updates them in place. The twin's buffers hold ``capacity`` examples; a larger
    batch rebuilds them (``reserve``). Outputs are views of the twin's buffers, valid until
    the layer runs again. GPU arithmetic is float32 only.
    """

    def __init__(self, layer, in_shape: tuple, device: CUDADevice) -> None:
        # A parameter-free copy of the CPU layer: its hyper-parameters describe the twin.
        self.template = copy.copy(layer)
        self.template.params, self.template.grads = {}, {}
        self._description = repr(layer)
        self.in_shape = tuple(in_shape)
        self.device = device
        stream = device.stream
        self.params = {
            key: cuda.to_device(np.ascontiguousarray(value, dtype=np.float32), stream=stream)
            for key, value in layer.params.items()
        }
        self.grads = {
            key: cuda.to_device(np.zeros(value.shape, dtype=np.float32), stream=stream)
            for key, value in layer.params.items()
        }
        self.capacity = 0
        self._twin = None

    def reserve(self, batch: int):
        """Make the buffers hold ``batch`` examples (rebuilding them if smaller); returns the
        twin. Call with this tower's GPU current (inside ``device.run``)."""
        if batch > self.capacity:
            self._twin = device_layer(
                self.template,
                self.in_shape,
                batch,
                self.params,
                sequence=0,
                stream=self.device.stream,
                gemm=self.device.gemm,
            )
            self._twin.grads = self.grads
            self.capacity = batch
        return self._twin

    def release(self) -> None:
        """Forget the twin and its buffers (the next ``reserve`` builds them again); the
        parameters and gradients stay."""
        self._twin, self.capacity = None, 0

    def forward(self, x, train: bool = False):
        return self.reserve(x.shape[0]).forward(x, train, 0)

    def backward(self, dy, need_dx: bool = True):
        if self._twin is None:
            raise RuntimeError(f"{self!r}: backward called before forward")
        return self._twin.backward(dy, need_dx)

    def astype(self, dtype) -> TowerLayer:
        if np.dtype(dtype) != np.float32:
            raise TypeError(
                f"the GPU towers compute in float32 only, not {np.dtype(dtype)}; "
                f"run float64 gradient checks on the CPU split "
                f"(TwoTowerAlexNet with devices='cpu:0,cpu:1')"
            )
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._description} on {self.device})"


class TowerDropout(TowerLayer):
    """Dropout (§4.2) of a tower on a GPU. ``rng`` (replaced by the model at every training
    pass) draws one 63-bit seed per training forward; the seed names the mask that the
    counter-based kernel (``kernels/cuda/dropout.py``) computes in forward and recomputes in
    backward. ``seed`` and ``sequence`` (0: the seed alone tells masks apart) are kept, so
    ``keep_mask(seed, sequence, shape, p)`` reproduces the last mask on the host."""

    def __init__(self, layer, in_shape: tuple, device: CUDADevice) -> None:
        super().__init__(layer, in_shape, device)
        self.rng = layer.rng
        self.p = layer.p
        self.seed, self.sequence = None, 0

    def forward(self, x, train: bool = False):
        self.seed = int(self.rng.integers(2**63)) if train else None
        return self.reserve(x.shape[0]).forward(x, train, self.seed or 0)
