"""Flatten: feature maps to vectors, between the last pooling layer and fc6 (§3.5)."""

from __future__ import annotations

import math

import numpy as np

from minialexnet.checks import check_array, check_same_shape
from minialexnet.layers.base import Layer


class Flatten(Layer):
    """Reshape (N, C, H, W) maps into (N, C*H*W) vectors; no parameters, no arithmetic.

    ``y[n, (c*H + h)*W + w] = x[n, c, h, w]`` (C order, so fc6's 9216 inputs are conv5's
    256 pooled 6 x 6 maps one after another). Backward reshapes dy (N, C*H*W) back to x's shape.
    Both directions return views when the input is contiguous (no copy), in the input's dtype.
    """

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        """y (N, C*H*W) from x (N, C, H, W)."""
        check_array(x, "Flatten", 4, "(N, C, H, W)")
        self._cache = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """dx (N, C, H, W) from dy (N, C*H*W)."""
        x_shape = self._cached()
        check_same_shape(dy, (x_shape[0], math.prod(x_shape[1:])), "Flatten")
        return dy.reshape(x_shape)

    def output_shape(self, input_shape: tuple) -> tuple:
        """(C*H*W,) for one example of shape (C, H, W)."""
        if len(input_shape) != 3:
            raise ValueError(
                f"Flatten expects one example of shape (C, H, W), got {tuple(input_shape)}"
            )
        return (math.prod(input_shape),)
