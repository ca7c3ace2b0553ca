"""Softmax + multinomial logistic loss (§3.5, §4.1 metrics) on the GPU.

No CPU twin: the CPU layer ``SoftmaxCrossEntropy`` is a few NumPy lines. The same math, kept
numerically stable for logits of any magnitude by subtracting each row's maximum::

    log_z[n]   = max_j z[n, j] + log sum_j exp(z[n, j] - max_j z[n, j])     (log-sum-exp)
    loss[n]    = log_z[n] - z[n, label_n]                                    (-log softmax)
    rank[n]    = #{j : z[n, j] > z[n, label_n]}       top-k correct iff rank < k (ties count
                                                      for the label)
    dlogits    = (exp(z - log_z) - onehot(label)) / N      gradient of the *mean* loss

Only three scalars need to leave the device per batch: ``totals = [sum of loss[n],
#top-1 correct, #top-5 correct]`` (float32; counts are exact up to 2**24).

Thread mappings: ``forward`` runs one *block* per example (each row's max, sum and rank are
reductions over the classes: 1000 for ImageNet) and then a single block that adds the
per-example results; ``backward`` one thread per element of ``dlogits``.
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
from minialexnet.kernels.cuda._reduce import REDUCE_THREADS, block_max, block_sum


@cuda.jit
def _row_kernel(z, labels, log_z, example):
    """Block n: log_z[n] and example[n] = (loss, rank) for row n of z (N, C)."""
    scratch = cuda.shared.array(REDUCE_THREADS, np.float32)
    n = cuda.blockIdx.x
    classes = z.shape[1]
    label = labels[n]
    target = z[n, label]

    best = -np.float32(np.inf)
    for j in range(cuda.threadIdx.x, classes, cuda.blockDim.x):
        if z[n, j] > best or z[n, j] != z[n, j]:
            best = z[n, j]
    best = block_max(scratch, best)

    total = np.float32(0.0)
    above = np.float32(0.0)
    for j in range(cuda.threadIdx.x, classes, cuda.blockDim.x):
        total += math.exp(z[n, j] - best)
        if z[n, j] > target:
            above += np.float32(1.0)
    total = block_sum(scratch, total)
    above = block_sum(scratch, above)

    if cuda.threadIdx.x == 0:
        lz = best + math.log(total)
        log_z[n] = lz
        example[n, 0] = lz - target
        example[n, 1] = above


@cuda.jit
def _totals_kernel(example, totals):
    """One block: totals = [sum loss, #rank < 1, #rank < 5] over the rows of example (N, 2)."""
    scratch = cuda.shared.array(REDUCE_THREADS, np.float32)
    loss = np.float32(0.0)
    top1 = np.float32(0.0)
    top5 = np.float32(0.0)
    for n in range(cuda.threadIdx.x, example.shape[0], cuda.blockDim.x):
        loss += example[n, 0]
        if example[n, 1] < np.float32(1.0):
            top1 += np.float32(1.0)
        if example[n, 1] < np.float32(5.0):
            top5 += np.float32(1.0)
    loss = block_sum(scratch, loss)
    top1 = block_sum(scratch, top1)
    top5 = block_sum(scratch, top5)
    if cuda.threadIdx.x == 0:
        totals[0] = loss
        totals[1] = top1
        totals[2] = top5


@cuda.jit
def _gradient_kernel(z, labels, log_z, inv_batch, dz):
    """dz[n, j] = (exp(z[n, j] - log_z[n]) - [j == label_n]) / N. Thread t -> dz.flat[t]."""
    t = cuda.grid(1)
    rows, classes = z.shape
    if t < rows * classes:
        n = t // classes
        j = t - n * classes
        p = math.exp(z[n, j] - log_z[n])
        if j == labels[n]:
            p -= np.float32(1.0)
        dz[n, j] = p * inv_batch


def _check(logits, labels, who):
    check_device_array(logits, who, "logits", ndim=2)
    check_device_array(labels, who, "labels", shape=(logits.shape[0],), dtype=np.int64)


def softmax_cross_entropy_forward(logits, labels, log_z=None, example=None, totals=None, stream=0):
    """Loss (§3.5) and top-1/top-5 counts (§4.1) of a batch. Returns ``(totals, log_z,
    example)``. One block per example, then one block for the totals.

    logits : float32 device array (N, C); labels : int64 device array (N,), values in [0, C)
    (not checked on the device: the caller validates labels on the host)
    log_z : optional float32 (N,): each row's log-sum-exp (``backward`` needs it)
    example : optional float32 (N, 2): each row's loss and rank
    totals : optional float32 (3,): ``[sum of losses, top-1 correct, top-5 correct]``;
        the mean loss is ``totals[0] / N``.
    """
    _check(logits, labels, "softmax_cross_entropy_forward")
    rows = logits.shape[0]
    log_z = output(log_z, (rows,), "softmax_cross_entropy_forward", "log_z", stream=stream)
    example = output(example, (rows, 2), "softmax_cross_entropy_forward", "example", stream=stream)
    totals = output(totals, (3,), "softmax_cross_entropy_forward", "totals", stream=stream)
    _row_kernel[rows, REDUCE_THREADS, stream](logits, labels, log_z, example)
    _totals_kernel[1, REDUCE_THREADS, stream](example, totals)
    return totals, log_z, example


def softmax_cross_entropy_backward(logits, labels, log_z, dlogits=None, stream=0):
    """Gradient of the mean loss (§3.5): ``dlogits = (softmax(logits) - onehot(labels)) / N``.

    logits (N, C), labels (N,) int64, log_z (N,) from the forward; dlogits : optional float32
    (N, C) to overwrite. One thread per element.
    """
    _check(logits, labels, "softmax_cross_entropy_backward")
    check_device_array(log_z, "softmax_cross_entropy_backward", "log_z", shape=(logits.shape[0],))
    dlogits = output(
        dlogits, logits.shape, "softmax_cross_entropy_backward", "dlogits", stream=stream
    )
    _gradient_kernel[blocks_for(logits.size), THREADS_PER_BLOCK, stream](
        logits, labels, log_z, np.float32(1.0 / logits.shape[0]), dlogits
    )
    return dlogits
