"""Overlapping max pooling (§3.4), the readable NumPy reference.

A ``kernel_size`` x ``kernel_size`` window moves with step ``stride`` over each (n, c) plane,
without padding; AlexNet uses ``z = 3 > s = 2`` so neighbouring windows overlap by one row or
column, which the paper found to lower the error by 0.4 / 0.3 points (top-1 / top-5).

The forward pass loops over the ``kernel_size**2`` window *offsets* ``(i, j)``: for a fixed
offset, the inputs seen by all windows form one strided slice ``x[:, :, i::stride, j::stride]``,
so every step is a whole-array NumPy operation. It records where each maximum came from
(``argmax``), so the backward pass needs nothing else: it sends each output's gradient back to
that one input.
``minialexnet/kernels/cpu/maxpool.py`` is the compiled twin with the same signatures.
"""
from __future__ import annotations

import numpy as np

from minialexnet.shapes import conv_output_size


def _offset_slices(out_h: int, out_w: int, i: int, j: int, stride: int):
    """Row and column slices of the inputs at offset (i, j) of every window."""
    return (slice(i, i + stride * (out_h - 1) + 1, stride),
            slice(j, j + stride * (out_w - 1) + 1, stride))


def maxpool_forward(x: np.ndarray, kernel_size: int, stride: int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Max over each window. Returns ``(y, argmax)``.

    ``x``: (N, C, H, W) float32/float64. ``y``: (N, C, OH, OW) of ``x``'s dtype, with
    ``OH = (H - kernel_size) // stride + 1`` (likewise ``OW``). ``argmax``: int64
    (N, C, OH, OW), the flat index ``h * W + w`` of the winner inside its (n, c) plane.

    Ties go to the *first* maximum in row-major window order: offsets are visited row by row
    and a later one only wins if it is strictly larger. A NaN wins over any number (the first
    NaN in window order), so a diverging network shows NaN instead of hiding it.
    """
    n, c, h, w = x.shape
    out_h = conv_output_size(h, kernel_size, stride)
    out_w = conv_output_size(w, kernel_size, stride)
    # Flat index of each window's top-left input: (oh * stride) * W + ow * stride.
    corner = (np.arange(out_h, dtype=np.int64)[:, None] * stride * w
              + np.arange(out_w, dtype=np.int64)[None, :] * stride)

    y = argmax = None
    for i in range(kernel_size):            # window offsets in row-major order
        for j in range(kernel_size):
            rows, cols = _offset_slices(out_h, out_w, i, j, stride)
            candidate = x[:, :, rows, cols]           # offset (i, j) of every window
            where = corner + (i * w + j)              # ... and its flat index in the plane
            if y is None:
                y = candidate.copy()
                argmax = np.broadcast_to(where, y.shape).copy()
                continue
            wins = (candidate > y) | (np.isnan(candidate) & ~np.isnan(y))
            y = np.where(wins, candidate, y)
            argmax = np.where(wins, where, argmax)
    return y, argmax


def maxpool_backward(dy: np.ndarray, argmax: np.ndarray, x_shape: tuple) -> np.ndarray:
    """Route each output's gradient to its window's winner: ``dx`` (N, C, H, W), ``dy``'s dtype.

    ``dy``: (N, C, OH, OW); ``argmax`` from :func:`maxpool_forward`; ``x_shape`` the forward
    input's shape. ``dx_e = sum of dy over the windows whose winner is input e``: an input
    that wins several overlapping windows receives the sum of their gradients, every other
    input gets 0.

    That sum is a weighted histogram: give every output the global flat index of its winner
    (plane number * H * W + ``argmax``) and let ``np.bincount`` add up the ``dy`` falling in
    each bin. Several outputs may share a winner (overlapping windows), which is why a plain
    ``dx.ravel()[winner] += dy`` would be wrong: it keeps only one of the repeated additions.
    """
    n, c, h, w = x_shape
    plane = np.arange(n * c, dtype=np.int64).reshape(n, c, 1, 1)
    winner = plane * (h * w) + argmax                  # global flat index into dx.ravel()
    # bincount adds in float64 whatever the input; cast back to keep dy's dtype.
    dx = np.bincount(winner.ravel(), weights=dy.ravel(), minlength=n * c * h * w)
    return dx.astype(dy.dtype, copy=False).reshape(x_shape)
