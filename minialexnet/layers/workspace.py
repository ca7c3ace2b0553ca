"""Scratch memory shared by the layers that run one after another: one workspace per thread.

A convolution computed by im2col + GEMM (``Conv2D``) needs large temporary matrices: the
columns of a chunk of images, their gradient, the GEMM's output. Fresh arrays for every
chunk would cost page faults each time (about as long as im2col itself), so they are reused.
Reused *per layer*, the five conv layers of the paper's network would each hold its own set
for the whole run (about 135 MB each with 64 MiB chunks): 675 MB kept for nothing, since the
layers never run at the same time. So the scratch lives here instead, one set per thread,
sized by the largest layer that has used it.

Why per thread: the two towers of §3.2 run their layers at the same moment on two threads
(``minialexnet.parallel``); each thread must have its own buffers. Within one thread the
layers run one after another and each uses its scratch only inside one ``forward`` or
``backward`` call, so sharing is safe. Nothing a layer *returns* or keeps between calls may
live here.

    scratch("cols", (rows, columns), np.float32)   # a view of this thread's "cols" buffer
"""

from __future__ import annotations

import math
import threading

import numpy as np

_local = threading.local()


def _buffers() -> dict[str, np.ndarray]:
    """This thread's named flat buffers (created on the thread's first use)."""
    buffers = getattr(_local, "buffers", None)
    if buffers is None:
        buffers = _local.buffers = {}
    return buffers


def scratch(name: str, shape: tuple, dtype) -> np.ndarray:
    """A C-contiguous array of ``shape`` and ``dtype``: the front of this thread's buffer
    ``name``, reallocated only when a larger one (or another dtype) is asked for.

    The contents are whatever the last user left: write before reading. Valid until the next
    ``scratch(name, ...)`` call in this thread, so use it within one layer call.
    """
    size = math.prod(shape)
    buffers = _buffers()
    buf = buffers.get(name)
    if buf is None or buf.size < size or buf.dtype != np.dtype(dtype):
        del buf  # free the old buffer before allocating the new one: no peak of both
        buffers.pop(name, None)
        buf = buffers[name] = np.empty(size, dtype=dtype)
    return buf[:size].reshape(shape)


def held() -> dict[str, int]:
    """Bytes of each buffer this thread's workspace holds now (for tests and reports)."""
    return {name: buf.nbytes for name, buf in _buffers().items()}


def release() -> None:
    """Free this thread's workspace (it is rebuilt by the next ``scratch`` call)."""
    _buffers().clear()
