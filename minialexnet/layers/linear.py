"""Linear: the fully connected layer (§3.5: fc6, fc7, fc8)."""

from __future__ import annotations

import numpy as np

from minialexnet.checks import check_array, check_positive_int, check_same_shape
from minialexnet.layers.base import Layer


def _transposed_product(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``b @ a.T`` (batch, rows of a), computed as ``(a @ b.T).T``: the same numbers.

    With a small batch as the *first* (row) dimension, multi-threaded OpenBLAS sgemm splits
    the work badly: ``x @ W.T`` for fc6/fc7 at batch 32 took 2-8x longer than ``(W @ x.T).T``
    on the 2-core development machine (single-threaded the two are equally fast).
    Returns a transposed (F-ordered) view.
    """
    return np.matmul(a, b.T).T


class Linear(Layer):
    """Fully connected layer: every output is a weighted sum of every input feature.

    Shapes (float32 normally; float64 under gradcheck)::

        x (N, in_features)    W (out_features, in_features)    b (out_features,)
        y (N, out_features)

    Formula: ``y = x @ W.T + b``, i.e. ``y[n, o] = b[o] + sum_i W[o, i] * x[n, i]``.
    AlexNet's fc6 (9216 -> 4096), fc7 (4096 -> 4096) and fc8 (4096 -> 1000) hold 58.6 M of the
    61 M parameters (§3.5); fc6 reads the 256 x 6 x 6 maps of conv5 after ``Flatten``.

    Backward, with ``dy`` (N, out_features)::

        dx = dy @ W          (N, in_features)
        dW = dy.T @ x        (out_features, in_features), summed over the batch
        db = dy.sum(axis=0)

    ``rng``: numpy Generator for the initial weights, N(0, 0.01^2) as in §5 (biases 0; the
    model sets the paper's biases of 1 for fc6 and fc7).
    """

    def __init__(
        self, in_features: int, out_features: int, rng: np.random.Generator | None = None
    ) -> None:
        super().__init__()
        self.in_features = check_positive_int(in_features, "Linear in_features")
        self.out_features = check_positive_int(out_features, "Linear out_features")
        rng = rng if rng is not None else np.random.default_rng()
        self.params = {
            "W": rng.normal(0.0, 0.01, size=(self.out_features, self.in_features)).astype(
                np.float32
            ),
            "b": np.zeros(self.out_features, dtype=np.float32),
        }
        self.grads = {name: np.zeros_like(p) for name, p in self.params.items()}

    def output_shape(self, input_shape: tuple) -> tuple:
        """(out_features,) for one example of shape (in_features,)."""
        if tuple(input_shape) != (self.in_features,):
            raise ValueError(
                f"{self!r} expects one example of shape ({self.in_features},), "
                f"got {tuple(input_shape)}; put a Flatten() before it if the "
                f"input is an image-shaped (C, H, W) map"
            )
        return (self.out_features,)

    def macs(self, input_shape: tuple) -> int:
        """Multiply-accumulates per example: out_features * in_features."""
        self.output_shape(input_shape)
        return self.out_features * self.in_features

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        """y (N, out_features) of x's dtype from x (N, in_features)."""
        if isinstance(x, np.ndarray) and x.ndim != 2:
            raise ValueError(
                f"{self!r} expects a batch of vectors (N, {self.in_features}), got shape "
                f"{x.shape}; put a Flatten() layer before it to turn (N, C, H, W) maps into "
                f"(N, C*H*W) vectors"
            )
        check_array(x, "Linear", 2, f"(N, {self.in_features})")
        if x.shape[1] != self.in_features:
            raise ValueError(
                f"{self!r} expects {self.in_features} features per example, got x of shape "
                f"{x.shape}; the previous layer produces {x.shape[1]} (after Flatten that is "
                f"C*H*W of the last feature map): build Linear({x.shape[1]}, "
                f"{self.out_features}) or fix the layers before it"
            )
        weights, bias = self._weights_as(x.dtype)
        y = np.empty((x.shape[0], self.out_features), dtype=x.dtype)
        np.add(_transposed_product(weights, x), bias, out=y)  # x W^T + b
        self._cache = x
        return y

    def backward(self, dy: np.ndarray, need_dx: bool = True) -> np.ndarray | None:
        """dx (N, in_features) from dy (N, out_features); sets grads["W"] and grads["b"]
        (unless ``frozen``: then ``grads`` is ``{}``). ``need_dx=False`` (the lowest layer
        that learns: nothing below needs a gradient) skips dx and returns None."""
        x = self._cached()
        check_same_shape(dy, (x.shape[0], self.out_features), "Linear")
        check_array(dy, "Linear.backward", 2, f"(N, {self.out_features})")
        dy = dy.astype(x.dtype, copy=False)
        weights, bias = self._weights_as(x.dtype)
        if self.frozen:  # fine-tuning: no dW, db; the costly dy.T @ x is skipped
            self.grads = {}
        else:
            grad_w = np.matmul(dy.T, x, out=self._gradient_array("W", weights))
            grad_b = np.sum(dy, axis=0, out=self._gradient_array("b", bias))
            self.grads = {"W": grad_w, "b": grad_b}
        if not need_dx:
            return None
        return np.ascontiguousarray(_transposed_product(weights.T, dy))  # dy W

    def _weights_as(self, dtype) -> tuple[np.ndarray, np.ndarray]:
        """W and b in the input's dtype (a no-op in normal use, where both are float32)."""
        return (
            self.params["W"].astype(dtype, copy=False),
            self.params["b"].astype(dtype, copy=False),
        )

    def __repr__(self) -> str:
        return f"Linear({self.in_features}, {self.out_features})"
