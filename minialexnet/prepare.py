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

from minialexnet.data.folders import DataError


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (a clear usage error otherwise)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def nonnegative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {value}")
    return value


def fraction(text: str) -> float:
    """argparse type: a number strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must lie strictly between 0 and 1, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m minialexnet.prepare",
        description="Decode every image once (shorter side to S, centre S x S crop) into the "
                    "dataset cache, with the mean image and RGB PCA of the training set.")
    add_data_arguments(parser)
    return parser


def add_data_arguments(parser: argparse.ArgumentParser, image_size_default: int | None = 256
                       ) -> None:
    """The data options shared by prepare, train and evaluate (same names, same meaning)."""
    parser.add_argument("--data-dir", default=None,
                        help="data root: <dir>/train/<class>/ (+ val/), or any folder of class "
                             "folders; default with --subset: $MINIALEXNET_DATA, "
                             "$IMAGENET_ROOT, ~/data/imagenet, ...")
    parser.add_argument("--subset", default=None,
                        help="imagenet-100, imagenet-1k, or a file with one class folder name "
                             "(wnid) per line; default: every class folder")
    parser.add_argument("--image-size", type=positive_int, default=image_size_default,
                        metavar="S",
                        help="side of the stored images (the paper: 256; the mini model: 64)")
    parser.add_argument("--val-labels", default=None, metavar="FILE",
                        help="labels of a flat val/ folder ('filename wnid' lines, Caffe's "
                             "val.txt, Kaggle's LOC_val_solution.csv or the devkit's ground "
                             "truth with meta.mat)")
    parser.add_argument("--val-fraction", type=fraction, default=0.1,
                        help="share of each class held out for validation when there is no "
                             "val/ folder (default 0.1)")
    parser.add_argument("--seed", type=nonnegative_int, default=0,
                        help="seed of that hold-out (default 0)")
    parser.add_argument("--workers", type=positive_int, default=None,
                        help="decoding processes (default: all CPUs)")
    parser.add_argument("--cache-dir", default=None,
                        help="this dataset's cache folder (default: "
                             "~/.cache/minialexnet/datasets/<name>-<subset>-S<S>-<hash>, or "
                             "under $MINIALEXNET_CACHE)")


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m minialexnet.prepare`` / ``minialexnet-prepare``."""
    args = build_parser().parse_args(argv)
    from minialexnet.data.imagenet import open_dataset

    started = time.monotonic()
    try:
        train, val, stats = open_dataset(args.data_dir, subset=args.subset,
                                         image_size=args.image_size,
                                         val_fraction=args.val_fraction, seed=args.seed,
                                         workers=args.workers, cache_dir=args.cache_dir,
                                         val_labels=args.val_labels)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished chunks are kept; run the same command again to resume",
              file=sys.stderr)
        return 130
    mean_rgb = ", ".join(f"{v:.1f}" for v in stats.mean.reshape(3, -1).mean(axis=1))
    eigvals = ", ".join(f"{v:.1f}" for v in stats.pca_eigvals)
    print(f"ready: {len(train)} training and {len(val)} validation images of "
          f"3x{train.image_size}x{train.image_size}, {train.num_classes} classes "
          f"({time.monotonic() - started:.1f} s)")
    print(f"training-set mean RGB ({mean_rgb}); RGB PCA eigenvalues ({eigvals})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
