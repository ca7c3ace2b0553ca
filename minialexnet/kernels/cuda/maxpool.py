"""Overlapping max pooling (§3.4) on the GPU: twin of ``kernels/cpu/maxpool.py``.

Same contract as the CPU kernels: ``y`` (N, C, OH, OW) is the max of each
``kernel_size x kernel_size`` window (stride ``stride``, optional ``padding`` ``(top, left,
bottom, right)`` whose positions never win, as if -inf), ``argmax`` (same shape, uint8 for
windows up to 16x16: ``argmax_dtype``) the winner's position ``i * kernel_size + j`` in its
window; ties go to the first maximum in row-major window order, and a NaN wins over any
number (so divergence shows).

Thread mappings (one thread per output element, no atomics):

- forward: one thread per output ``(n, c, oh, ow)`` scans its window.
- backward: a *gather*, one thread per input ``(n, c, h, w)``. With overlapping windows
  (3x3, stride 2) an input can win up to four windows, so a scatter "dx[argmax] += dy" from
  the outputs would race. Instead each input thread visits the few windows that cover it
  (``oh*stride <= h + top < oh*stride + kernel``) and adds ``dy`` where that window's argmax is
  its own position in the window, ``(h + top - oh*stride) * kernel + (w + left - ow*stride)``.
"""

from __future__ import annotations

import numpy as np
from numba import cuda

from minialexnet.checks import check_positive_int
from minialexnet.kernels.cuda._launch import (
    THREADS_PER_BLOCK,
    blocks_for,
    check_device_array,
    output,
)
from minialexnet.kernels.numpy.maxpool import argmax_dtype
from minialexnet.shapes import conv_output_size


