"""The layer protocol that every layer, the model and the tests share (docs/design.md §2)."""

from __future__ import annotations

import numpy as np


class Layer:
    """Base class: ``forward(x, train=False) -> y`` and ``backward(dy) -> dx``.

    - ``params``: dict name -> parameter array (e.g. ``{"W": ..., "b": ...}``); ``{}`` if none.
    - ``grads``: dict with the same keys, overwritten (not accumulated) by ``backward``,
      in place where the arrays of the last call still fit (``_gradient_array``): copy one
      to keep it past the next ``backward``.
    - ``backward`` uses what the last ``forward`` cached, is valid after ``train=False`` too,
      never modifies ``dy`` or the cached input, and returns an array of the input's dtype.
    - ``output_shape(input_shape)`` and ``macs(input_shape)`` describe one forward pass
      without running it (used by ``AlexNet.summary()`` and the shape traces in notebooks);
      ``input_shape`` excludes the batch axis, e.g. ``(3, 227, 227)``.
    - ``frozen``: fine-tuning keeps a pretrained layer's parameters fixed. A frozen layer's
      ``backward`` still returns ``dx`` but computes no parameter gradients (``grads`` is
      ``{}``), which saves the ``dW`` products; the optimizer skips its parameters
      (``AlexNet.freeze`` sets it; layers without parameters ignore it).
    - Layers with parameters (``Conv2D``, ``Linear``) also take ``backward(dy,
      need_dx=False)``: parameter gradients only, no ``dx`` (returns None). The network asks
      it of its lowest learning layer, whose input gradient nobody uses (conv1 in training:
      one GEMM of its three and col2im saved).
    """

    frozen: bool = False

    def __init__(self) -> None:
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self._cache = None

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        raise NotImplementedError

    def backward(self, dy: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        return self.forward(x, train=train)

    def output_shape(self, input_shape: tuple) -> tuple:
        """Shape of one example's output (no batch axis). Shape-preserving by default."""
        return tuple(input_shape)

    def macs(self, input_shape: tuple) -> int:
        """Multiply-accumulates of one example's forward pass; 0 for layers without weights."""
        return 0

    def astype(self, dtype) -> Layer:
        """Cast every parameter (and its gradient) to ``dtype`` in place; returns ``self``.

        ``minialexnet.gradcheck`` uses this to run a copy of the layer in float64.
        """
        for name in self.params:
            self.params[name] = self.params[name].astype(dtype)
        self.grads = {name: g.astype(dtype) for name, g in self.grads.items()}
        return self

    def _gradient_array(self, name: str, like: np.ndarray) -> np.ndarray:
        """The array ``backward`` writes ``grads[name]`` into: last call's, reused in place
        when it still has ``like``'s shape and dtype, else a new one.

        Why reuse: fc6's dW is 151 MB. A fresh one every step came from fresh pages, which
        the kernel faults in and zeroes (fc6's backward in a paper step at batch 32: 101 ms
        with fresh arrays, 55 ms reused, on the 2-core AMD machine), and the old gradient
        stayed alive beside the new one until ``grads`` was replaced.
        """
        grad = self.grads.get(name)
        if (
            grad is None
            or grad.shape != like.shape
            or grad.dtype != like.dtype
            or not (grad.flags.c_contiguous and grad.flags.writeable)
        ):
            grad = np.empty(like.shape, dtype=like.dtype)
        return grad

    def _cached(self):
        """The forward cache, or a clear error if ``backward`` came first."""
        if self._cache is None:
            raise RuntimeError(
                f"{type(self).__name__}.backward called before forward: run "
                f"forward(x) first, then backward(dy)"
            )
        return self._cache

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}={tuple(v.shape)}" for k, v in self.params.items())
        return f"{type(self).__name__}({shapes})"
