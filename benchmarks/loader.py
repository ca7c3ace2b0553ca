"""Throughput of the training input pipeline: BatchLoader with the full §4.1 augmentation.

    python benchmarks/loader.py [--images 2000] [--size 256] [--crop 227] [--batch 128]
                                [--workers 0,1,2] [--epochs 3] [--storage array,memmap]

Random uint8 images ``(N, 3, S, S)`` (default 2,000 of 256x256, as stored for the paper's
network) are held in memory (``array``) or in an ``np.memmap`` file in a temporary folder
(``memmap``, as ``minialexnet.data.imagenet`` serves a prepared cache; the file is read once
beforehand so the page cache is warm and the number measures the pipeline, not the disk).
Each row iterates whole epochs of a training ``BatchLoader`` (shuffle, random 227x227 crop,
flip, PCA colour noise, mean subtraction) and reports images per second (median over
``--epochs`` epochs, after one untimed batch that loads Numba's compiled kernel), with the
readable NumPy reference of the same augmentation (``augment.apply_plan_numpy``) and the
one streaming pass of ``compute_stats`` (mean image and RGB covariance, §2/§4.1) as the
first rows. The machine's load average is printed too: on a shared machine, compare rows of
one run, not numbers of different runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from minialexnet.data.augment import apply_plan_numpy, draw_train_plan  # noqa: E402
from minialexnet.data.dataset import ImageDataset, compute_stats  # noqa: E402
from minialexnet.data.loader import BatchLoader  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=2000, help="images per epoch")
    parser.add_argument("--size", type=int, default=256, help="stored image side S")
    parser.add_argument("--crop", type=int, default=227, help="network input side")
    parser.add_argument("--batch", type=int, default=128, help="images per batch")
    parser.add_argument("--workers", default="0,1,2", help="comma-separated worker counts")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per row")
    parser.add_argument("--storage", default="array,memmap", help="array and/or memmap")
    return parser.parse_args(argv)


def make_images(n: int, size: int, storage: str, folder: str) -> np.ndarray:
    """Random uint8 images (n, 3, size, size), in memory or in a warm memmap file."""
    rng = np.random.default_rng(0)
    shape = (n, 3, size, size)
    if storage == "array":
        return rng.integers(0, 256, size=shape, dtype=np.uint8)
    images = np.lib.format.open_memmap(
        os.path.join(folder, "images.npy"), mode="w+", dtype=np.uint8, shape=shape
    )
    for start in range(0, n, 256):
        part = images[start : start + 256]
        part[...] = rng.integers(0, 256, size=part.shape, dtype=np.uint8)
    images.flush()
    del images
    images = np.load(os.path.join(folder, "images.npy"), mmap_mode="r")
    images.sum(dtype=np.uint64)  # read it once: warm page cache
    return images


def time_epochs(loader: BatchLoader, epochs: int) -> float:
    """Median images per second over ``epochs`` full epochs."""
    next(iter(loader))  # compile / load the cached kernel
    rates = []
    for _ in range(epochs):
        start = time.perf_counter()
        seen = sum(len(y) for _, y in loader)
        rates.append(seen / (time.perf_counter() - start))
    return statistics.median(rates)


def time_numpy_reference(dataset: ImageDataset, args, stats) -> float:
    """Images per second of the readable NumPy augmentation on a few batches."""
    rng = np.random.default_rng(0)
    batches = max(1, min(4, len(dataset) // args.batch))
    start = time.perf_counter()
    for _ in range(batches):
        indices = rng.integers(0, len(dataset), size=args.batch)
        plan = draw_train_plan(rng, args.batch, args.size, args.crop, stats)
        apply_plan_numpy(dataset.images, indices, plan, stats.mean, args.crop)
    return batches * args.batch / (time.perf_counter() - start)


def main(argv=None) -> int:
    args = parse_args(argv)
    workers = [int(w) for w in args.workers.split(",")]
    storages = args.storage.split(",")
    print(
        f"BatchLoader throughput: {args.images} random {args.size}x{args.size} images -> "
        f"{args.crop}x{args.crop} crops, batch {args.batch}, train=True (crop, flip, PCA "
        f"colour noise, mean subtraction)"
    )
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start\n")
    print(f"{'storage':<8} {'pipeline':<22} {'images/s':>9} {'ms/batch':>9}")
    with tempfile.TemporaryDirectory() as folder:
        for storage in storages:
            images = make_images(args.images, args.size, storage, folder)
            dataset = ImageDataset(images, np.zeros(args.images, dtype=np.int64), ["random"])
            start = time.perf_counter()
            stats = compute_stats(dataset)
            rate = args.images / (time.perf_counter() - start)
            print(f"{storage:<8} {'compute_stats':<22} {rate:9.0f} {'':>9}", flush=True)
            rate = time_numpy_reference(dataset, args, stats)
            print(
                f"{storage:<8} {'NumPy reference':<22} {rate:9.0f} "
                f"{1000 * args.batch / rate:9.1f}",
                flush=True,
            )
            for count in workers:
                loader = BatchLoader(
                    dataset,
                    args.batch,
                    args.crop,
                    stats,
                    train=True,
                    rng=np.random.default_rng(0),
                    workers=count,
                )
                rate = time_epochs(loader, args.epochs)
                print(
                    f"{storage:<8} {f'Numba, workers={count}':<22} {rate:9.0f} "
                    f"{1000 * args.batch / rate:9.1f}",
                    flush=True,
                )
            del dataset, images
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
