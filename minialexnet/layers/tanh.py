"""Hyperbolic tangent, the saturating baseline of the paper's Fig. 1 (§3.1)."""

from __future__ import annotations

import numpy as np

from minialexnet.checks import check_array, check_same_shape
from minialexnet.layers.base import Layer


class Tanh(Layer):
    """``y = tanh(x)`` elementwise: the "standard" neuron that §3.1 compares ReLUs against.

    Fig. 1 of the paper: a four-layer convolutional network with ReLUs reaches 25% training
    error on CIFAR-10 six times faster than the same network with tanh, whose gradient
    ``1 - tanh(x)^2`` vanishes as ``|x|`` grows (the unit saturates).

    ``forward(x)``: ``x`` float32/float64 of any shape with a batch axis first; ``y`` has its
    shape and dtype. ``backward(dy)``: ``dx = dy * (1 - y^2)``, from the cached output ``y``.
    """

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        check_array(x, "Tanh", ndim=None, layout="(N, ...)")
        y = np.tanh(x)
        self._cache = y  # the derivative is cheapest from the output
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        y = self._cached()
        check_same_shape(dy, y.shape, "Tanh")
        return (dy * (1 - y * y)).astype(y.dtype, copy=False)
