"""im2col / col2im: the readable reference that turns a convolution into one matrix multiply.

A convolution (§3.5) slides a ``KH x KW`` window over every channel of the padded input. im2col
copies every window into one *column* of a matrix, so that all the multiply-accumulates of the
layer become a single GEMM (``minialexnet.layers.conv``)::

    cols[r, q] = x_pad[n, c, oh*stride + i, ow*stride + j]
        r = (c*KH + i)*KW + j          row: channel, then kernel row, then kernel column
                                       (the order of W.reshape(F, C*KH*KW))
        q = n*OH*OW + oh*OW + ow       column: image, then output row, then output column

    cols has shape (C*KH*KW, N*OH*OW): the whole batch side by side, image-major.

Why this layout: the weights of one group ``W_g`` (F/G, C/G*KH*KW) then multiply *all* the
batch's windows at once, ``W_g @ cols_g`` with
``cols_g = cols.reshape(G, C/G*KH*KW, N*OH*OW)[g]`` (rows are channel-major, so the G groups
are G consecutive row blocks). One large GEMM per group keeps OpenBLAS near its peak:
batched per-image GEMMs (``cols`` as (N, C*KH*KW, OH*OW), ``W_g @ cols[n, g]`` per image)
made the forward + backward of every AlexNet conv layer 1.5-2x slower at batch 32 on the
2-core development machine. Each image's block of columns ``cols[:, n*OH*OW:(n+1)*OH*OW]``
is still contiguous along every row.

``col2im`` is the adjoint (transpose) of ``im2col``: every entry of ``cols`` is added back to
the input pixel it was copied from, so a pixel covered by several windows receives the sum of
their contributions, and padding positions are dropped. That is exactly the gradient
``dL/dx`` given ``dL/dcols``.

These functions favour clarity (one loop over the KH*KW kernel offsets, each a strided slice of
the whole batch); ``minialexnet/kernels/cpu/im2col.py`` is the fast Numba twin with the same
signatures, tested against this file.
"""

from __future__ import annotations

import numpy as np

from minialexnet.shapes import conv_output_size


def im2col(
    x: np.ndarray,
    kernel_h: int,
    kernel_w: int,
    stride: int,
    padding: int,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Unfold every convolution window of ``x`` into a column.

    Parameters
    ----------
    x : float32 or float64 array (N, C, H, W)
    kernel_h, kernel_w : window size KH, KW
    stride, padding : the same on both spatial axes; padding adds zeros on all four sides
    out : optional float array (C*KH*KW, N*OH*OW) of x's dtype to write into (reused buffer)

    Returns
    -------
    cols : array (C*KH*KW, N*OH*OW) of x's dtype, with
        ``cols[(c*KH + i)*KW + j, n*OH*OW + oh*OW + ow]
        = x_pad[n, c, oh*stride + i, ow*stride + j]``
        where ``OH = conv_output_size(H, KH, stride, padding)`` (likewise OW).
    """
    n, c, h, w = x.shape
    oh = conv_output_size(h, kernel_h, stride, padding)
    ow = conv_output_size(w, kernel_w, stride, padding)
    x_pad = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))

    cols = np.empty((c, kernel_h, kernel_w, n, oh, ow), dtype=x.dtype)
    for i in range(kernel_h):
        for j in range(kernel_w):
            # Kernel offset (i, j) of every window: rows i, i+s, ..., columns j, j+s, ...
            window_pixels = x_pad[:, :, i : i + stride * oh : stride, j : j + stride * ow : stride]
            cols[:, i, j] = window_pixels.transpose(1, 0, 2, 3)  # (N, C, ...) -> (C, N, ...)
    cols = cols.reshape(c * kernel_h * kernel_w, n * oh * ow)
    if out is None:
        return cols
    _check_out(out, cols.shape, cols.dtype, "im2col")
    out[...] = cols
    return out


def col2im(
    cols: np.ndarray,
    x_shape: tuple,
    kernel_h: int,
    kernel_w: int,
    stride: int,
    padding: int,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Fold columns back onto the image, summing overlapping windows: the adjoint of im2col.

    Parameters
    ----------
    cols : float32 or float64 array (C*KH*KW, N*OH*OW), laid out as ``im2col`` returns it
    x_shape : (N, C, H, W) of the image the columns came from
    kernel_h, kernel_w, stride, padding : as given to ``im2col``
    out : optional array (N, C, H, W) of cols' dtype to write into

    Returns
    -------
    dx : array (N, C, H, W) of cols' dtype,
        ``dx[n, c, h, w] = sum of cols[(c*KH + i)*KW + j, n*OH*OW + oh*OW + ow]``
        over all (i, j, oh, ow) with ``oh*stride + i - padding == h`` and
        ``ow*stride + j - padding == w``. ``<im2col(x), cols> == <x, col2im(cols)>``.
    """
    n, c, h, w = x_shape
    oh = conv_output_size(h, kernel_h, stride, padding)
    ow = conv_output_size(w, kernel_w, stride, padding)
    expected = (c * kernel_h * kernel_w, n * oh * ow)
    if cols.shape != expected:
        raise ValueError(
            f"col2im expects cols of shape (C*KH*KW, N*OH*OW) = {expected} for "
            f"x_shape {tuple(x_shape)}, got {cols.shape}"
        )

    windows = cols.reshape(c, kernel_h, kernel_w, n, oh, ow)
    dx_pad = np.zeros((n, c, h + 2 * padding, w + 2 * padding), dtype=cols.dtype)
    for i in range(kernel_h):
        for j in range(kernel_w):
            # Windows overlap when stride < kernel: add, never assign. Within one (i, j) the
            # slice touches each padded pixel at most once, so += on the slice is exact.
            dx_pad[:, :, i : i + stride * oh : stride, j : j + stride * ow : stride] += windows[
                :, i, j
            ].transpose(1, 0, 2, 3)
    dx = dx_pad[:, :, padding : padding + h, padding : padding + w]  # drop the padding
    if out is None:
        return np.ascontiguousarray(dx)
    _check_out(out, dx.shape, dx.dtype, "col2im")
    out[...] = dx
    return out


def _check_out(out, shape, dtype, who):
    """``out`` must be able to hold the result exactly (same shape and dtype)."""
    if out.shape != tuple(shape) or out.dtype != dtype:
        raise ValueError(
            f"{who}: out must be a {np.dtype(dtype).name} array of shape "
            f"{tuple(shape)}, got {out.dtype.name} {out.shape}"
        )
