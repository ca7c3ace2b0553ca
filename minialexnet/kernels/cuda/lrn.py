"""Local response normalization (§3.3) on the GPU: twin of ``kernels/cpu/lrn.py``.

The paper's formula, as printed (see ``kernels/numpy/lrn.py`` for the conventions)::

    scale_i = k + alpha * sum_{j in window(i)} x_j^2        window(i) = i - size//2 .. i + size//2,
    y_i     = x_i * scale_i ** -beta                        clipped to the channels of i's group

    dx_i = dy_i * scale_i**-beta - 2 alpha beta x_i sum_{j: i in window(j)} dy_j y_j / scale_j

Thread mapping: one thread per element ``(n, c, p)`` of the output (``p`` the pixel, so
consecutive threads read consecutive pixels of one channel plane: coalesced). Each thread sums
its ``size`` (5) window terms directly; the window relation is symmetric, so the backward
gather ``sum_{j: i in window(j)}`` runs over the same clipped window. (The CPU twin keeps a
running sum over channels instead, which needs float64 to avoid cancellation; five direct
terms in a float32 accumulator have no such problem.)
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda

from minialexnet.checks import check_positive_int
from minialexnet.kernels.cuda._launch import (
    THREADS_PER_BLOCK,
    blocks_for,
    check_device_array,
    output,
)


@cuda.jit
def _lrn_forward_kernel(x, size, alpha, beta, k, groups, y, scale):
    """x, y, scale: (N, C, P) float32; alpha, beta, k: float32. Thread t -> element t."""
    t = cuda.grid(1)
    n_images, channels, pixels = x.shape
    if t >= n_images * channels * pixels:
        return
    p = t % pixels
    c = (t // pixels) % channels
    n = t // (pixels * channels)
    per_group = channels // groups
    first = (c // per_group) * per_group  # this group's channels: first .. end-1
    lo = max(first, c - size // 2)
    hi = min(first + per_group, c + size // 2 + 1)
    total = np.float32(0.0)
    for j in range(lo, hi):
        v = x[n, j, p]
        total += v * v
    s = k + alpha * total
    scale[n, c, p] = s
    y[n, c, p] = x[n, c, p] * math.pow(s, -beta)


@cuda.jit
def _lrn_backward_kernel(x, y, scale, dy, size, two_alpha_beta, beta, groups, dx):
    """All arrays (N, C, P) float32. Thread t -> dx.flat[t] (a gather over the window)."""
    t = cuda.grid(1)
    n_images, channels, pixels = x.shape
    if t >= n_images * channels * pixels:
        return
    p = t % pixels
    c = (t // pixels) % channels
    n = t // (pixels * channels)
    per_group = channels // groups
    first = (c // per_group) * per_group
    lo = max(first, c - size // 2)
    hi = min(first + per_group, c + size // 2 + 1)
    total = np.float32(0.0)
    for j in range(lo, hi):
        total += dy[n, j, p] * y[n, j, p] / scale[n, j, p]
    dx[n, c, p] = (
        dy[n, c, p] * math.pow(scale[n, c, p], -beta) - two_alpha_beta * x[n, c, p] * total
    )


def _check(x, who: str, size: int, groups: int) -> tuple[int, int, int, int]:
    check_device_array(x, who, "x", ndim=4)
    size = check_positive_int(size, "size")
    groups = check_positive_int(groups, "groups")
    if size % 2 == 0:
        raise ValueError(f"{who}: size must be odd (a window centred on each channel), got {size}")
    if x.shape[1] % groups:
        raise ValueError(f"{who}: {x.shape[1]} channels do not split into {groups} groups")
    return x.shape


def lrn_forward(
    x, size: int, alpha: float, beta: float, k: float, groups: int, y=None, scale=None, stream=0
):
    """Forward LRN (§3.3) on the GPU. Returns ``(y, scale)``, both (N, C, H, W) float32.

    x : float32 device array (N, C, H, W), C divisible by ``groups``; ``size`` odd
    y, scale : optional float32 device arrays of x's shape to overwrite
    ``scale_i = k + alpha * sum_{j in window(i)} x_j^2`` and ``y_i = x_i * scale_i**-beta``;
    one thread per element.
    """
    n, c, h, w = _check(x, "lrn_forward", size, groups)
    y = output(y, x.shape, "lrn_forward", "y", stream=stream)
    scale = output(scale, x.shape, "lrn_forward", "scale", stream=stream)
    _lrn_forward_kernel[blocks_for(x.size), THREADS_PER_BLOCK, stream](
        x.reshape(n, c, h * w),
        size,
        np.float32(alpha),
        np.float32(beta),
        np.float32(k),
        groups,
        y.reshape(n, c, h * w),
        scale.reshape(n, c, h * w),
    )
    return y, scale


def lrn_backward(
    x, y, scale, dy, size: int, alpha: float, beta: float, groups: int, dx=None, stream=0
):
    """Backward LRN on the GPU: ``dx`` (N, C, H, W) float32.

    x, y, scale : as saved by :func:`lrn_forward`; dy : upstream gradient; all float32 device
    arrays of one shape. (The CPU twins take no ``y`` and recompute it, to hold one array
    fewer between the passes; here ``y`` lives in the layer's output buffer anyway, and
    reading it is cheaper than a ``pow`` per window element.) ``dx`` (optional) is overwritten.
    ``dx_i = dy_i * scale_i**-beta - 2 alpha beta x_i sum_{j: i in window(j)} dy_j y_j / scale_j``;
    one thread per element.
    """
    n, c, h, w = _check(x, "lrn_backward", size, groups)
    for name, a in (("y", y), ("scale", scale), ("dy", dy)):
        check_device_array(a, "lrn_backward", name, shape=x.shape)
    dx = output(dx, x.shape, "lrn_backward", "dx", stream=stream)
    planes = (n, c, h * w)
    _lrn_backward_kernel[blocks_for(x.size), THREADS_PER_BLOCK, stream](
        x.reshape(planes),
        y.reshape(planes),
        scale.reshape(planes),
        dy.reshape(planes),
        size,
        np.float32(2.0 * alpha * beta),
        np.float32(beta),
        groups,
        dx.reshape(planes),
    )
    return dx
