"""The saturating tanh non-linearity (the baseline of §3.1, Figure 1) on the GPU.

No CPU twin: the CPU layer is one NumPy expression (``np.tanh(x)``).

    forward:  y = tanh(x)
    backward: dx = dy * (1 - y^2)

Arrays of any shape (treated as flat). Thread mapping: one thread per element; the output
may be the input array.
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda

from minialexnet.kernels.cuda._launch import (
    THREADS_PER_BLOCK,
    blocks_for,
    check_device_array,
    output,
)


@cuda.jit
def _tanh_forward_kernel(x, y):
    i = cuda.grid(1)
    if i < x.shape[0]:
        y[i] = math.tanh(x[i])


@cuda.jit
def _tanh_backward_kernel(y, dy, dx):
    i = cuda.grid(1)
    if i < y.shape[0]:
        dx[i] = dy[i] * (np.float32(1.0) - y[i] * y[i])


def tanh_forward(x, y=None, stream=0):
    """``y = tanh(x)`` (§3.1's saturating baseline); x : float32 device array; y : optional
    output (may be x). One thread per element."""
    check_device_array(x, "tanh_forward", "x")
    y = output(y, x.shape, "tanh_forward", "y", stream=stream)
    _tanh_forward_kernel[blocks_for(x.size), THREADS_PER_BLOCK, stream](
        x.reshape(x.size), y.reshape(y.size)
    )
    return y


def tanh_backward(y, dy, dx=None, stream=0):
    """``dx = dy * (1 - y**2)`` from the forward output ``y``; float32 device arrays of one
    shape; ``dx`` optional (may be dy). One thread per element."""
    check_device_array(y, "tanh_backward", "y")
    check_device_array(dy, "tanh_backward", "dy", shape=y.shape)
    dx = output(dx, y.shape, "tanh_backward", "dx", stream=stream)
    _tanh_backward_kernel[blocks_for(y.size), THREADS_PER_BLOCK, stream](
        y.reshape(y.size), dy.reshape(dy.size), dx.reshape(dx.size)
    )
    return dx
