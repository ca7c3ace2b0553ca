"""Mini-batches of network inputs for one epoch: shuffling, augmentation (§4.1), prefetching.

    loader = BatchLoader(train_set, 128, 227, stats, train=True, rng=rng, workers=2)
    for epoch in range(epochs):
        for x, y in loader:          # x float32 (B, 3, 227, 227), y int64 (B,)
            ...
        save_checkpoint(..., meta={"rng": rng.bit_generator.state, ...})

Determinism and resume. Everything random about an epoch -- the permutation of the training
set, every crop offset, flip and colour-noise coefficient -- is drawn from ``rng`` in the main
thread, in one go, when the epoch's iteration starts (``iter(loader)``, i.e. the ``for``
line). The batches are then a pure function of those draws, so

- the result is bit-identical for any number of ``workers`` (threads only do the arithmetic);
- the state of the data pipeline between epochs is exactly ``rng.bit_generator.state``: the
  trainer saves it in the checkpoint at an epoch boundary, and a resumed run that restores it
  (``rng.bit_generator.state = saved``) produces the same batches as an uninterrupted run.
  (The trainer may share ``rng`` with other consumers, e.g. dropout, as long as it consumes
  it in the same order on resume.)

Threads: with ``workers > 0`` up to ``2 * workers`` batches are computed ahead in a thread
pool while the caller trains on the current one; the Numba kernel releases the GIL, so the
threads run truly in parallel with each other and with NumPy's BLAS. Each batch is a new
array that the caller may keep.
"""
from __future__ import annotations

import collections
import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from minialexnet.checks import check_positive_int, check_real, check_rng
from minialexnet.data.augment import (PCA_STD, CropPlan, apply_plan, center_plan,
                                      check_images_and_stats, draw_train_plan,
                                      ten_crop_plan)
from minialexnet.data.dataset import DatasetStats, ImageDataset
from minialexnet.preprocessing import check_preprocessing, subtracted_mean, to_network_order

CROPS = ("random", "center", "ten")


