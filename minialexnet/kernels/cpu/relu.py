"""Rectified linear units (§3.1), compiled with Numba: twin of kernels/numpy/relu.py.

Same functions, signatures and numbers (exactly: ``max`` and a multiply by 0 or 1 round
nothing). Why compile two one-liners: NumPy runs them on one core, and its backward makes a
temporary boolean mask and then a second pass; here each is one parallel pass over the
elements (``prange``: element i writes only ``y[i]`` or ``dx[i]``).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(cache=True, parallel=True)
def _relu_forward_kernel(x, y):
    for i in prange(x.shape[0]):
        v = x[i]
        y[i] = v if not v < 0 else 0  # NaN is not < 0: it stays NaN


@njit(cache=True, parallel=True)
def _relu_backward_kernel(y, dy, dx):
    for i in prange(y.shape[0]):
        dx[i] = dy[i] * (y[i] > 0)  # dy * 0 (not a copy of 0): a NaN or inf in dy stays


def relu_forward(x: np.ndarray) -> np.ndarray:
    """``y = max(x, 0)``: x float32/float64 of any shape -> y of its shape and dtype."""
    x = np.ascontiguousarray(x)
    y = np.empty(x.shape, dtype=x.dtype)
    _relu_forward_kernel(x.reshape(-1), y.reshape(-1))
    return y


def relu_backward(y: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """``dx = dy * [y > 0]``: y (the forward output) and dy of one shape -> dx of y's dtype."""
    y = np.ascontiguousarray(y)
    dy = np.ascontiguousarray(dy, dtype=y.dtype)
    dx = np.empty(y.shape, dtype=y.dtype)
    _relu_backward_kernel(y.reshape(-1), dy.reshape(-1), dx.reshape(-1))
    return dx
