"""Multiply a device array by a number, in place: a data-parallel shard's gradient weight.

No CPU twin: on the host this is NumPy's ``x *= factor``. Used by
``minialexnet.distributed.allreduce`` when a CUDA-aware MPI sums gradients in device memory:
each process first weighs its shard's gradient by ``n_r / B`` (``distributed/shards.py``).

Thread mapping: one thread per element (the array treated as flat).
"""

from __future__ import annotations

import numpy as np
from numba import cuda

from minialexnet.kernels.cuda._launch import THREADS_PER_BLOCK, blocks_for, check_device_array


@cuda.jit
def _scale_kernel(x, factor):
    i = cuda.grid(1)
    if i < x.shape[0]:
        x[i] = x[i] * factor


def scale_inplace(x, factor: float, stream=0) -> None:
    """``x <- factor * x`` for a float32 device array ``x`` of any shape (``factor`` rounded
    to float32 once, as NumPy's ``x *= np.float32(factor)``)."""
    check_device_array(x, "scale_inplace", "x")
    _scale_kernel[blocks_for(x.size), THREADS_PER_BLOCK, stream](
        x.reshape(x.size), np.float32(factor)
    )
