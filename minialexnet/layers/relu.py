"""Rectified linear unit, ``f(x) = max(0, x)`` (§3.1)."""

from __future__ import annotations

import numpy as np

from minialexnet.backend import kernels
from minialexnet.checks import check_array, check_same_shape
from minialexnet.layers.base import Layer


class ReLU(Layer):
    """``y = max(0, x)`` elementwise; the paper's non-linearity after every conv and fc layer.

    §3.1: networks of ReLUs train several times faster than with saturating ``tanh``
    (Fig. 1: 25% training error on CIFAR-10 six times sooner), because the gradient does not
    vanish for large inputs.

    ``forward(x)``: ``x`` float32/float64 of any shape with the batch axis first, e.g.
    (N, C, H, W) or (N, D); ``y`` has ``x``'s shape and dtype. A NaN input stays NaN.
    ``backward(dy)``: ``dx = dy * [x > 0] = dy * [y > 0]``, ``x``'s shape and dtype. At
    ``x = 0`` exactly the derivative is taken as 0 (a valid subgradient, and what PyTorch and
    Caffe do). Computed as that product, so a non-finite ``dy`` stays non-finite even where
    ``x <= 0``. The kernels: ``minialexnet/kernels/{numpy,cpu}/relu.py``.
    """

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        check_array(x, "ReLU", ndim=None, layout="(N, ...)")
        y = kernels().relu_forward(x)
        # Backward needs only where x was positive, which is where y is positive. Keeping a
        # reference to y costs nothing extra (the next layer holds it too: LRN and the convs
        # keep their input), where a mask would be one more byte per unit (relu1 + relu2 at
        # batch 128: 61 MB).
        self._cache = y
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        y = self._cached()
        check_same_shape(dy, y.shape, "ReLU")
        return kernels().relu_backward(y, dy)
