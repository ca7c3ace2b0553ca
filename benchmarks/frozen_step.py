"""Time a training step with frozen layers (fine-tuning) against a full one.

    python benchmarks/frozen_step.py [--arch mini] [--batch 32] [--repeats 7] [--warmup 2]

One step = ``CPUEngine.train_step``: forward with dropout, the loss, backward, SGD. Three
settings take turns step by step (so load from other processes spreads over all three):

- ``full``: every layer learns;
- ``frozen to conv5``: ``model.freeze("conv5")``: backward stops at fc6 (no conv backward at
  all, and the conv layers compute no weight gradients);
- ``frozen to fc7``: feature extraction, only fc8 learns: backward is fc8 alone.

The forward pass is the same in all three, so it bounds the saving. Prints medians in
milliseconds and the machine's load average (``os.getloadavg``) before and after: on a
shared machine the absolute numbers move with it, the ratios much less.

Measured on the shared 2-core machine (medians; load average 7.8 for mini, 7.5 -> 6.2 for
paper): mini batch 32: full 103.7 ms, frozen to conv5 55.7 ms (1.9x), frozen to fc7 47.3 ms
(2.2x); paper batch 16: full 1547 ms, frozen to conv5 1000 ms (1.5x), frozen to fc7 501 ms
(3.1x).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from minialexnet.engine import CPUEngine
from minialexnet.model import AlexNet
from minialexnet.optim import SGD

SETTINGS = (("full", None), ("frozen to conv5", "conv5"), ("frozen to fc7", "fc7"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="mini", choices=("mini", "paper"))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    classes = 10 if args.arch == "mini" else 1000
    engines = {}
    for name, upto in SETTINGS:
        model = AlexNet(classes, args.arch, rng=np.random.default_rng(0))
        model.freeze(upto)
        engines[name] = CPUEngine(model, SGD(model, lr=1e-3))
    size = engines["full"].input_size
    x = (rng.standard_normal((args.batch, 3, size, size)) * 50).astype(np.float32)
    y = rng.integers(0, classes, args.batch)
    times = {name: [] for name in engines}
    load_before = os.getloadavg()
    for i in range(args.warmup + args.repeats):
        for name, engine in engines.items():
            start = time.perf_counter()
            engine.train_step(x, y)
            if i >= args.warmup:
                times[name].append(time.perf_counter() - start)
    load_after = os.getloadavg()
    full = statistics.median(times["full"])
    print(
        f"{args.arch} AlexNet, batch {args.batch}, median of {args.repeats} steps; load "
        f"average (1/5/15 min) {load_before[0]:.1f}/{load_before[1]:.1f}/"
        f"{load_before[2]:.1f} before, {load_after[0]:.1f}/{load_after[1]:.1f}/"
        f"{load_after[2]:.1f} after, {os.cpu_count()} CPUs"
    )
    for name, values in times.items():
        median = statistics.median(values)
        print(
            f"  {name:<16} {1000 * median:9.1f} ms  ({full / median:4.2f}x faster than full; "
            f"min {1000 * min(values):.1f} ms)"
        )


if __name__ == "__main__":
    main()
