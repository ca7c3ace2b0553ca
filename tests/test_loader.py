"""BatchLoader: epochs visit every image once, determinism across workers, resume, errors."""

import threading

import numpy as np
import pytest

from minialexnet.data.augment import center_crop, ten_crop
from minialexnet.data.dataset import DatasetStats, ImageDataset
from minialexnet.data.loader import BatchLoader


def _indexed_dataset(n=23, size=8):
    """Image k is filled with the value k and has label k, so x and y can be cross-checked."""
    images = np.broadcast_to(
        np.arange(n, dtype=np.uint8)[:, None, None, None], (n, 3, size, size)
    ).copy()
    return ImageDataset(images, np.arange(n), [f"image{k}" for k in range(n)])


def _random_dataset(n=30, size=10, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 3, size, size), dtype=np.uint8)
    return ImageDataset(images, rng.integers(0, 4, size=n), ["a", "b", "c", "d"])


def _stats(size, mean=0.0, eigvals=(0.0, 0.0, 0.0)):
    return DatasetStats(
        mean=np.full((3, size, size), mean, dtype=np.float32),
        pca_eigvals=np.asarray(eigvals, dtype=np.float32),
        pca_eigvecs=np.eye(3),
    )


def _epoch(loader):
    return [(x.copy(), y.copy()) for x, y in loader]


@pytest.mark.parametrize("workers", [0, 2])
def test_train_epoch_visits_every_image_once(workers):
    dataset = _indexed_dataset()
    loader = BatchLoader(
        dataset,
        5,
        6,
        _stats(8),
        train=True,
        rng=np.random.default_rng(0),
        workers=workers,
        pca_std=0.0,
    )
    assert len(loader) == 5  # ceil(23 / 5)
    for _ in range(2):
        batches = _epoch(loader)
        assert [len(y) for _, y in batches] == [5, 5, 5, 5, 3]
        seen = np.concatenate([y for _, y in batches])
        np.testing.assert_array_equal(np.sort(seen), np.arange(23))
        assert not np.array_equal(seen, np.arange(23))  # shuffled
        for x, y in batches:  # each x is its own image
            assert x.dtype == np.float32 and x.shape[1:] == (3, 6, 6) and y.dtype == np.int64
            np.testing.assert_array_equal(x, np.broadcast_to(y[:, None, None, None], x.shape))


def test_epochs_are_shuffled_differently():
    loader = BatchLoader(
        _indexed_dataset(), 23, 6, _stats(8), train=True, rng=np.random.default_rng(1)
    )
    [(_, first)], [(_, second)] = _epoch(loader), _epoch(loader)  # one batch per epoch
    assert not np.array_equal(first, second)


def test_drop_last_drops_only_the_incomplete_batch():
    loader = BatchLoader(
        _indexed_dataset(),
        5,
        6,
        _stats(8),
        train=True,
        rng=np.random.default_rng(0),
        drop_last=True,
    )
    assert len(loader) == 4
    seen = np.concatenate([y for _, y in loader])
    assert len(seen) == 20 and len(set(seen.tolist())) == 20


def test_same_batches_for_any_number_of_workers():
    dataset, stats = _random_dataset(), _stats(10, mean=100.0, eigvals=(900.0, 90.0, 9.0))
    runs = []
    for workers in (0, 1, 2, 3):
        loader = BatchLoader(
            dataset, 7, 7, stats, train=True, rng=np.random.default_rng(42), workers=workers
        )
        runs.append(_epoch(loader) + _epoch(loader))  # two epochs each
    for run in runs[1:]:
        assert len(run) == len(runs[0])
        for (x, y), (x0, y0) in zip(run, runs[0]):
            np.testing.assert_array_equal(x, x0)
            np.testing.assert_array_equal(y, y0)


def test_resume_from_saved_generator_state_is_bit_identical():
    dataset, stats = _random_dataset(), _stats(10, eigvals=(900.0, 90.0, 9.0))
    rng = np.random.default_rng(7)
    loader = BatchLoader(dataset, 8, 7, stats, train=True, rng=rng, workers=1)
    _epoch(loader)
    saved = rng.bit_generator.state  # what the checkpoint stores
    uninterrupted = _epoch(loader) + _epoch(loader)

    resumed_rng = np.random.default_rng(12345)  # a fresh process, other seed
    resumed_rng.bit_generator.state = saved
    resumed = BatchLoader(dataset, 8, 7, stats, train=True, rng=resumed_rng, workers=1)
    again = _epoch(resumed) + _epoch(resumed)
    for (x, y), (x0, y0) in zip(again, uninterrupted):
        np.testing.assert_array_equal(x, x0)
        np.testing.assert_array_equal(y, y0)


