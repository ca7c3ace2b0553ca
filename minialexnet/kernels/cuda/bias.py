"""Bias of a convolution or fully connected layer (§3.5) on the GPU: add it, and its gradient.

No CPU twin: the CPU layers add the bias with NumPy broadcasting (``y += b[:, None]``) and
sum its gradient with ``dy.sum(axis=...)``.

Shapes: ``y`` / ``dy`` are (N, F) for a fully connected layer and (N, F, H, W) for a
convolution; ``b`` / ``db`` are (F,). Formulas::

    y[n, f, ...] += b[f]                  db[f] = sum over n and the pixels of dy[n, f, ...]

Thread mappings: ``add_bias`` one thread per element of ``y``; ``bias_grad`` one *block* per
output ``f`` (a shared-memory tree reduction, see ``_reduce.py``), because each output sums
``N * H * W`` values (conv1 at batch 128: 387,200).
"""
from __future__ import annotations

import numpy as np
from numba import cuda

from minialexnet.kernels.cuda._launch import (THREADS_PER_BLOCK, blocks_for,
                                              check_device_array, output)
from minialexnet.kernels.cuda._reduce import REDUCE_THREADS, block_sum


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
def _bias_grad_kernel(dy, db):
    """dy: (N, F, P); db: (F,). Block f -> db[f]; its threads stride over the N*P values."""
    scratch = cuda.shared.array(REDUCE_THREADS, np.float32)
    f = cuda.blockIdx.x
    n_images, _, pixels = dy.shape
    total = np.float32(0.0)
    for e in range(cuda.threadIdx.x, n_images * pixels, cuda.blockDim.x):
        n = e // pixels
        total += dy[n, f, e - n * pixels]        # consecutive threads: consecutive pixels
    total = block_sum(scratch, total)
    if cuda.threadIdx.x == 0:
        db[f] = total


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


def bias_grad(dy, db=None, stream=0):
    """``db[f] = sum of dy[n, f, ...]`` over the batch and the pixels; returns ``db`` (F,).

    dy : float32 device array (N, F) or (N, F, H, W); db : optional float32 (F,) to overwrite.
    One block of REDUCE_THREADS threads per output (tree reduction in shared memory).
    """
    dy3 = _as_nfp(dy, "bias_grad", "dy")
    db = output(db, (dy.shape[1],), "bias_grad", "db", stream=stream)
    _bias_grad_kernel[dy.shape[1], REDUCE_THREADS, stream](dy3, db)
    return db