class BatchLoader:
    """Iterate over ``(x, y)`` mini-batches of a dataset, one epoch per ``for`` loop.

    Arguments:
        dataset: an ``ImageDataset`` (uint8 ``(N, 3, S, S)``, in memory or memmap).
        batch_size: images per batch (the paper: 128).
        crop_size: side of the network input (227 for the paper's net, 59 for "mini").
        stats: the *training* set's ``DatasetStats`` (mean image ``(3, S, S)``, RGB PCA).
        train: True: shuffle every epoch (``rng.permutation``) and augment (``crops="random"``:
            §4.1 random crop, flip and PCA colour noise); False: the dataset's order, no
            randomness (``crops="center"`` or ``"ten"``).
        rng: ``numpy.random.Generator``, the only source of randomness; required when
            ``train`` (see the module docstring for checkpoint/resume).
        drop_last: drop the last, smaller batch of an epoch (default False: every image
            is used once per epoch).
        workers: 0 = compute each batch when asked; k > 0 = k background threads.
        crops: ``"random"`` (the default when ``train``), ``"center"`` (the default
            otherwise) or ``"ten"`` (the ten crops of §4.1 test time).
        pca_std: standard deviation of the colour-noise coefficients (§4.1: 0.1; 0 = off).
        preprocessing: the network's (``model.config["preprocessing"]``,
            ``minialexnet.preprocessing``); default: the paper's, RGB minus ``stats.mean``.
            With a mean pixel (BVLC: BGR minus (104, 117, 123)) that pixel is subtracted
            instead of the mean image, and the channels are put in the network's order
            last; ``stats`` may then be ``None`` for evaluation (``train=False``).

    Yields ``x`` float32 ``(B, 3, crop, crop)`` (for ``crops="ten"``: ``(B, 10, 3, crop,
    crop)``, crops in ``augment.TEN_CROP_ORDER``) and ``y`` int64 ``(B,)``, mean-subtracted
    as in §2. ``len(loader)`` is the number of batches per epoch.
    """

    def __init__(self, dataset: ImageDataset, batch_size: int, crop_size: int,
                 stats: DatasetStats, train: bool, rng: np.random.Generator | None = None,
                 drop_last: bool = False, workers: int = 0, crops: str | None = None,
                 pca_std: float = PCA_STD, preprocessing: dict | None = None) -> None:
        if not isinstance(dataset, ImageDataset):
            raise TypeError(f"BatchLoader expects an ImageDataset, got {type(dataset).__name__}")
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.workers = check_positive_int(workers, "workers", minimum=0)
        self.preprocessing = check_preprocessing(preprocessing)
        if stats is None and not train and self.preprocessing["mean"] != "image":
            stats = _no_statistics(dataset.image_size)   # a mean pixel needs none
        check_images_and_stats(dataset.images, crop_size, stats, "BatchLoader")
        crops = crops if crops is not None else ("random" if train else "center")
        if crops not in CROPS:
            raise ValueError(f"crops must be one of {CROPS}, got {crops!r}")
        if train != (crops == "random"):
            raise ValueError(f"crops={crops!r} does not go with train={train}: training uses "
                             f"random crops (§4.1), evaluation 'center' or 'ten'")
        if train:                                # shuffling and augmentation draw from rng
            check_rng(rng, "BatchLoader(train=True)")
        if drop_last and self.batch_size > len(dataset):
            raise ValueError(f"batch_size={self.batch_size} is larger than the dataset "
                             f"({len(dataset)} images) and drop_last=True, so an epoch would "
                             f"have no batch at all; use batch_size <= {len(dataset)} or "
                             f"drop_last=False")
        check_real(pca_std, "pca_std", low=0.0)
        self.dataset, self.crop_size, self.stats = dataset, int(crop_size), stats
        self.train, self.rng, self.drop_last = bool(train), rng, bool(drop_last)
        self.crops, self.pca_std = crops, float(pca_std)
        self._mean = subtracted_mean(self.preprocessing, stats.mean, dataset.image_size)

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def _epoch_plan(self) -> tuple[np.ndarray, CropPlan | None]:
        """All of one epoch's choices: the image order and, for training, each image's crop.

        Training draws the permutation, then ``draw_train_plan`` for every position of the
        epoch, from ``rng``: this is the loader's only use of ``rng``.
        """
        n, size = len(self.dataset), self.dataset.image_size
        if not self.train:
            return np.arange(n, dtype=np.int64), None
        order = self.rng.permutation(n).astype(np.int64, copy=False)
        return order, draw_train_plan(self.rng, n, size, self.crop_size, self.stats,
                                      self.pca_std)

    def _make_batch(self, indices: np.ndarray, plan: CropPlan | None) -> np.ndarray:
        """x for the images ``indices`` (plan rows aligned with them when training)."""
        images, size, crop, mean = (self.dataset.images, self.dataset.image_size,
                                    self.crop_size, self._mean)
        if self.crops == "random":
            x = apply_plan(images, indices, plan, mean, crop)
        elif self.crops == "center":
            x = apply_plan(images, indices, center_plan(len(indices), size, crop), mean, crop)
        else:
            ten = ten_crop_plan(size, crop)                   # image-major: row b*10 + k
            x = apply_plan(images, np.repeat(indices, 10),
                           ten[np.tile(np.arange(10), len(indices))], mean, crop)
        x = to_network_order(x, self.preprocessing)         # BGR networks (BVLC)
        return x.reshape(len(indices), 10, 3, crop, crop) if self.crops == "ten" else x

    def __iter__(self):
        order, plan = self._epoch_plan()            # every random draw of the epoch, here
        stops = range(0, len(self) * self.batch_size, self.batch_size)
        jobs = [(order[s:s + self.batch_size], None if plan is None else plan[s:s + self.batch_size])
                for s in stops]
        labels = self.dataset.labels
        if self.workers == 0:
            return ((self._make_batch(idx, p), labels[idx]) for idx, p in jobs)
        return self._prefetched(jobs, labels)

    def _prefetched(self, jobs, labels):
        """Yield the batches in order while up to ``2 * workers`` are computed ahead."""
        pending = collections.deque()
        with ThreadPoolExecutor(max_workers=self.workers,
                                thread_name_prefix="minialexnet-loader") as pool:
            try:
                for idx, p in jobs:
                    pending.append((pool.submit(self._make_batch, idx, p), idx))
                    if len(pending) >= 2 * self.workers:
                        future, ready = pending.popleft()
                        yield future.result(), labels[ready]
                while pending:
                    future, ready = pending.popleft()
                    yield future.result(), labels[ready]
            finally:                                # the caller stopped early: drop the rest
                for future, _ in pending:
                    future.cancel()

    def __repr__(self) -> str:
        return (f"BatchLoader({len(self.dataset)} images, batch_size={self.batch_size}, "
                f"crop_size={self.crop_size}, crops={self.crops!r}, workers={self.workers}, "
                f"{len(self)} batches per epoch)")


def _no_statistics(image_size: int) -> DatasetStats:
    """Stand-in statistics for evaluating a network that subtracts a mean pixel: no mean
    image is read and no colour noise is drawn at test time."""
    return DatasetStats(mean=np.zeros((3, image_size, image_size), dtype=np.float32),
                        pca_eigvals=np.zeros(3, dtype=np.float32),
                        pca_eigvecs=np.eye(3, dtype=np.float32))
