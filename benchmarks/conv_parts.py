"""Where a conv layer's time goes: forward, backward and their parts, per AlexNet layer.

    python benchmarks/conv_parts.py [--batch 32] [--repeats 5] [--layers conv1,conv2]

For each conv layer at its place in the paper's network: ``forward`` and ``backward`` (with
dx, as for every layer but the first in training) of ``Conv2D``; one GEMM the size of the
layer's whole batch (the work of each of the three products, at the GEMM rate printed next
to it); and the Numba ``im2col`` and ``col2im`` of one chunk (``Conv2D.chunk_bytes``) times
the number of chunks. Backward costs about two GEMMs, one im2col and one col2im more than
forward, and forward one GEMM and one im2col: what is left is reorders and the bias.
Medians of ``--repeats`` calls after one warm-up; threads as the process has them
(``OPENBLAS_NUM_THREADS`` / ``NUMBA_NUM_THREADS``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from conv_chunks import LAYERS  # noqa: E402

from minialexnet.backend import kernels  # noqa: E402
from minialexnet.layers import Conv2D  # noqa: E402
from minialexnet.shapes import conv_output_size  # noqa: E402


def median_ms(call, repeats: int) -> float:
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def measure(name: str, batch: int, repeats: int, rng) -> str:
    """One table row for layer ``name``."""
    c, f, k, stride, padding, groups, size = LAYERS[name]
    layer = Conv2D(c, f, k, stride, padding, groups, rng=rng)
    x = rng.standard_normal((batch, c, size, size), dtype=np.float32)
    dy = rng.standard_normal(layer.forward(x, train=True).shape, dtype=np.float32)
    forward = median_ms(lambda: layer.forward(x, train=True), repeats)
    backward = median_ms(lambda: layer.backward(dy), repeats)

    out = conv_output_size(size, k, stride, padding)
    rows, columns = c // groups * k * k, batch * out * out
    w = rng.standard_normal((groups, f // groups, rows), dtype=np.float32)
    cols = rng.standard_normal((groups, rows, columns), dtype=np.float32)
    gemm = median_ms(lambda: np.matmul(w, cols), repeats)
    flop = 2 * f * rows * columns

    images = x[: layer._chunks(batch, out * out, np.float32)[0][1]]
    chunk_cols = kernels().im2col(images, k, k, stride, padding)
    im2col = median_ms(
        lambda: kernels().im2col(images, k, k, stride, padding, out=chunk_cols), repeats
    )
    col2im = median_ms(
        lambda: kernels().col2im(chunk_cols, images.shape, k, k, stride, padding), repeats
    )
    scale = batch / len(images)  # from one chunk's time to the whole batch's
    return (
        f"{name:6} {forward:8.1f} {backward:9.1f} {gemm:8.1f} {flop / gemm / 1e6:8.0f} "
        f"{im2col * scale:7.1f} {col2im * scale:7.1f}"
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--layers", default=",".join(LAYERS))
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    print(f"batch {args.batch}; load average {os.getloadavg()}")
    print(
        f"{'layer':6} {'forward':>8} {'backward':>9} {'1 GEMM':>8} {'GFLOP/s':>8} "
        f"{'im2col':>7} {'col2im':>7}   (ms)"
    )
    for name in args.layers.split(","):
        print(measure(name, args.batch, args.repeats, rng))
    return 0


if __name__ == "__main__":
    sys.exit(main())
