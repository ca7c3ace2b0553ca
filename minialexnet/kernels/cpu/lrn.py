"""Local response normalization (§3.3), compiled with Numba: twin of kernels/numpy/lrn.py.

Same functions, same signatures, same results (to float32 rounding) as the NumPy reference;
see there and ``minialexnet.layers.LocalResponseNorm`` for the formula and its conventions.

Two tricks make this several times faster than PyTorch's CPU LRN (forward + backward in
0.02-0.26x of its time on the 2-core test machines, batch 32 and 128; see docs/numba.md):

1. **A running sum over channels.** The window sums of neighbouring channels share all but
   two terms: ``S_{i+1} = S_i + a_{i+1+size//2}^2 - a_{i-size//2}^2``. So instead of adding
   ``size`` planes per channel, we keep one (H*W,) plane of running sums and, per channel,
   add the plane entering the window and subtract the one leaving it: two passes per channel
   whatever ``size`` is. The running plane is float64 even for float32 inputs: adding and
   later subtracting a large square leaves a rounding error of about ``eps * a_max^2``, which
   in float32 would swamp the sums of small neighbours (with ``alpha=1``, ``k=0.5`` the
   scale itself would be off by 1e-3); in float64 that error is ~1e-16 of ``a_max^2``.
2. **No ``pow`` for the paper's beta = 3/4.** ``s**0.75 = r * sqrt(r)`` with ``r = sqrt(s)``:
   two square roots, which the compiler turns into vector instructions, instead of a scalar
   ``powf`` call per element (Numba has no vector ``pow`` without Intel's SVML). Any other
   beta uses ``**``.

Parallelism: ``prange`` runs over (image, group) pairs. Each task owns the channels of one
group of one image, so the tasks write disjoint parts of the outputs, and each has its own
row of the running-sum scratch buffer. All arrays, scratch included, are allocated here in
NumPy with an explicit dtype and passed in (allocating inside ``@njit`` is slower).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange


@njit(cache=True, inline="always")
def _power(s, beta):
    """``s ** beta``; for beta = 0.75 as two square roots (vectorizable, see the module doc)."""
    if beta == 0.75:
        r = math.sqrt(s)
        return r * math.sqrt(r)
    return s**beta


@njit(cache=True, parallel=True)
def _lrn_forward_kernel(x, size, alpha, beta, k, groups, y, scale, running):
    """x, y, scale: (N, C, P) with P = H*W; running: (N*groups, P) float64 scratch."""
    n_images, channels, pixels = x.shape
    per_group = channels // groups
    half = size // 2
    for task in prange(n_images * groups):
        n = task // groups
        first = (task % groups) * per_group  # this group's channels: first .. end-1
        end = first + per_group
        acc = running[task]
        acc[:] = 0.0
        # Before channel `first`, its window holds channels first .. first+half-1 (the part
        # left of it is outside the group); the loop below adds first+half as it starts.
        for c in range(first, min(first + half, end)):
            for p in range(pixels):
                v = float(x[n, c, p])
                acc[p] += v * v
        for c in range(first, end):
            entering = c + half
            if entering < end:
                for p in range(pixels):
                    v = float(x[n, entering, p])
                    acc[p] += v * v
            leaving = c - half - 1
            if leaving >= first:
                for p in range(pixels):
                    v = float(x[n, leaving, p])
                    acc[p] -= v * v
            # Two simple loops rather than one: each compiles to vector code on its own.
            for p in range(pixels):
                scale[n, c, p] = k + alpha * acc[p]  # rounded to x's dtype on store
            for p in range(pixels):
                y[n, c, p] = x[n, c, p] / _power(scale[n, c, p], beta)


@njit(cache=True, parallel=True)
def _lrn_backward_kernel(x, scale, dy, size, two_alpha_beta, beta, groups, dx, running, ring):
    """dx_i = dy_i / scale_i**beta - 2 alpha beta x_i sum_{j in window(i)} dy_j y_j / scale_j.

    The window relation is symmetric, so the same running sum as in the forward pass serves
    ``sum_{j: i in window(j)}``, here over ``t_j = dy_j y_j / scale_j``. y is not kept from
    the forward pass: ``y_j = x_j / scale_j**beta``. Each channel's ``1 / scale**beta`` and
    ``t`` are computed once, when the channel enters the window, into a ring of ``size + 1``
    planes (``ring[task, 0]``: the powers, ``ring[task, 1]``: t), and read back when it leaves
    and for its own dx: one power per element, as in the forward pass. (Recomputing t when a
    channel leaves made this kernel four times slower.) ``size + 1`` slots because a channel
    leaves in the same step as the one ``size`` channels after it enters.
    """
    n_images, channels, pixels = x.shape
    per_group = channels // groups
    half = size // 2
    slots = size + 1
    for task in prange(n_images * groups):
        n = task // groups
        first = (task % groups) * per_group
        end = first + per_group
        acc = running[task]
        acc[:] = 0.0
        inverse_power, pulled = ring[task, 0], ring[task, 1]
        for c in range(first, min(first + half, end)):
            ip, t = inverse_power[c % slots], pulled[c % slots]
            for p in range(pixels):
                ip[p] = 1.0 / _power(scale[n, c, p], beta)
            for p in range(pixels):
                t[p] = dy[n, c, p] * x[n, c, p] * ip[p] / scale[n, c, p]
                acc[p] += t[p]
        for c in range(first, end):
            entering = c + half
            if entering < end:
                ip, t = inverse_power[entering % slots], pulled[entering % slots]
                for p in range(pixels):
                    ip[p] = 1.0 / _power(scale[n, entering, p], beta)
                for p in range(pixels):
                    t[p] = dy[n, entering, p] * x[n, entering, p] * ip[p] / scale[n, entering, p]
                    acc[p] += t[p]
            leaving = c - half - 1
            if leaving >= first:
                t = pulled[leaving % slots]
                for p in range(pixels):
                    acc[p] -= t[p]
            ip = inverse_power[c % slots]
            for p in range(pixels):
                dx[n, c, p] = dy[n, c, p] * ip[p] - two_alpha_beta * x[n, c, p] * acc[p]


def _planes(a: np.ndarray) -> np.ndarray:
    """(N, C, H, W) -> C-contiguous (N, C, H*W) view (a copy only if ``a`` is not contiguous)."""
    n, c, h, w = a.shape
    return np.ascontiguousarray(a).reshape(n, c, h * w)


def lrn_forward(
    x: np.ndarray, size: int, alpha: float, beta: float, k: float, groups: int
) -> tuple[np.ndarray, np.ndarray]:
    """Forward LRN (§3.3). Returns ``(y, scale)``, both of ``x``'s shape and dtype.

    ``x``: (N, C, H, W) float32 or float64, ``C`` divisible by ``groups``; ``size`` odd.
    ``scale_i = k + alpha * sum_{j in window(i)} x_j^2``, ``y_i = x_i * scale_i**-beta``.
    """
    dtype = x.dtype.type
    n, c, h, w = x.shape
    y = np.empty(x.shape, dtype=x.dtype)
    scale = np.empty(x.shape, dtype=x.dtype)
    running = np.empty((n * groups, h * w), dtype=np.float64)
    _lrn_forward_kernel(
        _planes(x),
        size,
        float(alpha),
        dtype(beta),
        float(k),
        groups,
        _planes(y),
        _planes(scale),
        running,
    )
    return y, scale


def lrn_backward(
    x: np.ndarray,
    scale: np.ndarray,
    dy: np.ndarray,
    size: int,
    alpha: float,
    beta: float,
    groups: int,
) -> np.ndarray:
    """Backward LRN: ``dx`` of ``x``'s shape and dtype (arguments as in the NumPy twin).

    ``dx_i = dy_i * scale_i**-beta - 2 alpha beta x_i sum_{j: i in window(j)} dy_j y_j / scale_j``
    with ``y_j = x_j * scale_j**-beta``.
    """
    dtype = x.dtype.type
    n, c, h, w = x.shape
    dx = np.empty(x.shape, dtype=x.dtype)
    running = np.empty((n * groups, h * w), dtype=np.float64)
    _lrn_backward_kernel(
        _planes(x),
        _planes(scale.astype(x.dtype, copy=False)),
        _planes(dy.astype(x.dtype, copy=False)),
        size,
        float(2.0 * alpha * beta),
        dtype(beta),
        groups,
        _planes(dx),
        running,
        np.empty((n * groups, 2, size + 1, h * w), dtype=x.dtype),
    )
    return dx
