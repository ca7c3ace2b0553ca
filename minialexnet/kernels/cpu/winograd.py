"""Winograd F(2x2, 3x3) transforms compiled with Numba: twins of ``kernels/numpy/winograd.py``.

Same names, same layouts (read that file first)::

    V, dV  (16, G, C/G, T)     M, dM  (16, G, F/G, T)     T = N*TH*TW tiles, t = (n, th, tw)

Each transform is the four-point rule it is along one axis, applied to the 4 columns and then
the 4 rows of a tile (``X t Y^T``: columns by X, then rows by Y)::

    B^T (input):    (d0 - d2,  d1 + d2,  d2 - d1,  d1 - d3)
    B   (adjoint):  (v0,  v1 - v2 + v3,  v1 + v2 - v0,  -v3)
    A^T (output):   (m0 + m1 + m2,  m1 - m2 - m3)
    A   (adjoint):  (y0,  y0 + y1,  y0 - y1,  -y1)

Additions only, so these loops are bound by memory traffic: each fuses the gather, the
transform and the reorder into one pass over the data (the NumPy reference takes four).

Every loop is parallel (``prange``) over the channels c (or filters f) of the image-side
array: iteration c alone reads or writes the planes x[:, c] and row (g, c) of every one of
the 16 Winograd-domain matrices, so no two iterations touch the same memory. Within it, one
row of tiles at a time: first the transform along the columns, for every column of the row
at once (contiguous, vectorized loops; neighbouring tiles share their edge columns), then
along the rows, writing (or reading) the 16 matrices tile after tile, 16 contiguous streams.
Over (n, c) planes, one tile at a time, the same arithmetic ran 1.3-2.3x slower on
conv3-conv5 (2-core AMD machine, batch 32).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from minialexnet.kernels.numpy.winograd import pad_for_tiles, tile_grid

# Unsigned indices where they are known to be >= 0: Numba then skips its negative-index
# wraparound test, which keeps LLVM from vectorizing the loops (as in ``im2col.py``).
_U = np.uintp


@njit(cache=True, inline="always")
def _bt(d0, d1, d2, d3):
    return d0 - d2, d1 + d2, d2 - d1, d1 - d3


@njit(cache=True, inline="always")
def _b(v0, v1, v2, v3):
    return v0, v1 - v2 + v3, v1 + v2 - v0, -v3


@njit(cache=True, inline="always")
def _at(m0, m1, m2, m3):
    return m0 + m1 + m2, m1 - m2 - m3


@njit(cache=True, inline="always")
def _a(y0, y1):
    return y0, y0 + y1, y0 - y1, -y1


@njit(cache=True, parallel=True)
def _input_into(x_pad, th, tw, v):
    n_images, channels, _, width = x_pad.shape
    c_g = v.shape[2]
    for c in prange(channels):
        g, cg = c // c_g, c % c_g
        column_sums = np.empty((4, width), dtype=x_pad.dtype)  # B^T d of one row of tiles
        for n in range(n_images):
            for r in range(th):
                y = _U(2 * r)
                d0, d1, d2 = x_pad[n, c, y], x_pad[n, c, y + 1], x_pad[n, c, y + 2]
                d3 = x_pad[n, c, y + 3]
                # B^T d: the four input rows of this row of tiles combined, every column at
                # once (neighbouring tiles share their edge columns) ...
                for w in range(_U(width)):
                    e0, e1, e2, e3 = _bt(d0[w], d1[w], d2[w], d3[w])
                    column_sums[0, w], column_sums[1, w] = e0, e1
                    column_sums[2, w], column_sums[3, w] = e2, e3
                # ... then (B^T d) B along each row: four of the 16 outputs per row i, each
                # written to its own matrix, tile after tile.
                t0 = _U((n * th + r) * tw)
                for i in range(4):
                    row = column_sums[i]
                    v0, v1 = v[4 * i, g, cg], v[4 * i + 1, g, cg]
                    v2, v3 = v[4 * i + 2, g, cg], v[4 * i + 3, g, cg]
                    for s in range(_U(tw)):
                        x = 2 * s
                        e0, e1, e2, e3 = _bt(row[x], row[x + 1], row[x + 2], row[x + 3])
                        v0[t0 + s], v1[t0 + s], v2[t0 + s], v3[t0 + s] = e0, e1, e2, e3


@njit(cache=True, parallel=True)
def _input_backward_into(grad_v, th, tw, grad_pad):
    n_images, channels, _, width = grad_pad.shape
    c_g = grad_v.shape[2]
    for c in prange(channels):
        g, cg = c // c_g, c % c_g
        row_sums = np.empty((4, width), dtype=grad_pad.dtype)  # dV B^T of one row of tiles
        for n in range(n_images):
            plane = grad_pad[n, c]
            plane[:, :] = 0
            for r in range(th):
                # dV B^T: each tile's row i spread over the 4 columns it was read from
                # (neighbouring tiles add onto their shared columns) ...
                row_sums[:, :] = 0
                t0 = _U((n * th + r) * tw)
                for i in range(4):
                    v0, v1 = grad_v[4 * i, g, cg], grad_v[4 * i + 1, g, cg]
                    v2, v3 = grad_v[4 * i + 2, g, cg], grad_v[4 * i + 3, g, cg]
                    row = row_sums[i]
                    for s in range(_U(tw)):
                        e0, e1, e2, e3 = _b(v0[t0 + s], v1[t0 + s], v2[t0 + s], v3[t0 + s])
                        x = 2 * s
                        row[x] += e0
                        row[x + 1] += e1
                        row[x + 2] += e2
                        row[x + 3] += e3
                # ... then B (dV B^T): added onto the four input rows of this row of tiles.
                y = _U(2 * r)
                p0, p1, p2, p3 = plane[y], plane[y + 1], plane[y + 2], plane[y + 3]
                for w in range(_U(width)):
                    e0, e1, e2, e3 = _b(
                        row_sums[0, w], row_sums[1, w], row_sums[2, w], row_sums[3, w]
                    )
                    p0[w] += e0
                    p1[w] += e1
                    p2[w] += e2
                    p3[w] += e3


@njit(cache=True, parallel=True)
def _output_into(m, bias, th, tw, y):
    n_images, filters, out_h, out_w = y.shape
    f_g = m.shape[2]
    for f in prange(filters):
        g, fg = f // f_g, f % f_g
        outputs = np.empty((2, 2 * tw), dtype=y.dtype)  # one row of 2x2 tiles
        for n in range(n_images):
            for r in range(th):
                t0 = _U((n * th + r) * tw)
                for s in range(_U(tw)):
                    t = t0 + s
                    # A^T m: the four rows of the tile combined, one column at a time ...
                    c0 = _at(m[0, g, fg, t], m[4, g, fg, t], m[8, g, fg, t], m[12, g, fg, t])
                    c1 = _at(m[1, g, fg, t], m[5, g, fg, t], m[9, g, fg, t], m[13, g, fg, t])
                    c2 = _at(m[2, g, fg, t], m[6, g, fg, t], m[10, g, fg, t], m[14, g, fg, t])
                    c3 = _at(m[3, g, fg, t], m[7, g, fg, t], m[11, g, fg, t], m[15, g, fg, t])
                    # ... then (A^T m) A: a 2x2 output tile.
                    for a in range(2):
                        o0, o1 = _at(c0[a], c1[a], c2[a], c3[a])
                        outputs[a, 2 * s], outputs[a, 2 * s + 1] = o0, o1
                # The row of tiles, cut off at the map's edge, written out whole rows at a time.
                for a in range(2):
                    if 2 * r + a < out_h:
                        y_row, o_row = y[n, f, _U(2 * r + a)], outputs[a]
                        for w in range(_U(out_w)):
                            y_row[w] = o_row[w] + bias[f]


@njit(cache=True, parallel=True)
def _output_backward_into(dy, th, tw, grad_m):
    n_images, filters, out_h, out_w = dy.shape
    f_g = grad_m.shape[2]
    zero = np.zeros(1, dtype=dy.dtype)[0]  # of dy's dtype, so the values type alike
    for f in prange(filters):
        g, fg = f // f_g, f % f_g
        # A dY of one row of tiles; a cut-off column (odd map) had no output: gradient 0.
        column_sums = np.zeros((4, 2 * tw), dtype=dy.dtype)
        for n in range(n_images):
            for r in range(th):
                # A dY: the two output rows of this row of tiles combined, every column ...
                top = dy[n, f, _U(2 * r)]
                has_bottom = 2 * r + 1 < out_h  # else the cut-off row: gradient 0
                for w in range(_U(out_w)):
                    bottom = dy[n, f, _U(2 * r + 1), w] if has_bottom else zero
                    e0, e1, e2, e3 = _a(top[w], bottom)
                    column_sums[0, w], column_sums[1, w] = e0, e1
                    column_sums[2, w], column_sums[3, w] = e2, e3
                # ... then (A dY) A^T along each row: four of the 16 outputs per row i.
                t0 = _U((n * th + r) * tw)
                for i in range(4):
                    row = column_sums[i]
                    m0, m1 = grad_m[4 * i, g, fg], grad_m[4 * i + 1, g, fg]
                    m2, m3 = grad_m[4 * i + 2, g, fg], grad_m[4 * i + 3, g, fg]
                    for s in range(_U(tw)):
                        e0, e1, e2, e3 = _a(row[2 * s], row[2 * s + 1])
                        m0[t0 + s], m1[t0 + s], m2[t0 + s], m3[t0 + s] = e0, e1, e2, e3


def winograd_input(x: np.ndarray, padding: int, groups: int) -> np.ndarray:
    """V = B^T d B of every 4x4 input tile: x (N, C, H, W) -> V (16, G, C/G, T), x's dtype."""
    n, c, h, w = x.shape
    _, _, th, tw = tile_grid(h, w, padding)
    v = np.empty((16, groups, c // groups, n * th * tw), dtype=x.dtype)
    _input_into(pad_for_tiles(x, padding), th, tw, v)
    return v


def winograd_input_backward(grad_v: np.ndarray, x_shape: tuple, padding: int) -> np.ndarray:
    """dx (N, C, H, W) from dV (16, G, C/G, T): the adjoint of ``winograd_input``."""
    n, c, h, w = (int(s) for s in x_shape)
    _, _, th, tw = tile_grid(h, w, padding)
    grad_pad = np.empty((n, c, 2 * th + 2, 2 * tw + 2), dtype=grad_v.dtype)
    _input_backward_into(np.ascontiguousarray(grad_v), th, tw, grad_pad)
    return np.ascontiguousarray(grad_pad[:, :, padding : padding + h, padding : padding + w])


def winograd_output(m: np.ndarray, bias: np.ndarray, n: int, out_h: int, out_w: int) -> np.ndarray:
    """y (N, F, OH, OW) = A^T m A + b from M (16, G, F/G, T), m's dtype."""
    _, groups, f_g, _ = m.shape
    y = np.empty((n, groups * f_g, out_h, out_w), dtype=m.dtype)
    _output_into(
        np.ascontiguousarray(m),
        bias.astype(m.dtype, copy=False),
        (out_h + 1) // 2,
        (out_w + 1) // 2,
        y,
    )
    return y


def winograd_output_backward(dy: np.ndarray, groups: int) -> np.ndarray:
    """dM (16, G, F/G, T) = A dY A^T from dy (N, F, OH, OW): the adjoint of ``winograd_output``
    (without the bias, whose gradient is just the sum of dy)."""
    n, f, out_h, out_w = dy.shape
    th, tw = (out_h + 1) // 2, (out_w + 1) // 2
    grad_m = np.empty((16, groups, f // groups, n * th * tw), dtype=dy.dtype)
    _output_backward_into(np.ascontiguousarray(dy), th, tw, grad_m)
    return grad_m
