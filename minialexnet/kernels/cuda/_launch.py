"""Launch helpers shared by the numba.cuda kernels: argument checks, grid sizes, allocation.

Nothing here touches the GPU at import time. The checks run on the host before a launch so a
wrong argument gives a clear message instead of a kernel that reads out of bounds or a
typing error from deep inside Numba.
"""

from __future__ import annotations

import numpy as np
from numba import config, cuda

from minialexnet.kernels.cuda._compat import fix_simulator_shared_arrays

# True when numba.cuda is the CUDA simulator (NUMBA_ENABLE_CUDASIM=1 before Numba's import).
SIMULATOR = bool(config.ENABLE_CUDASIM)
if SIMULATOR:
    # Every thread of a block must get the same shared array (a race in the simulator:
    # see _compat.py). Every kernel file imports this module before it launches anything.
    fix_simulator_shared_arrays()

# Threads per block of the elementwise kernels: 256 on a GPU (8 warps: a multiple of the
# 32-thread warp, several blocks per SM to hide memory latency). The simulator runs every
# thread of a block as a Python thread, so there 32 keeps the tests fast; no kernel depends
# on the block size for its result (each thread computes one output, the launch covers all).
THREADS_PER_BLOCK = 32 if SIMULATOR else 256


def blocks_for(count: int, threads: int = THREADS_PER_BLOCK) -> int:
    """Blocks of ``threads`` needed to give each of ``count`` outputs its own thread."""
    return max(1, (int(count) + threads - 1) // threads)


def is_device_array(x) -> bool:
    """True for a numba.cuda device array (real or simulated); False for a NumPy array."""
    return bool(getattr(x, "__cuda_ndarray__", False))


def check_device_array(
    x, who: str, name: str, shape: tuple | None = None, ndim: int | None = None, dtype=np.float32
):
    """Check that ``x`` is a C-contiguous device array of ``dtype`` (and shape / rank).

    The GPU path is float32 only (the paper trained in single precision, and every kernel
    uses float32 literals and accumulators); the float64 gradient checks run on the CPU layers.
    Returns ``x`` unchanged.
    """
    if not is_device_array(x):
        raise TypeError(
            f"{who}: {name} must be a numba.cuda device array, got "
            f"{type(x).__name__}; copy it with numba.cuda.to_device(x)"
        )
    if np.dtype(x.dtype) != np.dtype(dtype):
        raise TypeError(
            f"{who}: {name} must have dtype {np.dtype(dtype)}, got {x.dtype} "
            f"(the CUDA kernels run in float32; convert on the host with "
            f"x.astype(np.float32) before copying)"
        )
    if not x.is_c_contiguous():
        raise ValueError(
            f"{who}: {name} must be C-contiguous; copy it with "
            f"numba.cuda.to_device(np.ascontiguousarray(host_array))"
        )
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{who}: {name} must have {ndim} axes, got shape {tuple(x.shape)}")
    if shape is not None and tuple(x.shape) != tuple(shape):
        raise ValueError(f"{who}: {name} must have shape {tuple(shape)}, got {tuple(x.shape)}")
    return x


def output(out, shape: tuple, who: str, name: str, dtype=np.float32, stream=0):
    """``out`` after checking its shape and dtype, or a fresh device array of that shape."""
    if out is None:
        return cuda.device_array(tuple(shape), dtype=dtype, stream=stream)
    return check_device_array(out, who, name, shape=shape, dtype=dtype)