def test_an_epochs_draws_happen_when_iteration_starts():
    # The generator's state after iter() does not depend on how far the epoch is consumed.
    rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
    dataset, stats = _random_dataset(), _stats(10)
    iterator = iter(BatchLoader(dataset, 4, 7, stats, train=True, rng=rng_a, workers=2))
    next(iterator)
    iterator.close()
    list(BatchLoader(dataset, 4, 7, stats, train=True, rng=rng_b))
    assert rng_a.bit_generator.state == rng_b.bit_generator.state


def test_stopping_early_leaves_no_thread_behind():
    dataset, stats = _random_dataset(n=60), _stats(10)
    before = threading.active_count()
    for _x, _ in BatchLoader(
        dataset, 4, 7, stats, train=True, rng=np.random.default_rng(0), workers=3
    ):
        break
    assert threading.active_count() == before


@pytest.mark.parametrize("workers", [0, 2])
def test_evaluation_crops_in_dataset_order(workers):
    dataset = _random_dataset(n=11)
    stats = _stats(10, mean=50.0)
    center = BatchLoader(dataset, 4, 7, stats, train=False, workers=workers)
    xs, ys = zip(*_epoch(center))
    np.testing.assert_array_equal(np.concatenate(ys), dataset.labels)
    np.testing.assert_array_equal(np.concatenate(xs), center_crop(dataset.images, 7, stats))

    ten = BatchLoader(dataset, 4, 7, stats, train=False, crops="ten", workers=workers)
    xs = np.concatenate([x for x, _ in ten])  # (N, 10, 3, 7, 7), image-major
    assert xs.shape == (11, 10, 3, 7, 7)
    np.testing.assert_array_equal(xs, ten_crop(dataset.images, 7, stats).transpose(1, 0, 2, 3, 4))


def test_memmap_dataset(tmp_path):
    dataset = _random_dataset(n=12)
    np.save(tmp_path / "images.npy", dataset.images)
    on_disk = ImageDataset(
        np.load(tmp_path / "images.npy", mmap_mode="r"), dataset.labels, dataset.class_names
    )
    stats = _stats(10, eigvals=(100.0, 10.0, 1.0))
    a = _epoch(BatchLoader(on_disk, 5, 8, stats, train=True, rng=np.random.default_rng(0)))
    b = _epoch(BatchLoader(dataset, 5, 8, stats, train=True, rng=np.random.default_rng(0)))
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


def test_batch_larger_than_dataset():
    dataset, stats = _random_dataset(n=6), _stats(10)
    loader = BatchLoader(dataset, 8, 7, stats, train=True, rng=np.random.default_rng(0))
    assert len(loader) == 1 and len(next(iter(loader))[1]) == 6  # one short batch is fine
    with pytest.raises(
        ValueError,
        match=r"batch_size=8 is larger than the dataset \(6 images\)"
        r".*use batch_size <= 6 or drop_last=False",
    ):
        BatchLoader(dataset, 8, 7, stats, train=True, rng=np.random.default_rng(0), drop_last=True)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(train=True), TypeError, r"BatchLoader\(train=True\) needs a numpy.random.Generator"),
        (dict(train=True, rng=0), TypeError, "default_rng"),
        (dict(train=True, rng=np.random.default_rng(), crops="center"), ValueError, "does not go"),
        (dict(train=False, crops="random"), ValueError, "does not go"),
        (dict(train=False, crops="five"), ValueError, "crops must be one of"),
        (dict(train=False, workers=-1), ValueError, "workers must be"),
        (dict(train=False, batch_size=0), ValueError, "batch_size must be"),
        (
            dict(train=False, pca_std=float("nan")),
            ValueError,
            "pca_std must be a finite number >= 0",
        ),
        (dict(train=False, crop_size=11), ValueError, "crop size 11 is larger"),
        (dict(train=False, stats=_stats(12)), ValueError, "compute_stats"),
    ],
)
def test_errors(kwargs, error, message):
    arguments = dict(dataset=_random_dataset(n=6), batch_size=2, crop_size=7, stats=_stats(10))
    arguments.update(kwargs)
    with pytest.raises(error, match=message):
        BatchLoader(**arguments)
