"""Local response normalization (§3.3), the readable NumPy reference.

The paper's formula, as printed, for the activity ``a`` of channel ``i`` at one pixel::

    b_i = a_i / (k + alpha * sum_{j = max(0, i - n/2)}^{min(N - 1, i + n/2)} a_j^2) ** beta

with ``n = size`` (odd) and ``n/2`` rounded down, so the window is ``i - size//2 .. i + size//2``
clipped at the channel edges. With ``groups = G`` the channels are split into ``G`` equal
blocks and the window is clipped at the edges of ``i``'s block instead, as each of the two
GPUs only saw its own half of the maps. Note: ``alpha`` multiplies the plain *sum*; Caffe,
cuda-convnet and ``torch.nn.LocalResponseNorm`` divide it by ``size`` (see
``minialexnet.layers.LocalResponseNorm``).

The loops run over channels (a handful of NumPy operations on whole (N, H, W) slabs each);
``minialexnet/kernels/cpu/lrn.py`` is the compiled twin with the same signatures.
"""

from __future__ import annotations

import numpy as np


def window_sum(a: np.ndarray, size: int, groups: int) -> np.ndarray:
    """Sum of ``a`` over each channel's LRN window: ``out_i = sum_{j in window(i)} a_j``.

    ``a`` is (N, C, H, W) float32/float64; the window of channel ``i`` is
    ``i - size//2 .. i + size//2`` clipped to the ``C // groups`` channels of ``i``'s group.
    The window relation is symmetric (``j in window(i)`` iff ``i in window(j)``), which is why
    the backward pass can reuse this function for its ``sum_{j: i in window(j)}``.
    Returns an array of ``a``'s shape and dtype.
    """
    n, channels, h, w = a.shape
    per_group = channels // groups
    half = size // 2
    out = np.empty(a.shape, dtype=a.dtype)
    for c in range(channels):
        group_start = (c // per_group) * per_group
        lo = max(group_start, c - half)  # clip at the group's first channel
        hi = min(group_start + per_group, c + half + 1)  # ... and its last (exclusive)
        out[:, c] = a[:, lo:hi].sum(axis=1)
    return out


def lrn_forward(
    x: np.ndarray, size: int, alpha: float, beta: float, k: float, groups: int
) -> tuple[np.ndarray, np.ndarray]:
    """Forward LRN (§3.3). Returns ``(y, scale)``, both of ``x``'s shape and dtype.

    ``x``: (N, C, H, W) float32 or float64, ``C`` divisible by ``groups``; ``size`` odd.

    ``scale_i = k + alpha * sum_{j in window(i)} x_j^2`` and ``y_i = x_i * scale_i**-beta``.
    ``scale`` is returned because the backward pass needs it.
    """
    scale = k + alpha * window_sum(x * x, size, groups)  # Python floats keep x's dtype
    y = x * scale**-beta
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
    """Backward LRN: ``dx`` of ``x``'s shape and dtype.

    ``x`` the forward's input and ``scale`` as returned by :func:`lrn_forward`; ``dy`` the
    upstream gradient. ``y`` is not needed: the layer keeps x and scale between the passes,
    not y (one array fewer: norm1 + norm2 at batch 128 hold 244 MB each), and recomputes
    ``scale**-beta``, which the formula needs anyway.
    Differentiating ``y_j = x_j * scale_j**-beta`` with ``d scale_j / d x_i = 2 alpha x_i`` for
    every ``j`` whose window holds ``i``::

        dx_i = dy_i * scale_i**-beta
               - 2 * alpha * beta * x_i * sum_{j: i in window(j)} dy_j * y_j / scale_j

    (``dy_j * y_j / scale_j`` is ``dy_j * x_j * scale_j**(-beta-1)``.)
    """
    inverse_power = scale**-beta  # scale**-beta, once for both terms
    t = dy * (x * inverse_power) / scale  # dy_j * y_j / scale_j
    return dy * inverse_power - (2.0 * alpha * beta) * x * window_sum(t, size, groups)
