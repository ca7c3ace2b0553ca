"""Why conv1 stays im2col + GEMM: a direct convolution written plainly in Numba, timed.

    python benchmarks/direct_conv.py [--batch 32] [--repeats 5]

PyTorch's conv1 (oneDNN) convolves directly, without im2col, at about the machine's SGEMM
rate; ours copies every window into a column (im2col) and multiplies in OpenBLAS. Could a
direct convolution in Numba do better than that? This times the plain one: one task per
(image, output row), the filters as the vectorized inner loop, the row's accumulators
(OW x F floats, 21 KB for conv1) in L1. It prints its forward time and GFLOP/s, the same
for ``Conv2D``'s forward (im2col + GEMM) and for one whole-batch GEMM of conv1's size, and
the largest difference between the two outputs. docs/numba.md ("Where the per-layer goal
stops") has the numbers of the 2-core AMD machine: 58-127 GFLOP/s direct, slower than
``Conv2D`` in every run.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import minialexnet  # noqa: E402, F401  (before NumPy: OpenBLAS's idle workers sleep)

# isort: split
import numpy as np  # noqa: E402
from conv_chunks import LAYERS  # noqa: E402
from conv_parts import median_ms  # noqa: E402
from numba import njit, prange  # noqa: E402

from minialexnet.layers import Conv2D  # noqa: E402

# Unsigned indices in the inner loops, as in minialexnet/kernels/cpu/im2col.py: Numba then
# skips its negative-index test, which keeps LLVM from vectorizing.
_U = np.uintp


@njit(cache=True, parallel=True)
def direct_forward(x, weights_t, stride, kernel, y):
    """y[n, f, oh, ow] = sum_{c,i,j} W[f, c, i, j] * x[n, c, oh*stride + i, ow*stride + j].

    x (N, C, H, W); weights_t (C*K*K, F), row (c, i, j) holding every filter's weight;
    y (N, F, OH, OW). No padding (conv1 has none) and no bias (Conv2D's starts at 0)."""
    n_images, channels = x.shape[0], x.shape[1]
    filters, out_h, out_w = y.shape[1], y.shape[2], y.shape[3]
    for task in prange(n_images * out_h):  # task (n, oh) alone writes y[n, :, oh]
        n, oh = task // out_h, task % out_h
        acc = np.zeros((out_w, filters), dtype=y.dtype)
        for c in range(channels):
            for i in range(kernel):
                x_row = x[n, c, oh * stride + i]
                for j in range(kernel):
                    w_row = weights_t[(c * kernel + i) * kernel + j]
                    for ow in range(_U(out_w)):
                        pixel = x_row[ow * _U(stride) + _U(j)]
                        acc_row = acc[ow]
                        for f in range(_U(filters)):  # the vectorized loop
                            acc_row[f] += pixel * w_row[f]
        for f in range(filters):
            for ow in range(out_w):
                y[n, f, oh, ow] = acc[ow, f]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    channels, filters, kernel, stride, padding, groups, size = LAYERS["conv1"]  # §3.5
    rng = np.random.default_rng(0)
    layer = Conv2D(channels, filters, kernel, stride, padding, groups, rng=rng)
    x = rng.standard_normal((args.batch, channels, size, size), dtype=np.float32)
    y = np.empty((args.batch, *layer.output_shape(x.shape[1:])), dtype=np.float32)
    weights = layer.params["W"].reshape(filters, -1)  # (F, C*K*K)
    weights_t = np.ascontiguousarray(weights.T)
    columns = rng.standard_normal((weights.shape[1], y[0, 0].size), dtype=np.float32)
    products = np.empty((filters, y[0, 0].size), dtype=np.float32)

    flop = 2 * args.batch * layer.macs(x.shape[1:])
    timings = {
        "direct (plain Numba)": median_ms(
            lambda: direct_forward(x, weights_t, stride, kernel, y), args.repeats
        ),
        "Conv2D (im2col + GEMM)": median_ms(lambda: layer.forward(x), args.repeats),
        "the GEMMs alone": args.batch
        * median_ms(lambda: np.matmul(weights, columns, out=products), args.repeats),
    }
    print(f"conv1 forward, batch {args.batch}, {flop / 1e9:.2f} GFLOP")
    for name, ms in timings.items():
        print(f"  {name:24s} {ms:8.1f} ms  {flop / ms / 1e6:6.0f} GFLOP/s")
    print(f"  largest |direct - Conv2D|: {np.abs(y - layer.forward(x)).max():.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
