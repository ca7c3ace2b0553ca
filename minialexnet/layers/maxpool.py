"""Overlapping max pooling (§3.4)."""
from __future__ import annotations

import numpy as np

from minialexnet.backend import kernels
from minialexnet.checks import check_array, check_positive_int, check_same_shape
from minialexnet.layers.base import Layer
from minialexnet.shapes import conv_output_size


class MaxPool2D(Layer):
    """Max over ``kernel_size`` x ``kernel_size`` windows placed every ``stride`` pixels (§3.4).

    The paper's pooling is *overlapping*: windows of ``z = 3`` pixels every ``s = 2``, so
    neighbours share a row or column (``z = s = 2`` would be the traditional tiling). It
    lowered the error by 0.4 / 0.3 points (top-1 / top-5) and made the net slightly harder to
    overfit. No padding: ``OH = (H - kernel_size) // stride + 1`` (AlexNet: 55 -> 27 -> 13 -> 6).

    ``forward(x)``: ``x`` (N, C, H, W) float32/float64, H and W may differ; ``y`` (N, C, OH, OW)
    of ``x``'s dtype. ``backward(dy)``: ``dx`` (N, C, H, W) of ``x``'s dtype; each window's
    gradient goes entirely to its maximum, and an input that is the maximum of several
    overlapping windows receives the sum of their gradients.

    **Ties** (equal values in one window, common after a ReLU zeroed a region) send the
    gradient to the *first* maximum in row-major window order (top row first, left to right),
    the convention of Caffe and of PyTorch's CPU kernel. A NaN counts as the maximum, so it
    propagates. The loops are in ``minialexnet.kernels.<backend>.maxpool``.
    """

    def __init__(self, kernel_size: int = 3, stride: int = 2) -> None:
        super().__init__()
        self.kernel_size = check_positive_int(kernel_size, "MaxPool2D kernel_size")
        self.stride = check_positive_int(stride, "MaxPool2D stride")

    def output_shape(self, input_shape: tuple) -> tuple:
        """(C, OH, OW) for an input of shape (C, H, W)."""
        c, h, w = input_shape
        return (c, conv_output_size(h, self.kernel_size, self.stride),
                conv_output_size(w, self.kernel_size, self.stride))

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        check_array(x, "MaxPool2D", ndim=4, layout="(N, C, H, W)")
        if min(x.shape[2:]) < self.kernel_size:
            raise ValueError(f"MaxPool2D: a {self.kernel_size}x{self.kernel_size} window does "
                             f"not fit an input of {x.shape[2]}x{x.shape[3]} pixels (shape "
                             f"{x.shape}); use a larger input or a smaller kernel_size")
        y, argmax = kernels().maxpool_forward(x, self.kernel_size, self.stride)
        self._cache = (argmax, x.shape, x.dtype)   # the winners are all backward needs
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        argmax, x_shape, dtype = self._cached()
        check_same_shape(dy, argmax.shape, "MaxPool2D")
        return kernels().maxpool_backward(dy.astype(dtype, copy=False), argmax, x_shape)

    def __repr__(self) -> str:
        return f"MaxPool2D(kernel_size={self.kernel_size}, stride={self.stride})"
