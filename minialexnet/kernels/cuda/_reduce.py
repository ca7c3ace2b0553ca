"""Block-wide reductions in shared memory, for the kernels whose outputs are sums or maxima
over many inputs (bias gradients, the softmax's normaliser, the loss totals).

"One thread per output element" would leave such a kernel with a handful of threads each
looping over hundreds of thousands of inputs (conv1's bias gradient: 96 outputs, each a sum
over 128 x 3025 values). Instead one *block* computes one output: every thread adds a strided
share of the inputs, then the block halves the partial results in shared memory, ``log2``
(threads) rounds, until thread 0 holds the total. No atomics, and the order of additions is
fixed, so results are reproducible run to run.

The device functions take the kernel's shared scratch array (one float32 per thread; each
kernel declares its own, on its own source line, because the CUDA simulator aliases two
shared arrays declared on one line) and must be called by every thread of the block.
"""

from __future__ import annotations

from numba import cuda

from minialexnet.kernels.cuda._launch import SIMULATOR

# Threads per reduction block: a power of two (the halving needs it). 256 on a GPU; 32 under
# the CUDA simulator, which runs each thread as a Python thread (the tree is the same code,
# five rounds instead of eight).
REDUCE_THREADS = 32 if SIMULATOR else 256


@cuda.jit(device=True)
def block_sum(scratch, value):
    """Sum of ``value`` over the threads of a 1-D block of REDUCE_THREADS; every thread gets it."""
    tid = cuda.threadIdx.x
    scratch[tid] = value
    cuda.syncthreads()
    half = cuda.blockDim.x // 2
    while half > 0:
        if tid < half:
            scratch[tid] += scratch[tid + half]
        cuda.syncthreads()
        half //= 2
    total = scratch[0]
    cuda.syncthreads()  # everyone has read it before scratch is reused
    return total


@cuda.jit(device=True)
def block_max(scratch, value):
    """Maximum of ``value`` over the threads of the block (NaN-propagating); every thread
    gets it."""
    tid = cuda.threadIdx.x
    scratch[tid] = value
    cuda.syncthreads()
    half = cuda.blockDim.x // 2
    while half > 0:
        if tid < half:
            other = scratch[tid + half]
            if other > scratch[tid] or other != other:
                scratch[tid] = other
        cuda.syncthreads()
        half //= 2
    best = scratch[0]
    cuda.syncthreads()
    return best
