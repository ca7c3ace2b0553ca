"""Where the towers of the two-device split run (§3.2): devices and the tower runner.

``minialexnet.parallel`` cuts AlexNet into two *towers*, one per device. This file answers
the two questions the split asks of a device, so that the split itself never mentions
threads, GPUs or streams:

1. **Where do a tower's arrays live?** A ``Device`` moves arrays in and out (``asarray``,
   ``to_host``, ``assign``), turns a NumPy layer into the layer it runs (``adopt``), runs a
   tower's work with the device current (``run``), and performs the split's two
   collectives on its own memory: ``concatenate`` (gather every tower's maps in forward)
   and ``sum_slices`` (add up every tower's gradient for this tower's maps in backward).
2. **How does the host drive the towers?** A ``TowerRunner`` runs one task per tower,
   either concurrently on a persistent pool of worker threads (``"threads"``) or one after
   another in the calling thread (``"sequential"``, for teaching and debugging: same
   results, readable tracebacks, a debugger that stops where you expect).

``CPUDevice`` is the only device implemented here: two CPU "devices" share the host's memory,
so the collectives are plain ``np.concatenate`` and ``+``. Its towers can run at the same
time because OpenBLAS (NumPy's ``matmul``) and Numba's compiled kernels release the GIL.
A GPU device (the same split on two GPUs, or on one GPU with one stream per tower,
DESIGN.md §4) implements the same seven methods on device arrays and registers itself with
``register_device_kind("cuda", factory)``; ``parse_devices("cuda:0,cuda:1")`` then builds it
(``minialexnet.cuda_devices.CUDADevice`` does so when imported).

**Numba's "workqueue" threading layer** aborts the whole process ("Numba workqueue threading
layer is terminating: Concurrent access has been detected") when two threads launch
``parallel=True`` kernels at the same time; the "omp" and "tbb" layers are thread-safe.
Numba picks a layer at its first parallel launch (``numba.threading_layer()``; this
project's machines get "omp"), so the runner in ``"threads"`` mode runs its first round of
tasks one after another, then looks: under "workqueue" it keeps running the towers one after
another for good and says so with a ``RuntimeWarning`` (set ``NUMBA_THREADING_LAYER=omp`` or
install ``tbb`` to get concurrency).
"""
from __future__ import annotations

import sys
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

#: How the host drives the towers (see ``TowerRunner``).
MODES = ("threads", "sequential")


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

_DEVICE_KINDS: dict[str, Callable[[int], Device]] = {"cpu": CPUDevice}


def register_device_kind(kind: str, factory: Callable[[int], Device]) -> None:
    """Make ``parse_devices`` build ``factory(index)`` for names ``"<kind>:<index>"``.

    ``minialexnet.cuda_devices`` calls ``register_device_kind("cuda", CUDADevice)`` when it
    is imported, so that ``--devices cuda:0,cuda:1`` (or ``0,1``) works without this file
    knowing CUDA.
    """
    if not kind.isidentifier():
        raise ValueError(f"device kind must be a plain name like 'cuda', got {kind!r}")
    _DEVICE_KINDS[kind] = factory


def parse_devices(spec) -> list[Device]:
    """Devices from a command-line style string or a list of names/``Device`` objects.

    ``"cpu:0,cpu:1"`` -> two ``CPUDevice``; ``"cpu"`` -> the same two; ``"0,1"`` (bare
    integers, as ``CUDA_VISIBLE_DEVICES`` writes them) -> ``"cuda:0,cuda:1"``, which needs a
    registered ``"cuda"`` kind (``register_device_kind``). The same name twice is allowed
    (``"cuda:0,cuda:0"``: one GPU running both towers, each on its own stream).
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
            raise ValueError(f"cannot read the device name {name!r}: write 'cpu:0', 'cuda:1' "
                             f"or a bare GPU number like '1' (the whole list: {spec!r})")
        if kind not in _DEVICE_KINDS:
            hint = (" GPU towers need the CUDA engine: import minialexnet.cuda_devices first"
                    " (it registers 'cuda'), or train on 'cpu:0,cpu:1'." if kind == "cuda"
                    else "")
            raise ValueError(f"unknown device kind {kind!r} in {name!r}; known kinds: "
                             f"{', '.join(sorted(_DEVICE_KINDS))}.{hint}")
        devices.append(_DEVICE_KINDS[kind](int(index)))
    return devices


# -- running one task per tower -------------------------------------------------------------

def _numba_threading_layer() -> str | None:
    """Numba's threading layer, or None while no parallel kernel has run (or no Numba)."""
    numba = sys.modules.get("numba")
    if numba is None:
        return None
    try:
        return numba.threading_layer()
    except ValueError:                 # "Threading layer is not initialized"
        return None


