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

from minialexnet.kernels.cuda._launch import (
    THREADS_PER_BLOCK,
    blocks_for,
    check_device_array,
    output,
)
from minialexnet.shapes import conv_output_size

# Index arithmetic in 32 bits. Numba computes with 64-bit integers, and a 64-bit division is
# a long subroutine on a GPU (there is no hardware divider; a 32-bit one is a few
# instructions). Every index here is non-negative and below 2**32 (checked on the host), so
# the kernels take them apart as uint32, and each decomposition costs one division:
# ``q = a // b``, then ``a - q * b`` for the remainder. Numba widens the result of uint32
# arithmetic to 64 bits, so every value that is divided is cast back with ``U32(...)``
# (tests/cuda_ptx.py counts the 64-bit divisions left in the PTX: none).
U32 = np.uint32
MAX_INDEX = 2**32 - 1


@cuda.jit
def _im2col_kernel(x, kernel_h, kernel_w, stride, padding, out_h, out_w, cols):
    """x: (N, C, H, W); cols: (C*KH*KW, N*OH*OW). Thread t -> cols.flat[t]."""
    t = cuda.grid(1)
    if t >= cols.shape[0] * cols.shape[1]:
        return
    columns = U32(cols.shape[1])
    kw = U32(kernel_w)
    khw = U32(U32(kernel_h) * kw)
    ow_count = U32(out_w)
    pixels = U32(U32(out_h) * ow_count)
    t32 = U32(t)
    r = t32 // columns  # row: (c, i, j)
    q = U32(t32 - r * columns)  # column: (n, oh, ow)
    c = r // khw
    ij = U32(r - c * khw)
    i = ij // kw
    j = ij - i * kw
    n = q // pixels
    p = U32(q - n * pixels)
    oh = p // ow_count
    ow = p - oh * ow_count
    h = np.int64(oh * U32(stride) + i) - padding  # may be negative: in the padding
    w = np.int64(ow * U32(stride) + j) - padding
    value = np.float32(0.0)  # zero padding
    if 0 <= h < x.shape[2] and 0 <= w < x.shape[3]:
        value = x[n, c, h, w]
    cols[r, q] = value


@cuda.jit
def _col2im_kernel(cols, kernel_h, kernel_w, stride, padding, out_h, out_w, dx):
    """dx: (N, C, H, W) gathered from cols: (C*KH*KW, N*OH*OW). Thread t -> dx.flat[t]."""
    t = cuda.grid(1)
    if t >= dx.size:
        return
    width = U32(dx.shape[3])
    plane_size = U32(U32(dx.shape[2]) * width)
    channels = U32(dx.shape[1])
    t32 = U32(t)
    plane = t32 // plane_size
    pixel = U32(t32 - plane * plane_size)
    h = pixel // width
    w = pixel - h * width
    n = plane // channels
    c = plane - n * channels
    hp = U32(h + U32(padding))  # coordinates in the padded image
    wp = U32(w + U32(padding))
    kh, kw, step = U32(kernel_h), U32(kernel_w), U32(stride)
    # Windows covering row hp: oh*stride <= hp <= oh*stride + KH - 1, i.e. oh from
    # ceil((hp - KH + 1) / stride) (0 if hp < KH) to floor(hp / stride), within the output.
    oh_first = U32(hp - kh) // step + U32(1) if hp >= kh else U32(0)
    oh_last = min(U32(out_h) - U32(1), hp // step)
    ow_first = U32(wp - kw) // step + U32(1) if wp >= kw else U32(0)
    ow_last = min(U32(out_w) - U32(1), wp // step)
    pixels = U32(out_h) * U32(out_w)
    first_column = n * pixels
    total = np.float32(0.0)
    for oh in range(oh_first, oh_last + U32(1)):
        i = hp - oh * step  # offset of this pixel inside window row oh
        row_base = (c * kh + i) * kw
        column_base = first_column + oh * U32(out_w)
        for ow in range(ow_first, ow_last + U32(1)):
            total += cols[row_base + (wp - ow * step), column_base + ow]
    dx[n, c, h, w] = total


def _check_indices(size: int, who: str) -> None:
    """The kernels index in 32 bits: refuse arrays of 2**32 elements or more."""
    if size > MAX_INDEX:
        raise ValueError(
            f"{who}: {size:,} elements exceed the 32-bit indices of the kernel "
            f"(at most {MAX_INDEX:,}); use a smaller batch"
        )


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
    _check_indices(cols.size, "im2col")
    _im2col_kernel[blocks_for(cols.size), THREADS_PER_BLOCK, stream](
        x, kernel_h, kernel_w, stride, padding, oh, ow, cols
    )
    return cols


def col2im(
    cols,
    x_shape: tuple,
    kernel_h: int,
    kernel_w: int,
    stride: int,
    padding: int,
    out=None,
    stream=0,
):
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
    _check_indices(max(dx.size, cols.size), "col2im")
    _col2im_kernel[blocks_for(dx.size), THREADS_PER_BLOCK, stream](
        cols, kernel_h, kernel_w, stride, padding, oh, ow, dx
    )
    return dx
