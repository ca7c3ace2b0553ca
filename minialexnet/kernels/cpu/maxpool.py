"""Overlapping max pooling (§3.4), compiled with Numba: twin of kernels/numpy/maxpool.py.

Same functions, signatures and results (exactly: taking a maximum involves no rounding, and
the backward pass sums at most ``ceil(kernel/stride)**2`` terms per input).

**Forward: one window at a time, with a plain ``>``.** Each output walks its k x k window
in row-major order, keeping the largest value and its position. What makes this fast or slow
is the comparison, not the loop structure:

- ``v > best`` compiles to a compare and two conditional moves; asking in the same
  comparison whether ``v`` is a NaN (so that NaN wins, as it must: a diverging network has
  to show NaN) made the whole kernel 3-4x slower. So each (n, c) plane is first scanned for
  a NaN (one vectorized pass over data that then sits in the cache for the pooling); only a
  plane holding one is pooled with the NaN-aware comparison ``_wins``. Both are the same
  loop (``_pool_plane``), compiled twice with the comparison fixed.
- Windows entirely inside the plane (all of them in AlexNet, which pads nothing) run with
  fixed bounds 0..k; only the windows that reach into the padding clip their rows and columns,
  which costs about twice as much per window.

Measured on a 2-core AMD EPYC machine, one thread, batch 32: pool1 forward 40-70 ms instead
of 125-140 ms with the previous separable two-pass kernel (row maxima first, then column
maxima, which saves comparisons but carried the NaN test in every one), pool2 28-50 ms
instead of 83-92 ms (``benchmarks/layers.py``).

**Padding** ``(top, left, bottom, right)`` (ONNX's ``pads``): a window starts ``top`` rows
above and ``left`` columns left of where it would without padding, and its rows and columns
outside the plane are skipped, which is the maximum with -inf padding. Each pad is smaller
than the window, so every window keeps at least one real pixel.

Ties go to the first maximum in row-major window order (the comparison is strict), and a
NaN wins over any number (the first NaN, in that order).

The forward pass stores, for every output, its winner's position in the window,
``i * kernel_size + j`` (``argmax``, one byte for 3x3 windows: see the NumPy twin); the
backward pass then adds each ``dy`` to ``dx`` at that pixel, with no comparisons at all.

**Parallelism.** ``prange`` runs over (n, c) planes: every window lies in one plane, so no
two iterations write the same element of ``y``, ``argmax`` or ``dx``. Outputs are allocated
here in NumPy and passed in.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from minialexnet.kernels.numpy.maxpool import argmax_dtype
from minialexnet.shapes import conv_output_size


@njit(cache=True, inline="always")
def _wins(v, best, nan_aware):
    """True if ``v`` replaces the current ``best``: strictly larger or, with ``nan_aware``,
    the first NaN.

    ``nan_aware`` is a constant at each (inlined) call site, so each caller compiles only
    one of the two tests. Bitwise ``|`` and ``&`` rather than ``or``/``and``: no
    short-circuit branches, which would mispredict often on random data.
    """
    if nan_aware:
        return (v > best) | ((v != v) & (best == best))
    return v > best


@njit(cache=True, inline="always")
def _window_max(plane, h0, w0, i_lo, i_hi, j_lo, j_hi, kernel_size, nan_aware):
    """(max, position ``i * kernel_size + j``) over rows i_lo..i_hi-1 and columns
    j_lo..j_hi-1 of the window whose top-left corner is ``plane[h0, w0]``."""
    best = plane[h0 + i_lo, w0 + j_lo]
    position = i_lo * kernel_size + j_lo
    for i in range(i_lo, i_hi):
        for j in range(j_lo, j_hi):
            v = plane[h0 + i, w0 + j]
            wins = _wins(v, best, nan_aware)
            best = v if wins else best
            position = i * kernel_size + j if wins else position
    return best, position


@njit(cache=True, inline="always")
def _pool_plane(plane, kernel_size, stride, top, left, y, argmax, nan_aware):
    """One plane: ``plane`` (H, W) -> ``y``, ``argmax`` (OH, OW)."""
    height, width = plane.shape
    out_h, out_w = y.shape
    k = kernel_size
    # Output columns [ow_lo, ow_hi) have their whole window inside the plane's width.
    ow_lo = min((left + stride - 1) // stride, out_w)
    ow_hi = max(min((width + left - k) // stride + 1, out_w), ow_lo)
    for oh in range(out_h):
        h0 = oh * stride - top  # the window's first row (negative: in the padding)
        i_lo, i_hi = max(0, -h0), min(k, height - h0)
        whole_rows = i_lo == 0 and i_hi == k
        for ow in range(out_w):
            w0 = ow * stride - left
            if whole_rows and ow_lo <= ow < ow_hi:
                best, position = _window_max(plane, h0, w0, 0, k, 0, k, k, nan_aware)
            else:
                j_lo, j_hi = max(0, -w0), min(k, width - w0)
                best, position = _window_max(plane, h0, w0, i_lo, i_hi, j_lo, j_hi, k, nan_aware)
            y[oh, ow] = best
            argmax[oh, ow] = position


@njit(cache=True)
def _has_nan(plane):
    found = False
    for v in plane.ravel():
        found |= v != v
    return found


@njit(cache=True, parallel=True)
def _maxpool_forward_kernel(x, kernel_size, stride, top, left, y, argmax):
    """x: (P, H, W) planes; y, argmax: (P, OH, OW), one plane per iteration."""
    for q in prange(x.shape[0]):
        if _has_nan(x[q]):
            _pool_plane(x[q], kernel_size, stride, top, left, y[q], argmax[q], True)
        else:
            _pool_plane(x[q], kernel_size, stride, top, left, y[q], argmax[q], False)


@njit(cache=True, parallel=True)
def _maxpool_backward_kernel(dy, argmax, stride, top, left, row_of, col_of, dx):
    """dy, argmax: (P, OH, OW); dx: (P, H, W), zeroed and filled here one plane per task.

    ``row_of[a]``, ``col_of[a]``: the row and column of window position ``a`` (a lookup
    instead of a division per output).
    """
    planes, out_h, out_w = dy.shape
    for q in prange(planes):
        dx[q, :, :] = 0.0  # zeroing in the parallel loop: one pass, warm cache
        for oh in range(out_h):
            for ow in range(out_w):
                a = argmax[q, oh, ow]
                dx[q, oh * stride - top + row_of[a], ow * stride - left + col_of[a]] += dy[
                    q, oh, ow
                ]


def maxpool_forward(
    x: np.ndarray, kernel_size: int, stride: int, padding: tuple = (0, 0, 0, 0)
) -> tuple[np.ndarray, np.ndarray]:
    """Max over each window. Returns ``(y, argmax)``.

    ``x``: (N, C, H, W) float32/float64; ``padding``: ``(top, left, bottom, right)``, each
    smaller than ``kernel_size``, positions that never win (as if -inf). ``y``: (N, C, OH, OW)
    of ``x``'s dtype with ``OH = (H + top + bottom - kernel_size) // stride + 1``;
    ``argmax``: (N, C, OH, OW) of ``argmax_dtype(kernel_size)``, the winner's position
    ``i * kernel_size + j`` in its window (a real pixel, never the padding). Ties go to the
    first maximum in row-major window order; a NaN wins over any number.
    """
    n, c, h, w = x.shape
    top, left, bottom, right = padding
    out_h = conv_output_size(h, kernel_size, stride, (top, bottom))
    out_w = conv_output_size(w, kernel_size, stride, (left, right))
    y = np.empty((n, c, out_h, out_w), dtype=x.dtype)
    argmax = np.empty((n, c, out_h, out_w), dtype=argmax_dtype(kernel_size))
    _maxpool_forward_kernel(
        np.ascontiguousarray(x).reshape(n * c, h, w),
        kernel_size,
        stride,
        top,
        left,
        y.reshape(n * c, out_h, out_w),
        argmax.reshape(n * c, out_h, out_w),
    )
    return y, argmax


def maxpool_backward(
    dy: np.ndarray,
    argmax: np.ndarray,
    x_shape: tuple,
    kernel_size: int,
    stride: int,
    padding: tuple = (0, 0, 0, 0),
) -> np.ndarray:
    """``dx`` (N, C, H, W) of ``dy``'s dtype: each input gets the sum of ``dy`` over the
    windows whose winner (``argmax``, from :func:`maxpool_forward` with the same
    ``kernel_size``, ``stride`` and ``padding``) it is, others 0.
    """
    n, c, h, w = x_shape
    out_h, out_w = dy.shape[2], dy.shape[3]
    positions = np.arange(kernel_size * kernel_size, dtype=np.int64)
    dx = np.empty((n, c, h, w), dtype=dy.dtype)
    _maxpool_backward_kernel(
        np.ascontiguousarray(dy).reshape(n * c, out_h, out_w),
        np.ascontiguousarray(argmax).reshape(n * c, out_h, out_w),
        stride,
        padding[0],
        padding[1],
        positions // kernel_size,
        positions % kernel_size,
        dx.reshape(n * c, h, w),
    )
    return dx
