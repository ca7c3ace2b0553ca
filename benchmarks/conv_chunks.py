"""Time AlexNet's conv layers by chunk size (``Conv2D.chunk_bytes``) and algorithm.

    python benchmarks/conv_chunks.py [--batch 32] [--repeats 3] [--chunks 2,8,32,0]
                                     [--min-columns 2048] [--layers conv1,...,conv5]
                                     [--winograd-tiles 392,784,1568]

One timed call = ``forward(x)`` + ``backward(dy)`` of one layer at its place in the paper's
network. Chunk 0 means the whole batch in one im2col matrix (the old behaviour); each chunk
size is tried with each floor in ``--min-columns`` (``Conv2D.min_chunk_columns``). For the
layers Winograd applies to (conv2-conv5) a "winograd/T" row is added for each T in
``--winograd-tiles`` (``winograd.min_chunk_tiles``: AlexNet's maps have 49 tiles per image).
Shows wall time (median) and process CPU time (median, all threads summed): on a machine
shared with other jobs the CPU time is the steadier measure of the work. The load average is
printed at the start and the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from minialexnet.layers import Conv2D, winograd, workspace

LAYERS = {  # name: (C, F, kernel, stride, padding, groups, input size)
    "conv1": (3, 96, 11, 4, 0, 1, 227),
    "conv2": (96, 256, 5, 1, 2, 2, 27),
    "conv3": (256, 384, 3, 1, 1, 1, 13),
    "conv4": (384, 384, 3, 1, 1, 2, 13),
    "conv5": (384, 256, 3, 1, 1, 2, 13),
}


def time_layer(layer, x, dy, repeats):
    layer.forward(x)
    layer.backward(dy)  # warm-up: compile / cache load, buffers
    wall, cpu = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        layer.forward(x)
        layer.backward(dy)
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chunks", default="2,8,32,0", help="MiB per chunk; 0 = whole batch")
    parser.add_argument(
        "--min-columns", default=str(Conv2D.min_chunk_columns), help="fewest columns per chunk"
    )
    parser.add_argument("--layers", default=",".join(LAYERS))
    parser.add_argument(
        "--winograd-tiles",
        default=str(winograd.min_chunk_tiles),
        help="fewest tiles per Winograd chunk (comma-separated to compare)",
    )
    args = parser.parse_args(argv)
    print(f"load average at start: {os.getloadavg()}")
    rng = np.random.default_rng(0)
    print(f"{'layer':6} {'variant':>14} {'wall ms':>9} {'cpu ms':>9} {'GFLOP/s':>8}")
    for name in args.layers.split(","):
        c, f, k, s, p, g, size = LAYERS[name]
        layer = Conv2D(c, f, k, s, p, g, rng=rng)
        x = rng.normal(size=(args.batch, c, size, size)).astype(np.float32)
        dy = rng.normal(size=(args.batch, *layer.output_shape(x.shape[1:]))).astype(np.float32)
        flop = 3 * 2 * args.batch * layer.macs(x.shape[1:])  # forward, dW, dx
        variants = [
            (f"{mib} MiB/{floor}", "im2col", int(mib) << 20, int(floor))
            if int(mib)
            else ("whole", "im2col", 1 << 62, 0)  # one chunk: the floor changes nothing
            for mib in args.chunks.split(",")
            for floor in (args.min_columns.split(",") if int(mib) else ["0"])
        ]
        if winograd.supports(k, k, s):
            variants += [
                (f"winograd/{tiles}", "winograd", Conv2D.chunk_bytes, int(tiles))
                for tiles in args.winograd_tiles.split(",")
            ]
        for label, algorithm, chunk, floor in variants:
            layer.algorithm, layer.chunk_bytes = algorithm, chunk
            if algorithm == "winograd":
                winograd.min_chunk_tiles = floor
            else:
                layer.min_chunk_columns = floor
            workspace.release()  # each variant starts without the last one's buffers
            wall, cpu = time_layer(layer, x, dy, args.repeats)
            print(
                f"{name:6} {label:>14} {1e3 * wall:9.1f} {1e3 * cpu:9.1f} {flop / wall / 1e9:8.1f}"
            )
    print(f"load average at end: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