class TowerRunner:
    """Runs one task per tower and returns their results in tower order.

    ``mode="threads"``: a persistent ``ThreadPoolExecutor`` with one worker per tower; the
    tasks of one round run at the same time, and ``map`` returns when all have finished (the
    next gather needs every tower's output). ``mode="sequential"``: the tasks run one after
    another in the calling thread. Both give identical results: the towers share no state
    and every reduction adds in tower order.

    ``guard_numba`` (set when the towers run on CPU devices): keep towers from launching
    Numba parallel kernels concurrently until Numba's threading layer is known to be
    thread-safe (see the module docstring); ``self.serialized`` is True once it is known not
    to be ("workqueue"), and ``self.threading_layer`` holds the layer's name once known.
    """

    def __init__(self, mode: str = "threads", workers: int = 2, guard_numba: bool = True):
        if mode not in MODES:
            raise ValueError(f"unknown tower mode {mode!r}; choose 'threads' (towers at the "
                             f"same time) or 'sequential' (one after another, for debugging)")
        self.mode = mode
        self.workers = int(workers)
        self.guard_numba = bool(guard_numba)
        self.serialized = False
        self.threading_layer: str | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def map(self, tasks: Sequence[Callable]) -> list:
        """``[task() for task in tasks]``, concurrently in ``"threads"`` mode."""
        if self.mode == "sequential" or len(tasks) == 1 or not self._safe_to_overlap():
            return [task() for task in tasks]
        futures = [self._executor().submit(task) for task in tasks]
        wait(futures)          # every tower finishes before an error propagates
        return [f.result() for f in futures]

    def _safe_to_overlap(self) -> bool:
        """May two towers launch Numba parallel kernels at the same time now?"""
        if not self.guard_numba:
            return True
        if self.serialized:
            return False
        if self.threading_layer is None:
            self.threading_layer = _numba_threading_layer()
            if self.threading_layer is None:
                from minialexnet.backend import get_backend
                # Unknown until a first parallel kernel has run: run this round one tower
                # after another (its kernels initialise the layer), unless no Numba kernel
                # can run at all (the readable NumPy backend).
                return get_backend() == "numpy"
            if self.threading_layer == "workqueue":
                self.serialized = True
                warnings.warn(
                    "Numba's threading layer is 'workqueue', which aborts the process when two "
                    "threads launch parallel kernels at once: the two towers will run one after "
                    "another (same results, no overlap). For concurrent towers set "
                    "NUMBA_THREADING_LAYER=omp (or install tbb) before starting Python.",
                    RuntimeWarning, stacklevel=4)
                return False
        return True

    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.workers,
                                                thread_name_prefix="minialexnet-tower")
            return self._pool

    def close(self) -> None:
        """Stop the worker threads (a later ``map`` starts new ones)."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)

    # A copy (copy.deepcopy in gradcheck.check_model) gets its own pool when it needs one.
    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_pool"] = None
        del state["_pool_lock"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._pool_lock = threading.Lock()

    def __del__(self) -> None:
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=False)

    def __repr__(self) -> str:
        extra = " (serialized: Numba workqueue)" if self.serialized else ""
        return f"TowerRunner(mode={self.mode!r}, workers={self.workers}){extra}"