@cuda.jit
def _maxpool_forward_kernel(x, kernel_size, stride, top, left, y, argmax):
    """x: (P, H, W) planes; y, argmax: (P, OH, OW). Thread t -> y.flat[t].

    The window starts at row ``oh * stride - top``, column ``ow * stride - left``; its
    positions outside the plane (padding) are skipped."""
    t = cuda.grid(1)
    planes, out_h, out_w = y.shape
    if t >= planes * out_h * out_w:
        return
    ow = t % out_w
    oh = (t // out_w) % out_h
    q = t // (out_w * out_h)
    height, width = x.shape[1], x.shape[2]
    row_first = max(oh * stride - top, 0)
    row_stop = min(oh * stride - top + kernel_size, height)
    col_first = max(ow * stride - left, 0)
    col_stop = min(ow * stride - left + kernel_size, width)
    row_corner, col_corner = oh * stride - top, ow * stride - left  # the window's (0, 0)
    best = x[q, row_first, col_first]
    best_at = (row_first - row_corner) * kernel_size + col_first - col_corner
    for row in range(row_first, row_stop):  # row-major window order
        for col in range(col_first, col_stop):
            v = x[q, row, col]
            # Strictly greater keeps the first of equal maxima; v != v tests for NaN.
            if v > best or (v != v and best == best):
                best = v
                best_at = (row - row_corner) * kernel_size + col - col_corner
    y[q, oh, ow] = best
    argmax[q, oh, ow] = best_at


@cuda.jit
def _maxpool_backward_kernel(dy, argmax, kernel_size, stride, top, left, dx):
    """dy, argmax: (P, OH, OW); dx: (P, H, W). Thread t -> dx.flat[t] (gather)."""
    t = cuda.grid(1)
    planes, height, width = dx.shape
    if t >= planes * height * width:
        return
    w = t % width
    h = (t // width) % height
    q = t // (width * height)
    out_h, out_w = dy.shape[1], dy.shape[2]
    # Windows covering row h (row h + top of the padded plane):
    # oh*stride <= h + top <= oh*stride + kernel - 1.
    oh_first = max(0, (h + top - kernel_size + stride) // stride)
    oh_last = min(out_h - 1, (h + top) // stride)
    ow_first = max(0, (w + left - kernel_size + stride) // stride)
    ow_last = min(out_w - 1, (w + left) // stride)
    total = np.float32(0.0)
    for oh in range(oh_first, oh_last + 1):
        for ow in range(ow_first, ow_last + 1):
            # This input's position in window (oh, ow): the winner there if argmax says so.
            me = (h + top - oh * stride) * kernel_size + w + left - ow * stride
            if argmax[q, oh, ow] == me:
                total += dy[q, oh, ow]
    dx[q, h, w] = total


def _check_padding(padding, kernel_size: int) -> tuple:
    """``(top, left, bottom, right)`` as ints in ``0 .. kernel_size - 1``."""
    pads = tuple(padding)
    if len(pads) != 4 or any(int(p) != p or not 0 <= p < kernel_size for p in pads):
        raise ValueError(
            f"maxpool padding must be (top, left, bottom, right), each an "
            f"integer in 0..{kernel_size - 1} (smaller than the window), got "
            f"{padding!r}"
        )
    return tuple(int(p) for p in pads)


def maxpool_forward(
    x, kernel_size: int, stride: int, y=None, argmax=None, stream=0, padding=(0, 0, 0, 0)
):
    """Max over each window (§3.4) on the GPU. Returns ``(y, argmax)``.

    x : float32 device array (N, C, H, W)
    y : optional float32 device array (N, C, OH, OW),
        ``OH = (H + top + bottom - kernel_size) // stride + 1``
    argmax : optional device array (N, C, OH, OW) of ``argmax_dtype(kernel_size)``: each
        winner's position ``i * kernel_size + j`` in its window
    padding : ``(top, left, bottom, right)``, positions that never win (as if -inf)
    One thread per output element.
    """
    check_device_array(x, "maxpool_forward", "x", ndim=4)
    kernel_size = check_positive_int(kernel_size, "kernel_size")
    stride = check_positive_int(stride, "stride")
    top, left, bottom, right = _check_padding(padding, kernel_size)
    n, c, h, w = x.shape
    oh = conv_output_size(h, kernel_size, stride, (top, bottom))
    ow = conv_output_size(w, kernel_size, stride, (left, right))
    y = output(y, (n, c, oh, ow), "maxpool_forward", "y", stream=stream)
    argmax = output(
        argmax,
        (n, c, oh, ow),
        "maxpool_forward",
        "argmax",
        dtype=argmax_dtype(kernel_size),
        stream=stream,
    )
    _maxpool_forward_kernel[blocks_for(y.size), THREADS_PER_BLOCK, stream](
        x.reshape(n * c, h, w),
        kernel_size,
        stride,
        top,
        left,
        y.reshape(n * c, oh, ow),
        argmax.reshape(n * c, oh, ow),
    )
    return y, argmax


def maxpool_backward(
    dy,
    argmax,
    x_shape: tuple,
    kernel_size: int,
    stride: int,
    dx=None,
    stream=0,
    padding=(0, 0, 0, 0),
):
    """Route each output's gradient to its window's winner, on the GPU: ``dx`` (N, C, H, W).

    dy : float32 device array (N, C, OH, OW); argmax : the device array from
    :func:`maxpool_forward`; x_shape : the forward input's (N, C, H, W);
    ``kernel_size``, ``stride``, ``padding`` : the forward's window (the gather needs to know
    which windows cover an input, and where in them it sits). ``dx`` (optional)
    is overwritten. ``dx_e = sum of dy over the windows whose winner is e``; one thread per
    input.
    """
    n, c, h, w = (int(v) for v in x_shape)
    kernel_size = check_positive_int(kernel_size, "kernel_size")
    stride = check_positive_int(stride, "stride")
    top, left, bottom, right = _check_padding(padding, kernel_size)
    out_shape = (
        n,
        c,
        conv_output_size(h, kernel_size, stride, (top, bottom)),
        conv_output_size(w, kernel_size, stride, (left, right)),
    )
    check_device_array(dy, "maxpool_backward", "dy", shape=out_shape)
    check_device_array(
        argmax, "maxpool_backward", "argmax", shape=out_shape, dtype=argmax_dtype(kernel_size)
    )
    dx = output(dx, (n, c, h, w), "maxpool_backward", "dx", stream=stream)
    _, _, oh, ow = out_shape
    _maxpool_backward_kernel[blocks_for(dx.size), THREADS_PER_BLOCK, stream](
        dy.reshape(n * c, oh, ow),
        argmax.reshape(n * c, oh, ow),
        kernel_size,
        stride,
        top,
        left,
        dx.reshape(n * c, h, w),
    )
    return dx
