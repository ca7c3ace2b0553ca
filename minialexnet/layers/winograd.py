"""Winograd F(2x2, 3x3): AlexNet's 3x3 stride-1 convolutions (conv3-conv5) with fewer multiplies.

Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks" (CVPR 2016, arXiv 2015).
A 3x3 filter ``g`` slid over a 4x4 input tile ``d`` gives a 2x2 output tile ``Y``. Computed
directly that is 2*2*3*3 = 36 multiplies; Winograd's minimal filtering algorithm needs 16::

    Y = A^T [ (G g G^T) * (B^T d B) ] A          (* : elementwise, over the 4x4 "Winograd domain")

with constant matrices ``B^T`` (4x4), ``G`` (4x3), ``A^T`` (2x4) of 0, +-1 and 1/2
(``minialexnet/kernels/numpy/winograd.py``). Summed over input channels, the elementwise
products become, for each of the 16 positions ``k`` of the 4x4 domain and each group g, one
matrix multiply::

    U[k] = (G W G^T)[k]       (F/G, C/G)   the filters, transformed once per call
    V[k] = (B^T d B)[k]       (C/G, T)     every input tile; T = N * tiles per image
    M[k] = U[k] @ V[k]        (F/G, T)
    y    = A^T M A + b        a 2x2 output tile from each tile of M

The 16 GEMMs do 16/36 of the direct method's multiplies per 2x2 output tile (Lavin & Gray's
2.25x); the transforms are additions only. conv3-conv5 output 13x13 maps, so 7x7 tiles
compute 14x14 and the extra row and column are cut off: 2.25 * 169/196 = 1.94x fewer
multiplies in practice. Every step is linear, so backward is each step transposed::

    dM = A dY A^T          dV[k] = U[k]^T @ dM[k]      dx = sum over tiles of B dV B^T
    dU[k] = dM[k] @ V[k]^T                             dW = G^T dU G        db = sum of dy

The transforms are kernels (``winograd_input``, ``winograd_output`` and their backwards in
``minialexnet/kernels/{numpy,cpu}/winograd.py``); the GEMMs and the filter transform are
here. Only x is kept between forward and backward: V is recomputed from it (one cheap pass)
rather than held (16/9 of the im2col matrix). Tested against the im2col path (forward, dx,
dW, db) in tests/test_winograd.py.
"""

from __future__ import annotations

import numpy as np

from minialexnet.backend import kernels
from minialexnet.kernels.numpy.winograd import FILTER_TRANSFORM, tile_grid


def supports(kernel_h: int, kernel_w: int, stride: int) -> bool:
    """F(2x2, 3x3) applies to 3x3 kernels at stride 1 (any padding, any groups)."""
    return (kernel_h, kernel_w, stride) == (3, 3, 1)


#: The fewest weights per group, (C/G) * (F/G), for which ``AlexNet`` picks Winograd. Its 16
#: GEMMs are (F/G x C/G) @ (C/G x tiles): with narrow layers they run far below the BLAS peak
#: and the transforms (which cost in proportion to C + F, not C * F) outweigh the saved
#: multiplies. Forward + backward of one layer at batch 32 on the 2-core AMD machine,
#: Winograd / im2col time: C/G x F/G = 48x48: 1.49 (6x6 maps), 0.87 (13x13); 64x64: 1.2-1.3;
#: 64x128: 1.23, 0.88; 128x128: 0.96, 0.74; 96x192: 0.98, 0.77; paper conv3-conv5
#: (256x384, 192x192, 192x128 at 13x13): 0.65-0.81. So the "mini" network (48-96 channels per
#: group, 6x6 maps) stays with im2col, where Winograd made its training step 10% slower.
MIN_WEIGHTS_PER_GROUP = 128 * 128


def worthwhile(in_channels: int, out_channels: int, groups: int) -> bool:
    """Whether Winograd is expected to beat im2col for a layer that ``supports`` it: its
    channels per group are wide enough (``MIN_WEIGHTS_PER_GROUP``)."""
    return (in_channels // groups) * (out_channels // groups) >= MIN_WEIGHTS_PER_GROUP


def transform_filters(weights: np.ndarray, groups: int) -> np.ndarray:
    """U = G W G^T of every filter: W (F, C/G, 3, 3) -> U (16, G, F/G, C/G), W's dtype."""
    f, c_g = weights.shape[:2]
    u = FILTER_TRANSFORM.astype(weights.dtype) @ weights.reshape(f * c_g, 9).T  # (16, F*C/G)
    return u.reshape(16, groups, f // groups, c_g)


def forward(
    x: np.ndarray, weights: np.ndarray, bias: np.ndarray, padding: int, groups: int
) -> np.ndarray:
    """y (N, F, OH, OW) from x (N, C, H, W), weights (F, C/G, 3, 3), bias (F,); one dtype."""
    n, _, h, w = x.shape
    out_h, out_w, _, _ = tile_grid(h, w, padding)
    k = kernels()
    m = np.matmul(
        transform_filters(weights, groups), k.winograd_input(x, padding, groups)
    )  # (16, G, F/G, T)
    return k.winograd_output(m, bias, n, out_h, out_w)


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

    dW and db are written into ``grads["W"]`` (F, C/G, 3, 3) and ``grads["b"]`` (F,)
    (``Conv2D`` passes last call's arrays); ``grads=None`` (a frozen layer) computes neither:
    no V, no dU product."""
    f, c_g = weights.shape[:2]
    k = kernels()
    grad_m = k.winograd_output_backward(dy, groups)  # (16, G, F/G, T)
    if grads is not None:
        v = k.winograd_input(x, padding, groups)  # (16, G, C/G, T)
        grad_u = np.matmul(grad_m, v.transpose(0, 1, 3, 2))  # (16, G, F/G, C/G)
        del v  # free it before dV exists
        grad_w_9 = FILTER_TRANSFORM.T.astype(x.dtype) @ grad_u.reshape(16, f * c_g)  # (9, F*C/G)
        np.copyto(grads["W"].reshape(f * c_g, 9), grad_w_9.T)
        np.sum(dy, axis=(0, 2, 3), dtype=x.dtype, out=grads["b"])
    if not need_dx:
        return None
    u = transform_filters(weights, groups)
    grad_v = np.matmul(u.transpose(0, 1, 3, 2), grad_m)  # (16, G, C/G, T)
    return k.winograd_input_backward(grad_v, x.shape, padding)
