"""Winograd F(2x2, 3x3) transforms: the readable reference (Lavin & Gray 2015).

The layer-level algorithm (why, and the GEMMs between these transforms) is explained in
``minialexnet/layers/winograd.py``; these four functions are its memory-bound loops::

    winograd_input           x  -> V  = B^T d B    for every 4x4 input tile d
    winograd_input_backward  dV -> dx = sum over tiles of B dV B^T, added onto the tile's pixels
    winograd_output          M  -> y  = A^T m A + b for every 4x4 tile m (2x2 output tile)
    winograd_output_backward dy -> dM = A dY A^T   for every 2x2 output-gradient tile

Layouts (T = N*TH*TW tiles, ordered image, tile row, tile column; TH = ceil(OH/2))::

    V, dV  (16, G, C/G, T)     M, dM  (16, G, F/G, T)     16 = the 4x4 Winograd domain, row-major

so that each of the 16 positions and each group is one contiguous (channels, T) matrix and
the GEMMs need no reordering: ``M = U @ V``, ``dV = U^T @ dM``, ``dU = dM @ V^T``.
Tile (th, tw) of image n reads the padded input rows 2*th .. 2*th+3 and columns
2*tw .. 2*tw+3 (tiles overlap by 2), and writes output rows 2*th, 2*th+1 and columns
2*tw, 2*tw+1, cut off at OH x OW.

Each two-sided transform ``X t Y^T`` of a row-major flattened tile is ``kron(X, Y) @ t``,
so here each is one matrix product over all tiles at once. ``minialexnet/kernels/cpu/
winograd.py`` is the Numba twin (same names and layouts, tested against this file).
"""

from __future__ import annotations

import numpy as np

from minialexnet.kernels.numpy.im2col import col2im, im2col

# The F(2x2, 3x3) matrices (Lavin & Gray, eq. 7); every entry is exact in float32.
B_T = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=np.float64)
G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], dtype=np.float64)
A_T = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=np.float64)
INPUT_TRANSFORM = np.kron(B_T, B_T)  # (16, 16): d (4x4) -> B^T d B
FILTER_TRANSFORM = np.kron(G, G)  # (16, 9):  g (3x3) -> G g G^T
OUTPUT_TRANSFORM = np.kron(A_T, A_T)  # (4, 16):  m (4x4) -> A^T m A


def tile_grid(height: int, width: int, padding: int) -> tuple[int, int, int, int]:
    """(OH, OW, TH, TW) of a 3x3 stride-1 convolution: output size and 2x2 tiles per axis."""
    out_h, out_w = height + 2 * padding - 2, width + 2 * padding - 2
    return out_h, out_w, (out_h + 1) // 2, (out_w + 1) // 2


def pad_for_tiles(x: np.ndarray, padding: int) -> np.ndarray:
    """x with ``padding`` zeros around it and, for an odd output size, one more zero row or
    column at the bottom/right: (N, C, 2*TH + 2, 2*TW + 2), covered exactly by the tiles."""
    n, c, h, w = x.shape
    _, _, th, tw = tile_grid(h, w, padding)
    x_pad = np.zeros((n, c, 2 * th + 2, 2 * tw + 2), dtype=x.dtype)
    x_pad[:, :, padding : padding + h, padding : padding + w] = x
    return x_pad


def winograd_input(x: np.ndarray, padding: int, groups: int) -> np.ndarray:
    """V = B^T d B of every 4x4 input tile: x (N, C, H, W) -> V (16, G, C/G, T), x's dtype."""
    c = x.shape[1]
    tiles = im2col(pad_for_tiles(x, padding), 4, 4, 2, 0)  # (C*16, T): 4x4, stride 2
    v = INPUT_TRANSFORM.astype(x.dtype) @ tiles.reshape(c, 16, -1)  # (C, 16, T)
    v = v.reshape(groups, c // groups, 16, -1).transpose(2, 0, 1, 3)  # (16, G, C/G, T)
    return np.ascontiguousarray(v)


def winograd_input_backward(grad_v: np.ndarray, x_shape: tuple, padding: int) -> np.ndarray:
    """dx (N, C, H, W) from dV (16, G, C/G, T): the adjoint of ``winograd_input``."""
    n, c, h, w = x_shape
    _, _, th, tw = tile_grid(h, w, padding)
    grad_v = grad_v.transpose(1, 2, 0, 3).reshape(c, 16, -1)  # (C, 16, T)
    grad_tiles = INPUT_TRANSFORM.T.astype(grad_v.dtype) @ grad_v  # B dV B^T
    grad_pad = col2im(grad_tiles.reshape(c * 16, -1), (n, c, 2 * th + 2, 2 * tw + 2), 4, 4, 2, 0)
    return np.ascontiguousarray(grad_pad[:, :, padding : padding + h, padding : padding + w])


def winograd_output(m: np.ndarray, bias: np.ndarray, n: int, out_h: int, out_w: int) -> np.ndarray:
    """y (N, F, OH, OW) = A^T m A + b from M (16, G, F/G, T), m's dtype."""
    _, groups, f_g, _ = m.shape
    th, tw = (out_h + 1) // 2, (out_w + 1) // 2
    f = groups * f_g
    m = m.reshape(16, -1)  # (16, F*T), columns (f, t)
    y_tiles = OUTPUT_TRANSFORM.astype(m.dtype) @ m  # (4, F*T), rows (a, b)
    # (a, b, F, N, TH, TW) -> (N, F, TH, a, TW, b): output pixel (2*th + a, 2*tw + b).
    y_tiles = y_tiles.reshape(2, 2, f, n, th, tw).transpose(3, 2, 4, 0, 5, 1)
    y = y_tiles.reshape(n, f, 2 * th, 2 * tw)[:, :, :out_h, :out_w]
    return (y + bias.reshape(1, f, 1, 1)).astype(m.dtype, copy=False)


def winograd_output_backward(dy: np.ndarray, groups: int) -> np.ndarray:
    """dM (16, G, F/G, T) = A dY A^T from dy (N, F, OH, OW): the adjoint of ``winograd_output``
    (without the bias, whose gradient is just the sum of dy)."""
    n, f, out_h, out_w = dy.shape
    th, tw = (out_h + 1) // 2, (out_w + 1) // 2
    dy_pad = np.zeros((n, f, 2 * th, 2 * tw), dtype=dy.dtype)  # the cut-off row/column: 0
    dy_pad[:, :, :out_h, :out_w] = dy
    dy_tiles = dy_pad.reshape(n, f, th, 2, tw, 2).transpose(3, 5, 1, 0, 2, 4).reshape(4, -1)
    grad_m = OUTPUT_TRANSFORM.T.astype(dy.dtype) @ dy_tiles  # (16, F*T), columns (f, t)
    return grad_m.reshape(16, groups, f // groups, -1)
