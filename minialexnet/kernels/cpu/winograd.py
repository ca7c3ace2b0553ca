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

Every loop is parallel (``prange``) over the planes (n, c) of the image-side array, which it
alone reads or writes: a plane's tiles are the columns n*TH*TW ... (n+1)*TH*TW - 1 of row
(g, c) of every one of the 16 Winograd-domain matrices, written by no other iteration.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from minialexnet.kernels.numpy.winograd import pad_for_tiles, tile_grid


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
    n_images, channels = x_pad.shape[:2]
    c_g = v.shape[2]
    for nc in prange(n_images * channels):
        n, c = nc // channels, nc % channels
        g, cg = c // c_g, c % c_g
        plane = x_pad[n, c]
        for r in range(th):
            for s in range(tw):
                t = (n * th + r) * tw + s
                y, x = 2 * r, 2 * s
                # B^T d: the tile's four rows combined, one column at a time ...
                c0 = _bt(plane[y, x], plane[y + 1, x], plane[y + 2, x], plane[y + 3, x])
                c1 = _bt(
                    plane[y, x + 1], plane[y + 1, x + 1], plane[y + 2, x + 1], plane[y + 3, x + 1]
                )
                c2 = _bt(
                    plane[y, x + 2], plane[y + 1, x + 2], plane[y + 2, x + 2], plane[y + 3, x + 2]
                )
                c3 = _bt(
                    plane[y, x + 3], plane[y + 1, x + 3], plane[y + 2, x + 3], plane[y + 3, x + 3]
                )
                # ... then (B^T d) B: each row combined along its four columns.
                for i in range(4):
                    row = _bt(c0[i], c1[i], c2[i], c3[i])
                    for j in range(4):
                        v[4 * i + j, g, cg, t] = row[j]


@njit(cache=True, parallel=True)
def _input_backward_into(grad_v, th, tw, grad_pad):
    n_images, channels = grad_pad.shape[:2]
    c_g = grad_v.shape[2]
    for nc in prange(n_images * channels):
        n, c = nc // channels, nc % channels
        g, cg = c // c_g, c % c_g
        plane = grad_pad[n, c]
        plane[:, :] = 0
        for r in range(th):
            for s in range(tw):
                t = (n * th + r) * tw + s
                y, x = 2 * r, 2 * s
                # B dV: the four rows of dV combined, one column at a time ...
                c0 = _b(
                    grad_v[0, g, cg, t],
                    grad_v[4, g, cg, t],
                    grad_v[8, g, cg, t],
                    grad_v[12, g, cg, t],
                )
                c1 = _b(
                    grad_v[1, g, cg, t],
                    grad_v[5, g, cg, t],
                    grad_v[9, g, cg, t],
                    grad_v[13, g, cg, t],
                )
                c2 = _b(
                    grad_v[2, g, cg, t],
                    grad_v[6, g, cg, t],
                    grad_v[10, g, cg, t],
                    grad_v[14, g, cg, t],
                )
                c3 = _b(
                    grad_v[3, g, cg, t],
                    grad_v[7, g, cg, t],
                    grad_v[11, g, cg, t],
                    grad_v[15, g, cg, t],
                )
                # ... then (B dV) B^T, added onto the 4x4 pixels the tile was read from.
                for i in range(4):
                    row = _b(c0[i], c1[i], c2[i], c3[i])
                    for j in range(4):
                        plane[y + i, x + j] += row[j]


@njit(cache=True, parallel=True)
def _output_into(m, bias, th, tw, y):
    n_images, filters, out_h, out_w = y.shape
    f_g = m.shape[2]
    for nf in prange(n_images * filters):
        n, f = nf // filters, nf % filters
        g, fg = f // f_g, f % f_g
        for r in range(th):
            for s in range(tw):
                t = (n * th + r) * tw + s
                # A^T m: the four rows of the tile combined, one column at a time ...
                c0 = _at(m[0, g, fg, t], m[4, g, fg, t], m[8, g, fg, t], m[12, g, fg, t])
                c1 = _at(m[1, g, fg, t], m[5, g, fg, t], m[9, g, fg, t], m[13, g, fg, t])
                c2 = _at(m[2, g, fg, t], m[6, g, fg, t], m[10, g, fg, t], m[14, g, fg, t])
                c3 = _at(m[3, g, fg, t], m[7, g, fg, t], m[11, g, fg, t], m[15, g, fg, t])
                # ... then (A^T m) A: a 2x2 output tile, cut off at the map's edge.
                for a in range(2):
                    row = _at(c0[a], c1[a], c2[a], c3[a])
                    for b in range(2):
                        if 2 * r + a < out_h and 2 * s + b < out_w:
                            y[n, f, 2 * r + a, 2 * s + b] = row[b] + bias[f]


@njit(cache=True, parallel=True)
def _output_backward_into(dy, th, tw, grad_m):
    n_images, filters, out_h, out_w = dy.shape
    f_g = grad_m.shape[2]
    zero = np.zeros(1, dtype=dy.dtype)[0]  # of dy's dtype, so the four values type alike
    for nf in prange(n_images * filters):
        n, f = nf // filters, nf % filters
        g, fg = f // f_g, f % f_g
        for r in range(th):
            for s in range(tw):
                t = (n * th + r) * tw + s
                y, x = 2 * r, 2 * s
                # The cut-off row/column of an odd-sized map had no output: gradient 0.
                d00 = dy[n, f, y, x]
                d01 = dy[n, f, y, x + 1] if x + 1 < out_w else zero
                d10 = dy[n, f, y + 1, x] if y + 1 < out_h else zero
                d11 = dy[n, f, y + 1, x + 1] if x + 1 < out_w and y + 1 < out_h else zero
                c0 = _a(d00, d10)  # A dY: each column of the 2x2 tile ...
                c1 = _a(d01, d11)
                for i in range(4):  # ... then (A dY) A^T along each row
                    row = _a(c0[i], c1[i])
                    for j in range(4):
                        grad_m[4 * i + j, g, fg, t] = row[j]


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
