"""Winograd F(m x m, r x r) transforms: the readable reference (Lavin & Gray 2015).

The layer-level algorithm (why, and the GEMMs between these transforms) is explained in
``minialexnet/layers/winograd.py``; these four functions are its memory-bound loops. With a
``Transform`` F(m x m, r x r), tile size ``a = m + r - 1`` and its matrices ``B^T`` (a, a),
``G`` (a, r), ``A^T`` (m, a)::

    winograd_input           x  -> V  = B^T d B     for every a x a input tile d
    winograd_input_backward  dV -> dx = sum over tiles of B dV B^T, added onto the tile's pixels
    winograd_output          M  -> y  = A^T m A + b  for every a x a tile m (m x m output tile)
    winograd_output_backward dy -> dM = A dY A^T    for every m x m output-gradient tile

Layouts (T = N*TH*TW tiles, ordered image, tile row, tile column; TH = ceil(OH/m))::

    V, dV  (a*a, G, C/G, T)     M, dM  (a*a, G, F/G, T)     a*a: the Winograd domain, row-major

so that each of the a*a positions and each group is one contiguous (channels, T) matrix and
the GEMMs need no reordering: ``M = U @ V``, ``dV = U^T @ dM``, ``dU = dM @ V^T``.
Tile (th, tw) of image n reads the padded input rows m*th .. m*th + a - 1 and columns
m*tw .. m*tw + a - 1 (tiles overlap by r - 1), and writes output rows m*th .. m*th + m - 1
(likewise columns), cut off at OH x OW.

Each two-sided transform ``X t Y^T`` of a row-major flattened tile is ``kron(X, Y) @ t``,
so here each is one matrix product over all tiles at once. ``minialexnet/kernels/cpu/
winograd.py`` is the Numba twin (same names and layouts, tested against this file).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from math import prod

import numpy as np

from minialexnet.kernels.numpy.im2col import col2im, im2col
from minialexnet.shapes import conv_output_size


@dataclass(frozen=True, eq=False)
class Transform:
    """The matrices of Winograd's minimal filtering algorithm F(m x m, r x r).

    An r x r filter g slid over an a x a input tile d (a = m + r - 1) gives the m x m output
    tile ``Y = A^T [(G g G^T) * (B^T d B)] A``: a*a multiplies instead of m*m*r*r.

    input_t : B^T (a, a)    filter : G (a, r)    output_t : A^T (m, a)    (float64, exact)
    """

    name: str
    input_t: np.ndarray
    filter: np.ndarray
    output_t: np.ndarray

    @property
    def m(self) -> int:
        """Output tile size (each axis)."""
        return self.output_t.shape[0]

    @property
    def r(self) -> int:
        """Filter size (each axis)."""
        return self.filter.shape[1]

    @property
    def alpha(self) -> int:
        """Input tile size a = m + r - 1 (each axis); the Winograd domain has a*a positions."""
        return self.input_t.shape[0]

    @property
    def input_matrix(self) -> np.ndarray:
        """kron(B^T, B^T) (a*a, a*a): a row-major flattened tile d -> B^T d B."""
        return np.kron(self.input_t, self.input_t)

    @property
    def filter_matrix(self) -> np.ndarray:
        """kron(G, G) (a*a, r*r): a row-major flattened filter g -> G g G^T."""
        return np.kron(self.filter, self.filter)

    @property
    def output_matrix(self) -> np.ndarray:
        """kron(A^T, A^T) (m*m, a*a): a row-major flattened tile m -> A^T m A."""
        return np.kron(self.output_t, self.output_t)


def toom_cook(m: int, r: int, points: tuple) -> Transform:
    """F(m x m, r x r) from the a - 1 finite interpolation points ``points`` and infinity.

    The 1-D algorithm F(m, r) (Lavin & Gray §4; Toom-Cook): the correlation of a filter g with
    an input d is read off the product of two polynomials, evaluated at the points p_j, then
    interpolated back (Lagrange), with the point at infinity giving the leading coefficient::

        A^T[i, j] = p_j^i                  G[j, k] = p_j^k / prod_{l != j} (p_j - p_l)
        B^T[j]    = coefficients (ascending) of prod_{l != j} (x - p_l)

    and for infinity (the last row/column) A^T[m-1] = 1, G[r-1] = 1, B^T = the coefficients of
    prod_l (x - p_l). Computed with exact fractions. Small points (0, +-1, +-2, 1/2) keep the
    float32 rounding error small: it grows with the spread of the powers p_j^i.
    """
    points = [Fraction(p) for p in points]
    alpha = m + r - 1
    if len(points) != alpha - 1 or len(set(points)) != len(points):
        raise ValueError(f"F({m}, {r}) needs {alpha - 1} distinct finite points, got {points}")

    def coefficients(roots) -> list:
        """prod (x - root) as its alpha coefficients, lowest power first."""
        c = [Fraction(1)] + [Fraction(0)] * (alpha - 1)
        for root in roots:
            c = [(c[i - 1] if i else 0) - root * c[i] for i in range(alpha)]
        return c

    a_t = [[p**i for p in points] + [Fraction(i == m - 1)] for i in range(m)]
    g = [[p**k / prod(p - q for q in points if q != p) for k in range(r)] for p in points] + [
        [Fraction(k == r - 1) for k in range(r)]
    ]
    b_t = [coefficients([q for q in points if q != p]) for p in points] + [coefficients(points)]
    b_t, g, a_t = (np.array(rows, dtype=np.float64) for rows in (b_t, g, a_t))
    return Transform(f"F({m}x{m}, {r}x{r})", b_t, g, a_t)


#: F(2x2, 3x3) for the 3x3 layers (conv3-conv5): Lavin & Gray's matrices (eq. 7), additions
#: only in B^T and A^T; 16 multiplies per 2x2 outputs instead of 36 (2.25x fewer).
F2x2_3x3 = Transform(
    "F(2x2, 3x3)",
    input_t=np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float64),
    filter=np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], np.float64),
    output_t=np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float64),
)

#: F(4x4, 5x5) for the 5x5 layer (conv2): 64 multiplies per 4x4 outputs instead of 400 (6.25x
#: fewer; conv2's 27x27 maps take 7x7 tiles, 28x28: 5.8x in practice). Points 0, +-1, +-2,
#: +-1/2. In float32 one tile's outputs (unit normal d and g) are off by 2.5e-6 of their
#: rms, F(3x3, 5x5)'s by 2.0e-6, F(4x4, 3x3)'s by 1.0e-6 and F(2x2, 3x3)'s by 1.3e-7
#: (20,000 random tiles each). F(3x3, 5x5) fits 27x27 exactly but made conv2 1.6x slower
#: (more, smaller tiles: V and M 5.4x the maps' size instead of 4x).
F4x4_5x5 = toom_cook(4, 5, (0, 1, -1, 2, -2, 0.5, -0.5))


def tile_grid(height: int, width: int, padding: int, tf: Transform) -> tuple[int, int, int, int]:
    """(OH, OW, TH, TW) of an r x r stride-1 convolution: output size and m x m tiles per axis."""
    out_h = conv_output_size(height, tf.r, 1, padding)
    out_w = conv_output_size(width, tf.r, 1, padding)
    return (out_h, out_w, *output_tiles(out_h, out_w, tf))


def output_tiles(out_h: int, out_w: int, tf: Transform) -> tuple[int, int]:
    """(TH, TW): the m x m tiles that cover an OH x OW output (the last ones cut off)."""
    return -(-out_h // tf.m), -(-out_w // tf.m)


def pad_for_tiles(x: np.ndarray, padding: int, tf: Transform) -> np.ndarray:
    """x with ``padding`` zeros around it and, where the output is no multiple of m, more zero
    rows/columns at the bottom/right: (N, C, m*TH + r - 1, m*TW + r - 1), covered by the tiles."""
    n, c, h, w = x.shape
    _, _, th, tw = tile_grid(h, w, padding, tf)
    x_pad = np.zeros((n, c, tf.m * th + tf.r - 1, tf.m * tw + tf.r - 1), dtype=x.dtype)
    x_pad[:, :, padding : padding + h, padding : padding + w] = x
    return x_pad


def winograd_input(
    x: np.ndarray, padding: int, groups: int, tf: Transform, out: np.ndarray | None = None
) -> np.ndarray:
    """V = B^T d B of every a x a input tile: x (N, C, H, W) -> V (a*a, G, C/G, T), x's dtype
    (written into ``out`` when given, as in every function here)."""
    c, a = x.shape[1], tf.alpha
    tiles = im2col(pad_for_tiles(x, padding, tf), a, a, tf.m, 0)  # (C*a*a, T), stride m
    v = tf.input_matrix.astype(x.dtype) @ tiles.reshape(c, a * a, -1)  # (C, a*a, T)
    v = v.reshape(groups, c // groups, a * a, -1).transpose(2, 0, 1, 3)  # (a*a, G, C/G, T)
    return write_into(out, v)


def winograd_input_backward(
    grad_v: np.ndarray, x_shape: tuple, padding: int, tf: Transform, out: np.ndarray | None = None
) -> np.ndarray:
    """dx (N, C, H, W) from dV (a*a, G, C/G, T): the adjoint of ``winograd_input``."""
    n, c, h, w = x_shape
    _, _, th, tw = tile_grid(h, w, padding, tf)
    a = tf.alpha
    grad_v = grad_v.transpose(1, 2, 0, 3).reshape(c, a * a, -1)  # (C, a*a, T)
    grad_tiles = tf.input_matrix.T.astype(grad_v.dtype) @ grad_v  # B dV B^T
    padded_shape = (n, c, tf.m * th + tf.r - 1, tf.m * tw + tf.r - 1)
    grad_pad = col2im(grad_tiles.reshape(c * a * a, -1), padded_shape, a, a, tf.m, 0)
    return write_into(out, grad_pad[:, :, padding : padding + h, padding : padding + w])


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
    s = tf.m
    th, tw = output_tiles(out_h, out_w, tf)
    f = groups * f_g
    y_tiles = tf.output_matrix.astype(m.dtype) @ m.reshape(tf.alpha**2, -1)  # (s*s, F*T)
    # (i, j, F, N, TH, TW) -> (N, F, TH, i, TW, j): output pixel (s*th + i, s*tw + j).
    y_tiles = y_tiles.reshape(s, s, f, n, th, tw).transpose(3, 2, 4, 0, 5, 1)
    y = y_tiles.reshape(n, f, s * th, s * tw)[:, :, :out_h, :out_w]
    return write_into(out, (y + bias.reshape(1, f, 1, 1)).astype(m.dtype, copy=False))


def winograd_output_backward(
    dy: np.ndarray, groups: int, tf: Transform, out: np.ndarray | None = None
) -> np.ndarray:
    """dM (a*a, G, F/G, T) = A dY A^T from dy (N, F, OH, OW): the adjoint of
    ``winograd_output`` (without the bias, whose gradient is just the sum of dy)."""
    n, f, out_h, out_w = dy.shape
    s = tf.m
    th, tw = output_tiles(out_h, out_w, tf)
    dy_pad = np.zeros((n, f, s * th, s * tw), dtype=dy.dtype)  # the cut-off rows/columns: 0
    dy_pad[:, :, :out_h, :out_w] = dy
    dy_tiles = dy_pad.reshape(n, f, th, s, tw, s).transpose(3, 5, 1, 0, 2, 4).reshape(s * s, -1)
    grad_m = tf.output_matrix.T.astype(dy.dtype) @ dy_tiles  # (a*a, F*T), columns (f, t)
    return write_into(out, grad_m.reshape(tf.alpha**2, groups, f // groups, -1))


def write_into(out: np.ndarray | None, result: np.ndarray) -> np.ndarray:
    """``result`` copied into ``out`` (and returned), or as a fresh contiguous array."""
    if out is None:
        return np.ascontiguousarray(result)
    np.copyto(out, result)
    return out
