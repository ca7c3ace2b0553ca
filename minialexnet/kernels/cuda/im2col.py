"""im2col / col2im on the GPU: twins of ``kernels/cpu/im2col.py`` (read ``kernels/numpy/`` first).

Same layout as the CPU kernels (§3.5, a convolution as one GEMM per group)::

    cols has shape (C*KH*KW, N*OH*OW)
    cols[(c*KH + i)*KW + j, n*OH*OW + oh*OW + ow] = x_pad[n, c, oh*stride + i, ow*stride + j]

Thread mappings (one thread per *output* element, so no two threads write the same address
and no atomics are needed):

- ``im2col``: one thread per element of ``cols``; consecutive threads take consecutive
  columns ``q``, so the stores are contiguous (coalesced) and the loads walk along an image
  row with step ``stride``.
- ``col2im``: a *gather*, one thread per input pixel ``(n, c, h, w)``: it visits the windows
  that cover the pixel (output rows ``oh`` with ``oh*stride <= h + padding < oh*stride + KH``,
  likewise columns) and adds the matching entry of ``cols``. A scatter (one thread per
  ``cols`` entry adding into ``dx``) would need atomic adds where windows overlap.

Both take float32 device arrays and an optional preallocated ``out`` and CUDA ``stream``.
"""
from __future__ import annotations

import numpy as np
from numba import cuda

from minialexnet.kernels.cuda._launch import (THREADS_PER_BLOCK, blocks_for,
                                              check_device_array, output)
from minialexnet.shapes import conv_output_size


@cuda.jit
def _im2col_kernel(x, kernel_h, kernel_w, stride, padding, out_h, out_w, cols):
    """x: (N, C, H, W); cols: (C*KH*KW, N*OH*OW). Thread t -> cols.flat[t]."""
    t = cuda.grid(1)
    columns = cols.shape[1]
    if t >= cols.shape[0] * columns:
        return
    r = t // columns                       # row: (c, i, j)
    q = t - r * columns                    # column: (n, oh, ow)
    j = r % kernel_w
    i = (r // kernel_w) % kernel_h
    c = r // (kernel_w * kernel_h)
    ow = q % out_w
    oh = (q // out_w) % out_h
    n = q // (out_w * out_h)
    h = oh * stride + i - padding
    w = ow * stride + j - padding
    value = np.float32(0.0)                # zero padding
    if 0 <= h < x.shape[2] and 0 <= w < x.shape[3]:
        value = x[n, c, h, w]
    cols[r, q] = value


@cuda.jit
def _col2im_kernel(cols, kernel_h, kernel_w, stride, padding, out_h, out_w, dx):
    """dx: (N, C, H, W) gathered from cols: (C*KH*KW, N*OH*OW). Thread t -> dx.flat[t]."""
    t = cuda.grid(1)
    n_images, channels, height, width = dx.shape
    if t >= n_images * channels * height * width:
        return
    w = t % width
    h = (t // width) % height
    c = (t // (width * height)) % channels
    n = t // (width * height * channels)
    hp = h + padding                       # coordinates in the padded image
    wp = w + padding
    # Windows covering row hp: oh*stride <= hp <= oh*stride + KH - 1.
    oh_first = max(0, (hp - kernel_h + stride) // stride)
    oh_last = min(out_h - 1, hp // stride)
    ow_first = max(0, (wp - kernel_w + stride) // stride)
    ow_last = min(out_w - 1, wp // stride)
    total = np.float32(0.0)
    for oh in range(oh_first, oh_last + 1):
        i = hp - oh * stride               # offset of this pixel inside window row oh
        for ow in range(ow_first, ow_last + 1):
            j = wp - ow * stride
            r = (c * kernel_h + i) * kernel_w + j
            total += cols[r, (n * out_h + oh) * out_w + ow]
    dx[n, c, h, w] = total


def im2col(x, kernel_h: int, kernel_w: int, stride: int, padding: int, out=None, stream=0):
    """Unfold every convolution window of ``x`` into a column (§3.5), on the GPU.

    x : float32 device array (N, C, H, W)
    out : optional float32 device array (C*KH*KW, N*OH*OW) to overwrite
    Returns ``cols`` (C*KH*KW, N*OH*OW) with
    ``cols[(c*KH + i)*KW + j, n*OH*OW + oh*OW + ow] = x_pad[n, c, oh*stride + i, ow*stride + j]``
    (zeros where the window reaches into the padding). One thread per element of ``cols``.
    """
    check_device_array(x, "im2col", "x", ndim=4)
    n, c, h, w = x.shape
    oh = conv_output_size(h, kernel_h, stride, padding)
    ow = conv_output_size(w, kernel_w, stride, padding)
    cols = output(out, (c * kernel_h * kernel_w, n * oh * ow), "im2col", "out", stream=stream)
    _im2col_kernel[blocks_for(cols.size), THREADS_PER_BLOCK, stream](
        x, kernel_h, kernel_w, stride, padding, oh, ow, cols)
    return cols


def col2im(cols, x_shape: tuple, kernel_h: int, kernel_w: int, stride: int, padding: int,
           out=None, stream=0):
    """Fold columns back onto the image, summing overlapping windows: the adjoint of im2col.

    cols : float32 device array (C*KH*KW, N*OH*OW) laid out as ``im2col`` returns it
    x_shape : (N, C, H, W) of the image the columns came from
    out : optional float32 device array (N, C, H, W) to overwrite
    Returns ``dx`` (N, C, H, W): ``dx[n, c, h, w] = sum cols[(c*KH + i)*KW + j,
    n*OH*OW + oh*OW + ow]`` over the windows with ``oh*stride + i - padding == h`` and
    ``ow*stride + j - padding == w`` (the gradient of §3.5's convolution w.r.t. its input).
    One thread per input pixel (a gather: no atomics).
    """
    n, c, h, w = (int(v) for v in x_shape)
    oh = conv_output_size(h, kernel_h, stride, padding)
    ow = conv_output_size(w, kernel_w, stride, padding)
    check_device_array(cols, "col2im", "cols", shape=(c * kernel_h * kernel_w, n * oh * ow))
    dx = output(out, (n, c, h, w), "col2im", "out", stream=stream)
    _col2im_kernel[blocks_for(dx.size), THREADS_PER_BLOCK, stream](
        cols, kernel_h, kernel_w, stride, padding, oh, ow, dx)
    return dx
