"""im2col / col2im compiled with Numba: the fast twins of ``kernels/numpy/im2col.py``.

Same signatures, same layout (read that file first for the idea)::

    cols has shape (C*KH*KW, N*OH*OW)
    cols[(c*KH + i)*KW + j, n*OH*OW + oh*OW + ow] = x_pad[n, c, oh*stride + i, ow*stride + j]

The whole batch sits side by side in the columns so that each group of a convolution is one
large GEMM ``W_g @ cols_g`` (done in NumPy/OpenBLAS by the layer, not here).

How the loops are parallel without races (Numba ``prange``):

- ``im2col``: one iteration per row ``r = (c, i, j)`` of ``cols``; rows are disjoint, and each
  row is written left to right (long contiguous stores: this copy is bound by memory writes).
- ``col2im``: im2col run backwards, one iteration per input channel ``c`` (and block of
  images, when there are few channels); that iteration alone writes ``dx[:, c]``, adding each
  of its rows ``(c, i, j)`` of ``cols``, read left to right, onto the pixels it was copied
  from. No two iterations touch the same output: no atomics, no conflicts. (A gather, one
  input plane at a time, reading KH*KW short runs of columns per input row, was 2-3x slower
  on conv2-conv5: benchmarks/conv_parts.py.)

Outputs are allocated in NumPy with an explicit dtype (float32 normally, float64 under
gradcheck) and passed into the jitted loops: large ``np.empty`` calls inside ``@njit`` are
several times slower (docs/numba.md, CPU). Pass ``out=`` to reuse a buffer between calls.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from minialexnet.shapes import conv_output_size

# Index arithmetic below uses unsigned integers (np.uintp) where an index is known to be
# >= 0: Numba then skips its negative-index wraparound test, which otherwise keeps LLVM from
# vectorizing the inner copy loops (measured about 2x slower on AlexNet's shapes).
_U = np.uintp


@njit(cache=True, inline="always")
def _valid_output_columns(j, stride, padding, width, out_w):
    """The range [lo, hi) of output columns ``ow`` whose input column ``ow*stride + j - padding``
    lies inside the image (0 <= w < width); the columns outside it read padding zeros."""
    lo = 0
    while lo < out_w and lo * stride + j - padding < 0:
        lo += 1
    hi = out_w
    while hi > lo and (hi - 1) * stride + j - padding >= width:
        hi -= 1
    return lo, hi


@njit(cache=True, parallel=True)
def _im2col_into(x, kernel_h, kernel_w, stride, padding, out_h, out_w, cols):
    n_images, channels, height, width = x.shape
    plane = out_h * out_w
    for r in prange(channels * kernel_h * kernel_w):
        # Row r = (c, i, j) of cols is written by this iteration alone, left to right.
        c = r // (kernel_h * kernel_w)
        i = (r // kernel_w) % kernel_h
        j = r % kernel_w
        lo, hi = _valid_output_columns(j, stride, padding, width, out_w)
        w_lo = _U(lo * stride + j - padding)  # input column read by output column lo
        for n in range(n_images):
            for oh in range(out_h):
                h = oh * stride + i - padding
                base = _U(n * plane + oh * out_w)
                if h < 0 or h >= height:  # this window row lies in the padding
                    for ow in range(_U(out_w)):
                        cols[r, base + ow] = 0
                    continue
                for ow in range(_U(lo)):  # left padding
                    cols[r, base + ow] = 0
                for k in range(_U(hi - lo)):  # inside the image
                    cols[r, base + _U(lo) + k] = x[n, c, _U(h), w_lo + k * _U(stride)]
                for ow in range(_U(hi), _U(out_w)):  # right padding
                    cols[r, base + ow] = 0


@njit(cache=True, parallel=True)
def _col2im_into(cols, kernel_h, kernel_w, stride, padding, out_h, out_w, image_blocks, dx):
    n_images, channels, height, width = dx.shape
    plane = out_h * out_w
    per_block = (n_images + image_blocks - 1) // image_blocks
    for task in prange(channels * image_blocks):
        # Task (c, block) alone writes dx[n, c] for the images n of its block.
        c = task // image_blocks
        n_lo = (task % image_blocks) * per_block
        n_hi = min(n_lo + per_block, n_images)
        for n in range(n_lo, n_hi):
            for h in range(height):
                for w in range(width):
                    dx[n, c, h, w] = 0
        # im2col's loops run backwards: each row (c, i, j) of cols is read left to right
        # and added onto the pixels it was copied from.
        for i in range(kernel_h):
            for j in range(kernel_w):
                row = cols[_U((c * kernel_h + i) * kernel_w + j)]
                lo, hi = _valid_output_columns(j, stride, padding, width, out_w)
                w_lo = _U(lo * stride + j - padding)
                for n in range(n_lo, n_hi):
                    for oh in range(out_h):
                        h = oh * stride + i - padding
                        if h < 0 or h >= height:  # this window row lies in the padding
                            continue
                        dx_row = dx[n, c, h]
                        base = _U(n * plane + oh * out_w + lo)
                        if stride == 1:  # unit steps on both sides: a vectorized add
                            for k in range(_U(hi - lo)):
                                dx_row[w_lo + k] += row[base + k]
                        else:
                            for k in range(_U(hi - lo)):
                                dx_row[w_lo + k * _U(stride)] += row[base + k]


def im2col(
    x: np.ndarray,
    kernel_h: int,
    kernel_w: int,
    stride: int,
    padding: int,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Unfold every convolution window of ``x`` into a column (Numba, parallel over rows).

    x : float32/float64 (N, C, H, W) -> cols of x's dtype, shape (C*KH*KW, N*OH*OW), with
    ``cols[(c*KH + i)*KW + j, n*OH*OW + oh*OW + ow] = x_pad[n, c, oh*stride + i, ow*stride + j]``
    (zero padding). ``out``: optional C-contiguous buffer of that shape and dtype to fill.
    Same contract as ``minialexnet.kernels.numpy.im2col.im2col``; §3.5.
    """
    x = np.ascontiguousarray(x)
    n, c, h, w = x.shape
    oh = conv_output_size(h, kernel_h, stride, padding)
    ow = conv_output_size(w, kernel_w, stride, padding)
    shape = (c * kernel_h * kernel_w, n * oh * ow)
    cols = _output_buffer(out, shape, x.dtype, "im2col")
    _im2col_into(x, kernel_h, kernel_w, stride, padding, oh, ow, cols)
    return cols


