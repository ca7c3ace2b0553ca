"""Decode a dataset into minialexnet's cache ahead of training (§2's 256x256 down-sampling).

    python -m minialexnet.prepare --data-dir /data/imagenet --subset imagenet-100 --image-size 64
    minialexnet-prepare --data-dir ~/Pictures/my-classes --image-size 64 --workers 8

Training does the same on its first run; preparing ahead lets the decoding (hours for the
full ImageNet at S = 256) run on its own, be interrupted and resumed (run the same command
again), and report unreadable files before any training starts. The cache location, formats
and checks are described in ``minialexnet.data.cache`` and ``minialexnet.data.imagenet``;
the data folder is only read.

Exit status: 0 on success, 2 for a problem with the data or the arguments (a message, no
traceback), 130 when interrupted.
"""

from __future__ import annotations

import argparse
import sys
import time

from minialexnet.cli import add_data_arguments
from minialexnet.data.folders import DataError
from minialexnet.data.imagenet import open_dataset


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m minialexnet.prepare",
        description="Decode every image once (shorter side to S, centre S x S crop) into the "
        "dataset cache, with the mean image and RGB PCA of the training set.",
    )
    add_data_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m minialexnet.prepare`` / ``minialexnet-prepare``."""
    args = build_parser().parse_args(argv)
    started = time.monotonic()
    try:
        train, val, stats = open_dataset(
            args.data_dir,
            subset=args.subset,
            image_size=args.image_size,
            val_fraction=args.val_fraction,
            seed=args.seed,
            workers=args.workers,
            cache_dir=args.cache_dir,
            val_labels=args.val_labels,
        )
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "interrupted: finished chunks are kept; run the same command again to resume",
            file=sys.stderr,
        )
        return 130
    mean_rgb = ", ".join(f"{v:.1f}" for v in stats.mean.reshape(3, -1).mean(axis=1))
    eigvals = ", ".join(f"{v:.1f}" for v in stats.pca_eigvals)
    print(
        f"ready: {len(train)} training and {len(val)} validation images of "
        f"3x{train.image_size}x{train.image_size}, {train.num_classes} classes "
        f"({time.monotonic() - started:.1f} s)"
    )
    print(f"training-set mean RGB ({mean_rgb}); RGB PCA eigenvalues ({eigvals})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
