"""Winograd convolution: AlexNet's stride-1 layers (conv2's 5x5, conv3-conv5's 3x3) with fewer
multiplies.

Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks" (CVPR 2016, arXiv 2015).
An r x r filter ``g`` slid over an a x a input tile ``d`` (a = m + r - 1) gives an m x m
output tile ``Y``. Computed directly that is m*m*r*r multiplies; Winograd's minimal filtering
algorithm F(m x m, r x r) needs a*a::

    Y = A^T [ (G g G^T) * (B^T d B) ] A      (* : elementwise, over the a x a "Winograd domain")

with constant matrices ``B^T`` (a x a), ``G`` (a x r), ``A^T`` (m x a)
(``minialexnet/kernels/numpy/winograd.py``: F(2x2, 3x3) for 3x3 filters, 16 multiplies
instead of 36; F(4x4, 5x5) for 5x5 filters, 64 instead of 400). Summed over input channels,
the elementwise products become, for each of the a*a positions ``k`` of the domain and each
group g, one matrix multiply::

    U[k] = (G W G^T)[k]       (F/G, C/G)   the filters, transformed once per call
    V[k] = (B^T d B)[k]       (C/G, T)     every input tile; T = N * tiles per image
    M[k] = U[k] @ V[k]        (F/G, T)
    y    = A^T M A + b        an m x m output tile from each tile of M

The transforms are additions and small multiples. Tiles that stick out of the map compute
outputs that are cut off: conv3-conv5's 13x13 maps take 7x7 tiles of 2x2 (14x14), so 2.25 *
169/196 = 1.94x fewer multiplies in practice; conv2's 27x27 maps take 7x7 tiles of 4x4
(28x28): 6.25 * 729/784 = 5.8x fewer. Every step is linear, so backward is each step
transposed::

    dM = A dY A^T          dV[k] = U[k]^T @ dM[k]      dx = sum over tiles of B dV B^T
    dU[k] = dM[k] @ V[k]^T                             dW = G^T dU G        db = sum of dy

The transforms are kernels (``winograd_input``, ``winograd_output`` and their backwards in
``minialexnet/kernels/{numpy,cpu}/winograd.py``); the GEMMs and the filter transform are
here. The batch goes through a chunk of images at a time (``min_chunk_tiles``), so V and M
(a*a / m*m times the size of the maps: 4x for both transforms) never exist for a large batch
at once; their buffers are reused (``minialexnet/layers/workspace.py``). Only x is kept
between forward and backward: V is recomputed from it (one cheap pass) rather than held.
Tested against the im2col path (forward, dx, dW, db) in tests/test_winograd.py.
"""

from __future__ import annotations

import numpy as np

from minialexnet.backend import kernels
from minialexnet.kernels.numpy.winograd import F2x2_3x3, F4x4_5x5, Transform, tile_grid
from minialexnet.layers import workspace

#: The transform for each (kernel size, stride) Winograd applies to.
TRANSFORMS = {(3, 1): F2x2_3x3, (5, 1): F4x4_5x5}


def transform_for(kernel_h: int, kernel_w: int, stride: int) -> Transform | None:
    """The Winograd transform of a square kernel at this stride, or None where there is none
    (``TRANSFORMS``: 3x3 and 5x5 at stride 1; any padding, any groups)."""
    return TRANSFORMS.get((kernel_h, stride)) if kernel_h == kernel_w else None


def supports(kernel_h: int, kernel_w: int, stride: int) -> bool:
    """Whether a layer of this kernel and stride can use Winograd (``TRANSFORMS``)."""
    return transform_for(kernel_h, kernel_w, stride) is not None


