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
    overfit. ``OH = (H + top + bottom - kernel_size) // stride + 1`` (AlexNet, unpadded:
    55 -> 27 -> 13 -> 6).

    ``padding``: ``p`` on every side or ``(top, left, bottom, right)`` (the order of ONNX's
    ``pads``), each smaller than ``kernel_size``. Padded positions are never a maximum, as if
    they held -inf (ONNX's and PyTorch's semantics): a window reaching past the edge takes the
    maximum of its real pixels. The paper pools without padding; Caffe's ceil-mode pooling
    (BVLC AlexNet's pool5 on 224x224 inputs: 12 -> 6) is exactly ``(0, 0, 1, 1)``.

    ``forward(x)``: ``x`` (N, C, H, W) float32/float64, H and W may differ; ``y`` (N, C, OH, OW)
    of ``x``'s dtype. ``backward(dy)``: ``dx`` (N, C, H, W) of ``x``'s dtype; each window's
    gradient goes entirely to its maximum, and an input that is the maximum of several
    overlapping windows receives the sum of their gradients.

    **Ties** (equal values in one window, common after a ReLU zeroed a region) send the
    gradient to the *first* maximum in row-major window order (top row first, left to right),
    the convention of Caffe and of PyTorch's CPU kernel. A NaN counts as the maximum, so it
    propagates. The loops are in ``minialexnet.kernels.<backend>.maxpool``.
    """

    def __init__(self, kernel_size: int = 3, stride: int = 2, padding: int | tuple = 0) -> None:
        super().__init__()
        self.kernel_size = check_positive_int(kernel_size, "MaxPool2D kernel_size")
        self.stride = check_positive_int(stride, "MaxPool2D stride")
        self.padding = self._check_padding(padding)

    def _check_padding(self, padding) -> tuple:
        """``(top, left, bottom, right)`` from ``p`` or a 4-tuple, each in 0..kernel_size-1."""
        pads = tuple(padding) if isinstance(padding, (tuple, list)) else (padding,) * 4
        if len(pads) != 4:
            raise ValueError(
                f"MaxPool2D padding must be an int or (top, left, bottom, right), got {padding!r}"
            )
        pads = tuple(check_positive_int(p, "MaxPool2D padding", minimum=0) for p in pads)
        if max(pads) >= self.kernel_size:
            raise ValueError(
                f"MaxPool2D padding {pads} must be smaller than kernel_size="
                f"{self.kernel_size} on every side, or some windows would hold "
                f"only padding; use less padding or a larger window"
            )
        return pads

    def output_shape(self, input_shape: tuple) -> tuple:
        """(C, OH, OW) for an input of shape (C, H, W)."""
        c, h, w = input_shape
        top, left, bottom, right = self.padding
        return (
            c,
            conv_output_size(h, self.kernel_size, self.stride, (top, bottom)),
            conv_output_size(w, self.kernel_size, self.stride, (left, right)),
        )

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        check_array(x, "MaxPool2D", ndim=4, layout="(N, C, H, W)")
        top, left, bottom, right = self.padding
        if min(x.shape[2] + top + bottom, x.shape[3] + left + right) < self.kernel_size:
            raise ValueError(
                f"MaxPool2D: a {self.kernel_size}x{self.kernel_size} window does "
                f"not fit an input of {x.shape[2]}x{x.shape[3]} pixels (shape "
                f"{x.shape}, padding {self.padding}); use a larger input or a "
                f"smaller kernel_size"
            )
        y, argmax = kernels().maxpool_forward(x, self.kernel_size, self.stride, self.padding)
        self._cache = (argmax, x.shape, x.dtype)  # the winners are all backward needs
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        argmax, x_shape, dtype = self._cached()
        check_same_shape(dy, argmax.shape, "MaxPool2D")
        return kernels().maxpool_backward(
            dy.astype(dtype, copy=False),
            argmax,
            x_shape,
            self.kernel_size,
            self.stride,
            self.padding,
        )

    def __repr__(self) -> str:
        padding = f", padding={self.padding}" if any(self.padding) else ""
        return f"MaxPool2D(kernel_size={self.kernel_size}, stride={self.stride}{padding})"
