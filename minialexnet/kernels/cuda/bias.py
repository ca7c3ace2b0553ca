"""Bias of a convolution or fully connected layer (§3.5) on the GPU: add it, and its gradient.

No CPU twin: the CPU layers add the bias with NumPy broadcasting (``y += b[:, None]``) and
sum its gradient with ``dy.sum(axis=...)``.

Shapes: ``y`` / ``dy`` are (N, F) for a fully connected layer and (N, F, H, W) for a
convolution; ``b`` / ``db`` are (F,). Formulas::

    y[n, f, ...] += b[f]                  db[f] = sum over n and the pixels of dy[n, f, ...]

Thread mappings: ``add_bias`` one thread per element of ``y``; ``bias_grad`` *blocks* per
output ``f`` (shared-memory tree reductions, see ``_reduce.py``), because each output sums
``N * H * W`` values (conv1 at batch 128: 387,200). One block per output would leave a GPU
with 132 SMs running conv1's 96 blocks, each a long loop; instead the ``N * H * W`` values
of each output are cut into slices of ``VALUES_PER_BLOCK``, one block per (output, slice)
writes a partial sum, and a second kernel adds each output's partials in slice order
(deterministic: no atomics). conv1 at batch 128: 96 x 95 blocks. When one slice suffices
(the fully connected layers: N values) the blocks write ``db`` directly.
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda

from minialexnet.kernels.cuda._launch import (
    THREADS_PER_BLOCK,
    blocks_for,
    check_device_array,
    output,
)
from minialexnet.kernels.cuda._reduce import REDUCE_THREADS, block_sum
from minialexnet.kernels.cuda.gemm import _sum_slices_kernel

# Values one block of bias_grad adds: 16 per thread.
VALUES_PER_BLOCK = 16 * REDUCE_THREADS


@cuda.jit
def _add_bias_kernel(y, b):
    """y: (N, F, P) with P = H*W (1 for a linear layer); b: (F,). Thread t -> y.flat[t]."""
    t = cuda.grid(1)
    n_images, features, pixels = y.shape
    if t < n_images * features * pixels:
        f = (t // pixels) % features
        n = t // (pixels * features)
        p = t % pixels
        y[n, f, p] += b[f]


@cuda.jit
def _bias_grad_kernel(dy, per_block, partials):
    """dy: (N, F, P); partials: (S, F). Block (f, s) -> partials[s, f], the sum of values
    s*per_block .. (s+1)*per_block - 1 of the N*P values of feature f (in (n, p) order); its
    threads stride over them."""
    scratch = cuda.shared.array(REDUCE_THREADS, np.float32)
    f = cuda.blockIdx.x
    s = cuda.blockIdx.y
    n_images, _, pixels = dy.shape
    stop = min((s + 1) * per_block, n_images * pixels)
    total = np.float32(0.0)
    for e in range(s * per_block + cuda.threadIdx.x, stop, cuda.blockDim.x):
        n = e // pixels
        total += dy[n, f, e - n * pixels]  # consecutive threads: consecutive pixels
    total = block_sum(scratch, total)
    if cuda.threadIdx.x == 0:
        partials[s, f] = total


def _as_nfp(a, who: str, name: str):
    """(N, F) or (N, F, H, W) -> an (N, F, P) view."""
    check_device_array(a, who, name)
    if a.ndim not in (2, 4):
        raise ValueError(f"{who}: {name} must be (N, F) or (N, F, H, W), got {tuple(a.shape)}")
    return a.reshape(a.shape[0], a.shape[1], a.size // (a.shape[0] * a.shape[1]))


def add_bias(y, b, stream=0):
    """``y[n, f, ...] += b[f]`` in place (§3.5) and return ``y``.

    y : float32 device array (N, F) or (N, F, H, W); b : float32 device array (F,).
    One thread per element of ``y``.
    """
    y3 = _as_nfp(y, "add_bias", "y")
    check_device_array(b, "add_bias", "b", shape=(y.shape[1],))
    _add_bias_kernel[blocks_for(y.size), THREADS_PER_BLOCK, stream](y3, b)
    return y


def bias_grad_slices(dy_shape: tuple) -> int:
    """How many blocks share each output of ``bias_grad`` for ``dy`` of this shape."""
    values = dy_shape[0] * math.prod(dy_shape[2:])
    return max(1, math.ceil(values / VALUES_PER_BLOCK))


def bias_grad(dy, db=None, stream=0, partials=None):
    """``db[f] = sum of dy[n, f, ...]`` over the batch and the pixels; returns ``db`` (F,).

    dy : float32 device array (N, F) or (N, F, H, W); db : optional float32 (F,) to overwrite.
    partials : optional float32 device array (S, F), S = ``bias_grad_slices(dy.shape)``, for
    the partial sums when S > 1 (allocated if None: a layer passes a reused buffer).
    Blocks of REDUCE_THREADS threads, S per output (module docstring), then one thread per
    output adds its S partials.
    """
    dy3 = _as_nfp(dy, "bias_grad", "dy")
    features = dy.shape[1]
    db = output(db, (features,), "bias_grad", "db", stream=stream)
    slices = bias_grad_slices(tuple(dy.shape))
    if slices == 1:
        _bias_grad_kernel[(features, 1), REDUCE_THREADS, stream](
            dy3, VALUES_PER_BLOCK, db.reshape(1, features)
        )
        return db
    partials = output(partials, (slices, features), "bias_grad", "partials", stream=stream)
    _bias_grad_kernel[(features, slices), REDUCE_THREADS, stream](dy3, VALUES_PER_BLOCK, partials)
    _sum_slices_kernel[blocks_for(features), THREADS_PER_BLOCK, stream](partials, db)
    return db