#: The fewest weights per group, (C/G) * (F/G), for which ``AlexNet`` picks Winograd. Its
#: GEMMs are (F/G x C/G) @ (C/G x tiles): with narrow layers they run far below the BLAS peak
#: and the transforms (which cost in proportion to C + F, not C * F) outweigh the saved
#: multiplies. Forward + backward of one layer at batch 32 on the 2-core AMD machine,
#: Winograd / im2col time, F(2x2, 3x3): C/G x F/G = 48x48: 1.49 (6x6 maps), 0.87 (13x13);
#: 64x64: 1.2-1.3; 64x128: 1.23, 0.88; 128x128: 0.96, 0.74; 96x192: 0.98, 0.77; paper
#: conv3-conv5 (256x384, 192x192, 192x128 at 13x13): 0.65-0.81. So the "mini" network (48-96
#: channels per group, 6x6 maps) stays with im2col, where Winograd made its training step 10%
#: slower. F(4x4, 5x5) saves far more multiplies (6.25x): the paper's conv2 (48x128 at
#: 27x27) 0.5-0.57; 16x48 at 13x13, 0.9-1.05. Mini's conv2 (16x32) keeps im2col.
MIN_WEIGHTS_PER_GROUP = {F2x2_3x3: 128 * 128, F4x4_5x5: 48 * 128}


