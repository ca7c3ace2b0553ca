"""Rectified linear units (§3.1) on the GPU.

No CPU twin: the CPU layer is one NumPy expression (``np.maximum(x, 0)``).

    forward:  y = max(x, 0)                    (NaN stays NaN, so divergence shows)
    backward: dx = dy where y > 0, else 0      (y > 0 exactly where x > 0)

Arrays of any shape (treated as flat). Thread mapping: one thread per element. Passing the
same array as input and output is allowed (elementwise, each thread reads before it writes).
"""

from __future__ import annotations

import numpy as np
from numba import cuda

from minialexnet.kernels.cuda._launch import (
    THREADS_PER_BLOCK,
    blocks_for,
    check_device_array,
    output,
)


@cuda.jit
def _relu_forward_kernel(x, y):
    i = cuda.grid(1)
    if i < x.shape[0]:
        v = x[i]
        # Not max(v, 0): the GPU's fmaxf would turn a NaN into 0; this keeps NaN visible,
        # as the CPU layer's np.maximum does.
        y[i] = np.float32(0.0) if v < np.float32(0.0) else v


@cuda.jit
def _relu_backward_kernel(y, dy, dx):
    i = cuda.grid(1)
    if i < y.shape[0]:
        dx[i] = dy[i] if y[i] > np.float32(0.0) else np.float32(0.0)


def relu_forward(x, y=None, stream=0):
    """``y = max(x, 0)`` (§3.1; NaN stays NaN); x : float32 device array of any shape;
    y : optional output (may be x). One thread per element."""
    check_device_array(x, "relu_forward", "x")
    y = output(y, x.shape, "relu_forward", "y", stream=stream)
    _relu_forward_kernel[blocks_for(x.size), THREADS_PER_BLOCK, stream](
        x.reshape(x.size), y.reshape(y.size)
    )
    return y


def relu_backward(y, dy, dx=None, stream=0):
    """``dx = dy * (y > 0)`` (§3.1) from the forward *output* ``y``; all float32 device
    arrays of one shape; ``dx`` optional (may be dy). One thread per element."""
    check_device_array(y, "relu_backward", "y")
    check_device_array(dy, "relu_backward", "dy", shape=y.shape)
    dx = output(dx, y.shape, "relu_backward", "dx", stream=stream)
    _relu_backward_kernel[blocks_for(y.size), THREADS_PER_BLOCK, stream](
        y.reshape(y.size), dy.reshape(dy.size), dx.reshape(dx.size)
    )
    return dx
