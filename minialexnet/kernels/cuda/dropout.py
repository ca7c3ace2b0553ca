"""Inverted dropout (§4.2) on the GPU, with a counter-based random number generator.

No CPU twin: the CPU layer draws its mask from a ``numpy.random.Generator``. A GPU kernel
cannot share such a generator between a million threads, and storing the mask would cost a
buffer per layer. Instead each element's coin is a pure function of ``(seed, sequence, index)``::

    key   = mix64(seed ^ mix64(sequence + GOLDEN))     one key per mask
    z_i   = mix64(key + (i + 1) * GOLDEN)              SplitMix64's i-th output for that key
    keep_i = (z_i >> 40) >= round(p * 2**24)           24 random bits -> P(keep) = 1 - p
    y_i   = x_i * keep_i / (1 - p)                     inverted dropout: E[y_i] = x_i

``mix64`` is the output function of SplitMix64 (Steele, Lea & Flood 2014), a bijective bit
mixer; SplitMix64's stream passes the BigCrush battery. ``seed`` and ``sequence`` are any
two integers >= 0 that name the mask; the GPU network (``minialexnet.gpu.model``) draws one
seed per training step from the model's generator and uses each dropout layer's position as
its sequence number. The backward pass recomputes the same coins from the same
``(seed, sequence)`` instead of reading a stored mask, so masks need no state or memory and
any step can be replayed exactly.

Scaling the kept units by ``1/(1-p)`` during training and using the network unchanged at
test time is equivalent in expectation to the paper's "multiply the outputs by 0.5 at test
time" (§4.2).

``keep_mask`` is the same function in NumPy: the readable reference the kernel is tested
against, and a way to give the CPU layers the GPU's masks.

Thread mapping: one thread per element (arrays treated as flat, index ``i`` in C order).
"""

from __future__ import annotations

import numpy as np
from numba import cuda

from minialexnet.kernels.cuda._launch import (
    THREADS_PER_BLOCK,
    blocks_for,
    check_device_array,
    output,
)

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15  # 2**64 / golden ratio: SplitMix64's counter increment
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB
_RANDOM_BITS = 24  # bits of each draw compared against the threshold

# uint64 constants for the kernels: numba turns uint64 (op) int64 into float64, so every
# operand of the bit mixing must be a uint64.
_GOLDEN_U64 = np.uint64(_GOLDEN)
_MIX1_U64 = np.uint64(_MIX1)
_MIX2_U64 = np.uint64(_MIX2)
_SHIFT30 = np.uint64(30)
_SHIFT27 = np.uint64(27)
_SHIFT31 = np.uint64(31)
_SHIFT_DRAW = np.uint64(64 - _RANDOM_BITS)
_ONE = np.uint64(1)


def _mix64_int(z: int) -> int:
    """SplitMix64's finaliser on a Python int (host side, exact 64-bit wrap-around)."""
    z = ((z ^ (z >> 30)) * _MIX1) & _MASK64
    z = ((z ^ (z >> 27)) * _MIX2) & _MASK64
    return z ^ (z >> 31)


def dropout_key(seed: int, sequence: int) -> int:
    """The 64-bit key of one mask: ``mix64(seed ^ mix64(sequence + GOLDEN))``."""
    if int(seed) < 0 or int(sequence) < 0:
        raise ValueError(
            f"dropout seed and sequence must be integers >= 0, got seed={seed}, "
            f"sequence={sequence}"
        )
    return _mix64_int((int(seed) & _MASK64) ^ _mix64_int((int(sequence) + _GOLDEN) & _MASK64))


def _threshold(p: float) -> int:
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability p must lie in [0, 1), got {p!r}")
    return int(round(p * (1 << _RANDOM_BITS)))


def keep_mask(seed: int, sequence: int, shape: tuple, p: float) -> np.ndarray:
    """NumPy reference of the kernel's coins: boolean array of ``shape``, True = unit kept.

    Element ``i`` (C order) is kept iff ``(mix64(key + (i+1) * GOLDEN) >> 40) >=
    round(p * 2**24)`` with ``key = dropout_key(seed, sequence)``.
    """
    count = int(np.prod(shape))
    with np.errstate(over="ignore"):  # uint64 arithmetic wraps modulo 2**64 on purpose
        z = np.uint64(dropout_key(seed, sequence)) + (
            np.arange(1, count + 1, dtype=np.uint64) * _GOLDEN_U64
        )
        z = (z ^ (z >> _SHIFT30)) * _MIX1_U64
        z = (z ^ (z >> _SHIFT27)) * _MIX2_U64
        z = z ^ (z >> _SHIFT31)
    return ((z >> _SHIFT_DRAW) >= np.uint64(_threshold(p))).reshape(shape)


@cuda.jit(device=True)
def _keep(key, i, threshold):
    """The coin of element i: SplitMix64's i-th output for ``key``, top 24 bits vs threshold."""
    z = key + (np.uint64(i) + _ONE) * _GOLDEN_U64
    z = (z ^ (z >> _SHIFT30)) * _MIX1_U64
    z = (z ^ (z >> _SHIFT27)) * _MIX2_U64
    z = z ^ (z >> _SHIFT31)
    return (z >> _SHIFT_DRAW) >= threshold


@cuda.jit
def _dropout_kernel(x, key, threshold, scale, y):
    """y[i] = x[i] * scale if element i is kept, else 0 (also the backward, with x = dy)."""
    i = cuda.grid(1)
    if i < x.shape[0]:
        y[i] = x[i] * scale if _keep(key, i, threshold) else np.float32(0.0)


def dropout_forward(x, p: float, seed: int, sequence: int, y=None, stream=0):
    """Inverted dropout (§4.2): ``y = x * keep / (1 - p)`` with ``keep = keep_mask(seed,
    sequence, x.shape, p)``. x : float32 device array (any shape); y : optional output (may
    be x); ``seed``, ``sequence`` : integers >= 0 naming the mask."""
    check_device_array(x, "dropout_forward", "x")
    y = output(y, x.shape, "dropout_forward", "y", stream=stream)
    _dropout_kernel[blocks_for(x.size), THREADS_PER_BLOCK, stream](
        x.reshape(x.size),
        np.uint64(dropout_key(seed, sequence)),
        np.uint64(_threshold(p)),
        np.float32(1.0 / (1.0 - p)),
        y.reshape(y.size),
    )
    return y


def dropout_backward(dy, p: float, seed: int, sequence: int, dx=None, stream=0):
    """``dx = dy * keep / (1 - p)`` with the forward's coins, recomputed from ``(seed,
    sequence)``.
    dy : float32 device array; dx : optional output (may be dy)."""
    check_device_array(dy, "dropout_backward", "dy")
    dx = output(dx, dy.shape, "dropout_backward", "dx", stream=stream)
    _dropout_kernel[blocks_for(dy.size), THREADS_PER_BLOCK, stream](
        dy.reshape(dy.size),
        np.uint64(dropout_key(seed, sequence)),
        np.uint64(_threshold(p)),
        np.float32(1.0 / (1.0 - p)),
        dx.reshape(dx.size),
    )
    return dx