def worthwhile(in_channels: int, out_channels: int, groups: int, kernel_size: int = 3) -> bool:
    """Whether Winograd is expected to beat im2col for a stride-1 layer of this square kernel
    (3 or 5): its channels per group are wide enough (``MIN_WEIGHTS_PER_GROUP``)."""
    tf = transform_for(kernel_size, kernel_size, 1)
    weights_per_group = (in_channels // groups) * (out_channels // groups)
    return tf is not None and weights_per_group >= MIN_WEIGHTS_PER_GROUP[tf]


#: The fewest tiles in one call, N * TH * TW, for which ``Conv2D(algorithm="auto")`` picks
#: Winograd: with few tiles its a*a GEMMs (F/G x C/G) @ (C/G x tiles) per group are too
#: short to run near the BLAS peak, while im2col does one GEMM per group, with an inner
#: dimension r*r times longer (C/G * r*r). Forward + backward, Winograd / im2col time, on
#: the 2-core AMD machine (paper layers, 13x13 maps, 49 tiles per image): F(2x2, 3x3) on
#: conv3-conv5 at 1 image 2.1-3.4, 2 images 1.7-1.9, 4 images 1.25-1.5, 8-12 images
#: 0.94-1.55 (parity, noisy), 16 images 0.70-1.04, 32 images 0.75-0.88; forward alone at 1
#: image 2.2-2.7 (a whole paper forward pass of one image 24 ms against 19 ms). So 16
#: images' worth. F(4x4, 5x5) on conv2 (27x27 maps, 49 tiles per image) was at parity from
#: 1 to 4 images (0.92-1.30, forward alone 0.6-1.4) and ahead from 8 (0.59-0.79): no
#: threshold.
MIN_TILES_PER_CALL = {F2x2_3x3: 16 * 7 * 7, F4x4_5x5: 0}


def enough_tiles(x_shape: tuple, kernel_size: int, padding: int) -> bool:
    """Whether a call on x of ``x_shape`` (N, C, H, W) has enough output tiles for Winograd to
    beat im2col (``MIN_TILES_PER_CALL``), for a stride-1 square kernel it supports."""
    tf = transform_for(kernel_size, kernel_size, 1)
    n, _, h, w = x_shape
    _, _, th, tw = tile_grid(h, w, padding, tf)
    return n * th * tw >= MIN_TILES_PER_CALL[tf]


#: The fewest tiles per chunk of images (one chunk: at least one image). The tiles are the
#: GEMMs' long axis, T; the GEMMs are small in their other two (C/G and F/G), so they need a
#: long T to run at full rate, while smaller chunks keep V and M small. Forward + backward at
#: batch 32 on the 2-core AMD machine, ms, chunks of 8 / 16 / 32 images: conv2 (F(4x4, 5x5),
#: 49 tiles per image) 86 / 78 / 77; conv3 (F(2x2, 3x3), 49 tiles) - / 60 / 57; conv4-conv5
#: likewise. So 32 of AlexNet's images; at batch 128, 4 chunks.
min_chunk_tiles = 32 * 7 * 7


def _transform(weights: np.ndarray) -> Transform:
    """The transform for these weights (F, C/G, r, r): the layer has checked ``supports``."""
    return transform_for(weights.shape[2], weights.shape[3], 1)


def transform_filters(weights: np.ndarray, groups: int) -> np.ndarray:
    """U = G W G^T of every filter: W (F, C/G, r, r) -> U (a*a, G, F/G, C/G), W's dtype."""
    tf = _transform(weights)
    f, c_g = weights.shape[:2]
    u = tf.filter_matrix.astype(weights.dtype) @ weights.reshape(f * c_g, -1).T  # (a*a, F*C/G)
    return u.reshape(tf.alpha**2, groups, f // groups, c_g)


def _chunks(n: int, tiles_per_image: int) -> list[tuple[int, int]]:
    """[start, stop) image ranges of at least ``min_chunk_tiles`` tiles (the last: the rest)."""
    step = max(1, -(-min_chunk_tiles // tiles_per_image))
    return [(start, min(start + step, n)) for start in range(0, n, step)]


def forward(
    x: np.ndarray, weights: np.ndarray, bias: np.ndarray, padding: int, groups: int
) -> np.ndarray:
    """y (N, F, OH, OW) from x (N, C, H, W), weights (F, C/G, r, r), bias (F,); one dtype."""
    tf = _transform(weights)
    n, c, h, w = x.shape
    f = weights.shape[0]
    out_h, out_w, th, tw = tile_grid(h, w, padding, tf)
    k, a2 = kernels(), tf.alpha**2
    u = transform_filters(weights, groups)
    y = np.empty((n, f, out_h, out_w), dtype=x.dtype)
    for start, stop in _chunks(n, th * tw):
        tiles = (stop - start) * th * tw
        v = workspace.scratch("winograd_v", (a2, groups, c // groups, tiles), x.dtype)
        k.winograd_input(x[start:stop], padding, groups, tf, out=v)
        m = np.matmul(
            u, v, out=workspace.scratch("winograd_m", (a2, groups, f // groups, tiles), x.dtype)
        )
        k.winograd_output(m, bias, stop - start, out_h, out_w, tf, out=y[start:stop])
    return y


def backward(
    dy: np.ndarray,
    x: np.ndarray,
    weights: np.ndarray,
    padding: int,
    groups: int,
    need_dx: bool = True,
    grads: dict[str, np.ndarray] | None = None,
) -> np.ndarray | None:
    """dx (N, C, H, W) of ``forward(x, weights, bias, padding, groups)`` from dy (N, F, OH, OW),
    or None with ``need_dx=False``.

    dW and db are written into ``grads["W"]`` (F, C/G, r, r) and ``grads["b"]`` (F,)
    (``Conv2D`` passes last call's arrays); ``grads=None`` (a frozen layer) computes neither:
    no V, no dU product."""
    tf = _transform(weights)
    n, _, h, w = x.shape
    f, c_g = weights.shape[:2]
    _, _, th, tw = tile_grid(h, w, padding, tf)
    k, a2 = kernels(), tf.alpha**2
    if grads is None and not need_dx:
        return None
    u = transform_filters(weights, groups)
    grad_u = np.zeros_like(u) if grads is not None else None  # (a*a, G, F/G, C/G)
    dx = np.empty(x.shape, dtype=x.dtype) if need_dx else None
    for start, stop in _chunks(n, th * tw):
        tiles = (stop - start) * th * tw
        grad_m = workspace.scratch("winograd_m", (a2, groups, f // groups, tiles), x.dtype)
        k.winograd_output_backward(dy[start:stop], groups, tf, out=grad_m)
        if grad_u is not None:
            v = workspace.scratch("winograd_v", (a2, groups, c_g, tiles), x.dtype)
            k.winograd_input(x[start:stop], padding, groups, tf, out=v)
            chunk_u = workspace.scratch("winograd_du", u.shape, x.dtype)
            grad_u += np.matmul(grad_m, v.transpose(0, 1, 3, 2), out=chunk_u)
        if dx is not None:
            grad_v = workspace.scratch("winograd_v", (a2, groups, c_g, tiles), x.dtype)
            np.matmul(u.transpose(0, 1, 3, 2), grad_m, out=grad_v)
            k.winograd_input_backward(
                grad_v, dx[start:stop].shape, padding, tf, out=dx[start:stop]
            )
    if grads is not None:
        grad_w = tf.filter_matrix.T.astype(x.dtype) @ grad_u.reshape(a2, f * c_g)  # (r*r, F*C/G)
        np.copyto(grads["W"].reshape(f * c_g, -1), grad_w.T)
        np.sum(dy, axis=(0, 2, 3), dtype=x.dtype, out=grads["b"])
    return dx
