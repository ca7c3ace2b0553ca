"""Winograd F(m x m, r x r) transforms compiled with Numba: twins of ``kernels/numpy/winograd.py``.

Same names, same layouts (read that file first); ``a = m + r - 1``::

    V, dV  (a*a, G, C/G, T)     M, dM  (a*a, G, F/G, T)     T = N*TH*TW tiles, t = (n, th, tw)

Each transform ``X t Y^T`` of a tile is two passes of small matrix products, the first along
the tile's columns and the second along its rows, and each pass is done for every tile of the
chunk at once: the tiles' pixels lie along a long contiguous axis t, so every inner loop is
``out[t] += coefficient * src[t]`` over all T tiles (vectorized; zero coefficients skipped,
which leaves F(2x2, 3x3)'s additions). For one input channel c::

    d[j, q, t] = x_pad[n, c, m*th + j, m*tw + q]       the a x a pixels of every tile (a gather)
    e[i, q, t] = sum_j B^T[i, j] d[j, q, t]            columns
    V[i*a + k, g, c, t] = sum_q B^T[k, q] e[i, q, t]   rows, straight into V's contiguous rows

and likewise, in the other direction, for the output (A^T) and both adjoints (B, A). Written
for F(2x2, 3x3) with hand-unrolled four-point rules, the same work ran no faster (within
10% on conv3-conv5, 2-core AMD machine, batch 32). The input side gathers (and its adjoint
scatters) d through each tile's corner index, one loop over all T tiles per pixel (j, q):
20-35% faster than loops over tile rows, whose inner loops were only TW = 7 tiles long. It
gathers from one channel of every image at a time, copied into a small zero-bordered plane
(N, m*TH + r - 1, m*TW + r - 1) that stays in the cache, instead of from a padded copy of
the whole x (and the adjoint crops its plane straight into dx): no batch-sized temporary,
and the input gradient 10-20% faster on conv3-conv5.

Every loop is parallel (``prange``) over blocks of channels c (or filters f) of the
image-side array, one block per thread so each thread allocates its small scratch (d and e,
a*a*T floats) once: channel c alone reads or writes the planes x[:, c] and row (g, c) of every
one of the a*a Winograd-domain matrices, so no two iterations touch the same memory.
"""

from __future__ import annotations

import numpy as np
from numba import get_num_threads, njit, prange

from minialexnet.kernels.numpy.winograd import (
    Transform,
    output_tiles,
    tile_grid,
    write_into,
)

# Unsigned indices where they are known to be >= 0: Numba then skips its negative-index
# wraparound test, which keeps LLVM from vectorizing the loops (as in ``im2col.py``).
_U = np.uintp


@njit(cache=True, inline="always")
def _add_scaled(out, coefficient, src, first):
    """out = coefficient * src if ``first`` else out += coefficient * src (1-D, one length)."""
    if first:
        for t in range(_U(out.size)):
            out[t] = coefficient * src[t]
    else:
        for t in range(_U(out.size)):
            out[t] += coefficient * src[t]


@njit(cache=True, inline="always")
def _combine(coefficients, src, out):
    """out = sum_j coefficients[j] * src[j]: one row from the rows of the 2-D ``src``."""
    first = True
    for j in range(coefficients.size):
        if coefficients[j] != 0:
            _add_scaled(out, coefficients[j], src[j], first)
            first = False
    if first:
        out[:] = 0


@njit(cache=True, inline="always")
def _from_domain(coefficients, domain, i, g, c, out):
    """out[col] = sum_k coefficients[k, col] * domain[i*a + k, g, c] for every column col: the
    first pass back out of the Winograd domain (row i of every tile), ``out`` (cols, T)."""
    a = coefficients.shape[0]
    for col in range(coefficients.shape[1]):
        first = True
        for k in range(a):
            if coefficients[k, col] != 0:
                _add_scaled(out[col], coefficients[k, col], domain[i * a + k, g, c], first)
                first = False
        if first:
            out[col] = 0


