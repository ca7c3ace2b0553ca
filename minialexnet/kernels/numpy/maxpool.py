"""Overlapping max pooling (§3.4), the readable NumPy reference.

A ``kernel_size`` x ``kernel_size`` window moves with step ``stride`` over each (n, c) plane;
AlexNet uses ``z = 3 > s = 2`` so neighbouring windows overlap by one row or
column, which the paper found to lower the error by 0.4 / 0.3 points (top-1 / top-5).

The forward pass loops over the ``kernel_size**2`` window *offsets* ``(i, j)``: for a fixed
offset, the inputs seen by all windows form one strided slice ``x[:, :, i::stride, j::stride]``,
so every step is a whole-array NumPy operation. It records where each maximum came from
(``argmax``), so the backward pass needs nothing else: it sends each output's gradient back to
that one input.

``argmax`` holds the winner's position *inside its window*, ``i * kernel_size + j``, not its
index in the plane: for AlexNet's 3x3 windows that fits one byte (``argmax_dtype``) where a
flat index needs eight, and the arrays live from forward to backward (pool1 + pool2 + pool5
at batch 128: 14 MB instead of 125 MB). The backward pass turns it back into the input pixel
``(oh * stride - top + i, ow * stride - left + j)``.

**Padding** ``(top, left, bottom, right)`` (ONNX's ``pads``; Caffe's ceil-mode pooling is
``(0, 0, 1, 1)``) adds positions around the plane that are never a window's maximum, as if
they held -inf: a window reaching past the edge takes the maximum of its pixels inside. Each
pad is smaller than the window, so every window holds at least one real pixel, and
``argmax`` always names a real input (an input of -inf still wins over the padding).
``minialexnet/kernels/cpu/maxpool.py`` is the compiled twin with the same signatures.
"""

from __future__ import annotations

import numpy as np

from minialexnet.shapes import conv_output_size


def argmax_dtype(kernel_size: int) -> np.dtype:
    """The smallest unsigned integer type that numbers the ``kernel_size**2`` positions of a
    window: uint8 up to 16x16 windows."""
    return np.min_scalar_type(kernel_size * kernel_size - 1)


def _offset_slices(out_h: int, out_w: int, i: int, j: int, stride: int):
    """Row and column slices of the inputs at offset (i, j) of every window."""
    return (
        slice(i, i + stride * (out_h - 1) + 1, stride),
        slice(j, j + stride * (out_w - 1) + 1, stride),
    )


def maxpool_forward(
    x: np.ndarray, kernel_size: int, stride: int, padding: tuple = (0, 0, 0, 0)
) -> tuple[np.ndarray, np.ndarray]:
    """Max over each window. Returns ``(y, argmax)``.

    ``x``: (N, C, H, W) float32/float64. ``padding``: ``(top, left, bottom, right)``, each
    smaller than ``kernel_size``. ``y``: (N, C, OH, OW) of ``x``'s dtype, with
    ``OH = (H + top + bottom - kernel_size) // stride + 1`` (likewise ``OW``). ``argmax``:
    (N, C, OH, OW) of ``argmax_dtype(kernel_size)``, the winner's position ``i * kernel_size
    + j`` in its window (row ``i``, column ``j`` from the window's top-left corner, padding
    included; the winner is an input pixel, never the padding).

    Ties go to the *first* maximum in row-major window order: offsets are visited row by row
    and a later one only wins if it is strictly larger. A NaN wins over any number (the first
    NaN in window order), so a diverging network shows NaN instead of hiding it.
    """
    n, c, h, w = x.shape
    top, left, bottom, right = padding
    out_h = conv_output_size(h, kernel_size, stride, (top, bottom))
    out_w = conv_output_size(w, kernel_size, stride, (left, right))
    # The padded plane, and which of its positions are real pixels.
    padded = np.zeros((n, c, h + top + bottom, w + left + right), dtype=x.dtype)
    padded[:, :, top : top + h, left : left + w] = x
    inside = np.zeros(padded.shape[2:], dtype=bool)
    inside[top : top + h, left : left + w] = True

    y = np.zeros((n, c, out_h, out_w), dtype=x.dtype)
    argmax = np.zeros((n, c, out_h, out_w), dtype=argmax_dtype(kernel_size))
    seen = np.zeros((out_h, out_w), dtype=bool)  # has the window met a real pixel yet?
    for i in range(kernel_size):  # window offsets in row-major order
        for j in range(kernel_size):
            rows, cols = _offset_slices(out_h, out_w, i, j, stride)
            candidate = padded[:, :, rows, cols]  # offset (i, j) of every window
            real = inside[rows, cols]  # ... is it a pixel or padding?
            wins = real & (~seen | (candidate > y) | (np.isnan(candidate) & ~np.isnan(y)))
            y = np.where(wins, candidate, y)
            argmax[wins] = i * kernel_size + j
            seen |= real
    return y, argmax


def maxpool_backward(
    dy: np.ndarray,
    argmax: np.ndarray,
    x_shape: tuple,
    kernel_size: int,
    stride: int,
    padding: tuple = (0, 0, 0, 0),
) -> np.ndarray:
    """Route each output's gradient to its window's winner: ``dx`` (N, C, H, W), ``dy``'s dtype.

    ``dy``: (N, C, OH, OW); ``argmax`` from :func:`maxpool_forward` with the same
    ``kernel_size``, ``stride`` and ``padding``; ``x_shape`` the forward input's shape.
    ``dx_e = sum of dy over the windows whose winner is input e``: an input that wins several
    overlapping windows receives the sum of their gradients, every other input gets 0.

    The winner of output (oh, ow) at window position ``argmax = i * kernel_size + j`` is
    input pixel ``(oh * stride - top + i, ow * stride - left + j)``. The sum is then a
    weighted histogram: give every output the global flat index of its winner and let
    ``np.bincount`` add up the ``dy`` falling in each bin. Several outputs may share a winner
    (overlapping windows), which is why a plain ``dx.ravel()[winner] += dy`` would be wrong:
    it keeps only one of the repeated additions.
    """
    n, c, h, w = x_shape
    top, left = padding[0], padding[1]
    out_h, out_w = dy.shape[2], dy.shape[3]
    i, j = np.divmod(argmax.astype(np.int64), kernel_size)
    row = np.arange(out_h, dtype=np.int64).reshape(out_h, 1) * stride - top + i
    col = np.arange(out_w, dtype=np.int64).reshape(1, out_w) * stride - left + j
    plane = np.arange(n * c, dtype=np.int64).reshape(n, c, 1, 1)
    winner = (plane * h + row) * w + col  # global flat index into dx.ravel()
    # bincount adds in float64 whatever the input; cast back to keep dy's dtype.
    dx = np.bincount(winner.ravel(), weights=dy.ravel(), minlength=n * c * h * w)
    return dx.astype(dy.dtype, copy=False).reshape(x_shape)