def col2im(
    cols: np.ndarray,
    x_shape: tuple,
    kernel_h: int,
    kernel_w: int,
    stride: int,
    padding: int,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Fold columns back onto the image, summing overlapping windows (Numba, per channel).

    cols : float32/float64 (C*KH*KW, N*OH*OW) laid out as ``im2col`` returns it ->
    dx (N, C, H, W) of cols' dtype, the adjoint of ``im2col``:
    ``dx[n, c, h, w] = sum cols[(c*KH + i)*KW + j, n*OH*OW + oh*OW + ow]`` over all windows
    with ``oh*stride + i - padding == h`` and ``ow*stride + j - padding == w``.
    Same contract as ``minialexnet.kernels.numpy.im2col.col2im``; §3.5.
    """
    n, c, h, w = (int(v) for v in x_shape)
    oh = conv_output_size(h, kernel_h, stride, padding)
    ow = conv_output_size(w, kernel_w, stride, padding)
    expected = (c * kernel_h * kernel_w, n * oh * ow)
    if cols.shape != expected:
        raise ValueError(
            f"col2im expects cols of shape (C*KH*KW, N*OH*OW) = {expected} for "
            f"x_shape {tuple(x_shape)}, got {cols.shape}"
        )
    cols = np.ascontiguousarray(cols)
    dx = _output_buffer(out, (n, c, h, w), cols.dtype, "col2im")
    # A few tasks per thread: per channel, and for the few channels of conv1 (3) per block
    # of images too, so both threads stay busy.
    image_blocks = max(1, min(n, -(-4 * numba.get_num_threads() // c)))
    _col2im_into(cols, kernel_h, kernel_w, stride, padding, oh, ow, image_blocks, dx)
    return dx


def _output_buffer(out, shape, dtype, who):
    """A fresh ``np.empty(shape, dtype)``, or ``out`` after checking it can take the result."""
    if out is None:
        return np.empty(shape, dtype=dtype)
    if out.shape != tuple(shape) or out.dtype != dtype or not out.flags.c_contiguous:
        raise ValueError(
            f"{who}: out must be a C-contiguous {np.dtype(dtype).name} array of "
            f"shape {tuple(shape)}, got {out.dtype.name} {out.shape}"
        )
    return out