@njit(cache=True, inline="always")
def _block(block, blocks, count):
    """The range of ``count`` items that block ``block`` of ``blocks`` takes."""
    return range(block * count // blocks, (block + 1) * count // blocks)


@njit(cache=True, inline="always")
def _pad_channel(x, c, padding, plane):
    """plane[n, padding + h, padding + w] = x[n, c, h, w]: channel c of every image into the
    interior of a zero-bordered plane (the border is never written, so it stays zero)."""
    n_images, _, height, width = x.shape
    for n in range(n_images):
        for h in range(height):
            src, dst = x[n, c, h], plane[n, _U(padding + h)]
            for w in range(_U(width)):
                dst[_U(padding) + w] = src[w]


@njit(cache=True, parallel=True)
def _input_into(x, padding, b_t, corners, plane_shape, n_threads, v):
    channels = x.shape[1]
    a, c_g = b_t.shape[0], v.shape[2]
    tiles = corners.size
    width = plane_shape[2]
    blocks = min(channels, n_threads)
    for block in prange(blocks):
        # One channel of every image, zero-padded to the tiles' extent: small enough for the
        # cache, so the gather below reads no further than it.
        plane = np.zeros(plane_shape, dtype=x.dtype)
        flat = plane.reshape(-1)
        d = np.empty((a, a, tiles), dtype=x.dtype)  # d[j, q]: every tile's pixel (j, q)
        e = np.empty((a, a, tiles), dtype=x.dtype)  # e[i, q] = sum_j B^T[i, j] d[j, q]
        for c in _block(block, blocks, channels):
            g, cg = c // c_g, c % c_g
            _pad_channel(x, c, padding, plane)
            for j in range(a):
                for q in range(a):
                    pixels = d[j, q]
                    offset = _U(j * width + q)
                    for t in range(_U(tiles)):
                        pixels[t] = flat[corners[t] + offset]
            for i in range(a):
                _combine(b_t[i], d.reshape(a, a * tiles), e[i].reshape(a * tiles))
            for i in range(a):
                for k in range(a):
                    _combine(b_t[k], e[i], v[i * a + k, g, cg])


@njit(cache=True, parallel=True)
def _input_backward_into(grad_v, b_t, corners, plane_shape, padding, n_threads, dx):
    n_images, channels, height, width = dx.shape
    a, c_g = b_t.shape[0], grad_v.shape[2]
    tiles = corners.size
    plane_width = plane_shape[2]
    b = np.ascontiguousarray(b_t.T)
    blocks = min(channels, n_threads)
    for block in prange(blocks):
        # The gradient of one channel's zero-padded plane (as in _input_into), cropped into
        # dx[:, c] once every tile has been added onto it.
        plane = np.empty(plane_shape, dtype=dx.dtype)
        flat = plane.reshape(-1)
        e = np.empty((a, a, tiles), dtype=dx.dtype)  # e[i, q] = sum_k dV[i, k] B^T[k, q]
        d = np.empty((a, a, tiles), dtype=dx.dtype)  # d[j, q] = sum_i B[j, i] e[i, q]
        for c in _block(block, blocks, channels):
            g, cg = c // c_g, c % c_g
            for i in range(a):
                _from_domain(b_t, grad_v, i, g, cg, e[i])
            for j in range(a):
                _combine(b[j], e.reshape(a, a * tiles), d[j].reshape(a * tiles))
            # Each tile's pixels added back where they were read (tiles overlap by r - 1).
            flat[:] = 0
            for j in range(a):
                for q in range(a):
                    pixels = d[j, q]
                    offset = _U(j * plane_width + q)
                    for t in range(_U(tiles)):
                        flat[corners[t] + offset] += pixels[t]
            for n in range(n_images):
                for h in range(height):
                    src, dst = plane[n, _U(padding + h)], dx[n, c, h]
                    for w in range(_U(width)):
                        dst[w] = src[_U(padding) + w]


@njit(cache=True, parallel=True)
def _output_into(mm, a_t, bias, th, tw, n_threads, y):
    n_images, filters, out_h, out_w = y.shape
    m, a = a_t.shape
    f_g = mm.shape[2]
    tiles = n_images * th * tw
    a_ = np.ascontiguousarray(a_t.T)
    blocks = min(filters, n_threads)
    for block in prange(blocks):
        z = np.empty((a, m, tiles), dtype=y.dtype)  # z[i, jj] = sum_k M[i, k] A^T[jj, k]
        o = np.empty((m, m, tiles), dtype=y.dtype)  # o[ii, jj] = sum_i A^T[ii, i] z[i, jj]
        for f in _block(block, blocks, filters):
            g, fg = f // f_g, f % f_g
            for i in range(a):
                _from_domain(a_, mm, i, g, fg, z[i])
            for ii in range(m):
                _combine(a_t[ii], z.reshape(a, m * tiles), o[ii].reshape(m * tiles))
            # Each tile's m x m outputs, cut off at the map's edge, plus the bias.
            for ii in range(m):
                for jj in range(m):
                    pixels = o[ii, jj]
                    for n in range(n_images):
                        for r in range(th):
                            if m * r + ii < out_h:
                                row, t0 = y[n, f, _U(m * r + ii)], _U((n * th + r) * tw)
                                for s in range(_U(tw)):
                                    if m * s + jj < out_w:
                                        row[m * s + jj] = pixels[t0 + s] + bias[f]


@njit(cache=True, parallel=True)
def _output_backward_into(dy, a_t, th, tw, n_threads, grad_m):
    n_images, filters, out_h, out_w = dy.shape
    m, a = a_t.shape
    f_g = grad_m.shape[2]
    tiles = n_images * th * tw
    a_ = np.ascontiguousarray(a_t.T)
    blocks = min(filters, n_threads)
    for block in prange(blocks):
        # o[ii, jj]: every tile's output-gradient pixel (ii, jj); cut-off pixels stay 0.
        o = np.zeros((m, m, tiles), dtype=dy.dtype)
        z = np.empty((a, m, tiles), dtype=dy.dtype)  # z[i, jj] = sum_ii A[i, ii] o[ii, jj]
        for f in _block(block, blocks, filters):
            g, fg = f // f_g, f % f_g
            for ii in range(m):
                for jj in range(m):
                    pixels = o[ii, jj]
                    for n in range(n_images):
                        for r in range(th):
                            if m * r + ii < out_h:
                                row, t0 = dy[n, f, _U(m * r + ii)], _U((n * th + r) * tw)
                                for s in range(_U(tw)):
                                    if m * s + jj < out_w:
                                        pixels[t0 + s] = row[m * s + jj]
            for i in range(a):
                _combine(a_[i], o.reshape(m, m * tiles), z[i].reshape(m * tiles))
            for i in range(a):
                for k in range(a):
                    _combine(a_[k], z[i], grad_m[i * a + k, g, fg])


def winograd_input(
    x: np.ndarray, padding: int, groups: int, tf: Transform, out: np.ndarray | None = None
) -> np.ndarray:
    """V = B^T d B of every a x a input tile: x (N, C, H, W) -> V (a*a, G, C/G, T), x's dtype
    (written into ``out`` when given, as in every function here)."""
    n, c, h, w = x.shape
    plane_shape, corners = _tile_plane(n, h, w, padding, tf)
    if out is None:
        out = np.empty((tf.alpha**2, groups, c // groups, corners.size), dtype=x.dtype)
    b_t = tf.input_t.astype(x.dtype)
    x = np.ascontiguousarray(x)
    _input_into(x, padding, b_t, corners, plane_shape, get_num_threads(), out)
    return out


def _tile_plane(n: int, h: int, w: int, padding: int, tf: Transform):
    """The shape (N, m*TH + r - 1, m*TW + r - 1) of one channel of every image padded to the
    tiles' extent (as ``pad_for_tiles`` pads x), and the (T,) flat index into it of every
    tile's top-left pixel: tile t = (n, th, tw) starts at pixel (m*th, m*tw) of image n."""
    _, _, th, tw = tile_grid(h, w, padding, tf)
    plane_shape = (n, tf.m * th + tf.r - 1, tf.m * tw + tf.r - 1)
    image = np.arange(n, dtype=np.uintp)[:, None, None] * _U(plane_shape[1] * plane_shape[2])
    row = np.arange(th, dtype=np.uintp)[None, :, None] * _U(tf.m * plane_shape[2])
    column = np.arange(tw, dtype=np.uintp)[None, None, :] * _U(tf.m)
    return plane_shape, (image + row + column).reshape(-1)


def winograd_input_backward(
    grad_v: np.ndarray, x_shape: tuple, padding: int, tf: Transform, out: np.ndarray | None = None
) -> np.ndarray:
    """dx (N, C, H, W) from dV (a*a, G, C/G, T): the adjoint of ``winograd_input``."""
    n, c, h, w = (int(s) for s in x_shape)
    dtype = grad_v.dtype
    plane_shape, corners = _tile_plane(n, h, w, padding, tf)
    fits = out is not None and out.flags.c_contiguous and out.shape == (n, c, h, w)
    dx = out if fits and out.dtype == dtype else np.empty((n, c, h, w), dtype=dtype)
    b_t = tf.input_t.astype(dtype)
    _input_backward_into(
        np.ascontiguousarray(grad_v), b_t, corners, plane_shape, padding, get_num_threads(), dx
    )
    return dx if dx is out else write_into(out, dx)


def winograd_output(
    m: np.ndarray,
    bias: np.ndarray,
    n: int,
    out_h: int,
    out_w: int,
    tf: Transform,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """y (N, F, OH, OW) = A^T m A + b from M (a*a, G, F/G, T), m's dtype."""
    _, groups, f_g, _ = m.shape
    if out is None:
        out = np.empty((n, groups * f_g, out_h, out_w), dtype=m.dtype)
    th, tw = output_tiles(out_h, out_w, tf)
    a_t, bias = tf.output_t.astype(m.dtype), bias.astype(m.dtype, copy=False)
    _output_into(np.ascontiguousarray(m), a_t, bias, th, tw, get_num_threads(), out)
    return out


def winograd_output_backward(
    dy: np.ndarray, groups: int, tf: Transform, out: np.ndarray | None = None
) -> np.ndarray:
    """dM (a*a, G, F/G, T) = A dY A^T from dy (N, F, OH, OW): the adjoint of
    ``winograd_output`` (without the bias, whose gradient is just the sum of dy)."""
    n, f, out_h, out_w = dy.shape
    th, tw = output_tiles(out_h, out_w, tf)
    if out is None:
        out = np.empty((tf.alpha**2, groups, f // groups, n * th * tw), dtype=dy.dtype)
    a_t = tf.output_t.astype(dy.dtype)
    _output_backward_into(np.ascontiguousarray(dy), a_t, th, tw, get_num_threads(), out)
    return out
