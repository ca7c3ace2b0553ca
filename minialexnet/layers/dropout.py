"""Dropout (§4.2), in its "inverted" form."""

from __future__ import annotations

import numbers

import numpy as np

from minialexnet.checks import check_array, check_same_shape
from minialexnet.layers.base import Layer


class Dropout(Layer):
    """Zero each unit with probability ``p`` while training; identity at test time (§4.2).

    The paper sets the output of each hidden neuron of fc6 and fc7 to zero with probability
    0.5 during training and, at test time, uses all neurons but multiplies their outputs by
    0.5. Here the scaling moves to training time ("inverted dropout"):

        train:  y = x * m / (1 - p),   m_i ~ Bernoulli(1 - p) independently per element
        test:   y = x

    Why they agree: during training a unit of the paper outputs ``m_i x_i``, whose expectation
    is ``(1 - p) x_i = 0.5 x_i``, and its test-time "multiply by 0.5" reproduces exactly that
    expectation. Inverted dropout divides by ``1 - p`` during training instead, so the
    expected training output is ``x_i`` and the test network is the plain identity. The two
    schemes are equivalent in expectation, and interchangeable: the next layer's weights of
    an inverted-dropout net are ``(1 - p)`` times those of the paper's net computing the same
    function, in training and at test time. The gain: no test-time special case, and
    ``train=False`` means "no dropout" everywhere.

    ``Dropout(p=0.5, rng=None)``: ``p`` in [0, 1) (``p = 1`` would drop everything and scale
    by infinity); ``rng`` a ``numpy.random.Generator`` for the masks (default: a fresh
    unseeded one). ``forward(x, train)``: ``x`` float32/float64 of any shape with the batch
    axis first; ``y`` has its shape and dtype. The mask is drawn with ``rng.random(x.shape)``
    in float64 whatever ``x``'s dtype, so a seed gives the same mask in float32 and float64.
    ``backward(dy) = dy * m / (1 - p)`` with the mask of the last ``forward`` (after
    ``train=False`` the identity, so a network can be gradient-checked deterministically).

    ``shard``: ``None`` (the default) or ``(start, stop, global_batch)``, set by data-parallel
    training (``minialexnet.distributed``) while ``x`` holds rows ``start:stop`` of a global
    batch of ``global_batch`` examples split among processes. The layer then draws the mask
    of the whole global batch and keeps its rows, so each example gets the mask it would get
    in one process, and ``rng`` advances alike in every process.
    """

    def __init__(self, p: float = 0.5, rng: np.random.Generator | None = None) -> None:
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= float(p) < 1.0:
            raise ValueError(
                f"Dropout probability p must be a number in [0, 1), got {p!r} "
                f"(p is the fraction of units dropped; the paper uses 0.5)"
            )
        self.p = float(p)
        self.rng = rng if rng is not None else np.random.default_rng()
        self.shard: tuple[int, int, int] | None = None

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        check_array(x, "Dropout", ndim=None, layout="(N, ...)")
        if not train:
            self._cache = (None, x.shape, x.dtype)
            return x.copy()  # a copy: a caller may modify y in place
        keep = self._draw_keep(x.shape)  # P(keep) = 1 - p
        # The kept units' scale 1 / (1 - p), folded into the mask once for both passes.
        scaled_mask = keep.astype(x.dtype) * x.dtype.type(1.0 / (1.0 - self.p))
        self._cache = (scaled_mask, x.shape, x.dtype)
        return x * scaled_mask

    def _draw_keep(self, shape: tuple) -> np.ndarray:
        """The boolean keep-mask of ``shape``: this batch's, or its rows of the global one."""
        if self.shard is None:
            return self.rng.random(shape) >= self.p
        start, stop, global_batch = self.shard
        if stop - start != shape[0] or not 0 <= start < stop <= global_batch:
            raise ValueError(
                f"Dropout.shard {self.shard} does not fit a batch of {shape[0]} "
                f"rows: it must be (start, stop, global_batch) with stop - start "
                f"= {shape[0]} and 0 <= start < stop <= global_batch"
            )
        return self.rng.random((global_batch, *shape[1:]))[start:stop] >= self.p

    def backward(self, dy: np.ndarray) -> np.ndarray:
        scaled_mask, shape, dtype = self._cached()
        check_same_shape(dy, shape, "Dropout")
        if scaled_mask is None:
            return dy.astype(dtype, copy=True)
        return (dy * scaled_mask).astype(dtype, copy=False)

    def __repr__(self) -> str:
        return f"Dropout(p={self.p})"
