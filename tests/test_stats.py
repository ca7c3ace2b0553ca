"""ImageDataset validation and DatasetStats / compute_stats (§2 mean image, §4.1 RGB PCA)."""

import numpy as np
import pytest

from minialexnet.data.dataset import DatasetStats, ImageDataset, compute_stats


def _correlated_images(n=13, size=8, seed=0):
    """Random images whose RGB channels are correlated, so the PCA has distinct eigenvalues."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 200, size=(n, 1, size, size))
    noise = (
        rng.integers(0, 56, size=(n, 3, size, size))
        * np.array([1, 2, 3])[None, :, None, None]
        // 3
    )
    return (base + noise).clip(0, 255).astype(np.uint8)


def _dataset(images):
    return ImageDataset(images, np.arange(len(images)) % 2, ["even", "odd"])


def test_two_colours_hand_case():
    # Half the pixels black, half white: mu = 127.5 per channel, every (co)variance 127.5^2,
    # so lambda_1 = 3 * 127.5^2 along (1, 1, 1)/sqrt(3) and the other two are 0.
    images = np.zeros((2, 3, 2, 2), dtype=np.uint8)
    images[0, :, 0, :] = 255
    images[1, :, 1, :] = 255
    stats = compute_stats(_dataset(images))
    np.testing.assert_array_equal(stats.mean, np.full((3, 2, 2), 127.5, dtype=np.float32))
    np.testing.assert_allclose(stats.pca_eigvals, [3 * 127.5**2, 0, 0], atol=1e-3)
    np.testing.assert_allclose(stats.pca_eigvecs[:, 0], np.ones(3) / np.sqrt(3), rtol=1e-6)
    assert stats.mean.dtype == stats.pca_eigvals.dtype == stats.pca_eigvecs.dtype == np.float32


def test_matches_numpy_mean_and_cov():
    images = _correlated_images()
    stats = compute_stats(_dataset(images), chunk=5)
    np.testing.assert_allclose(stats.mean, images.astype(np.float64).mean(axis=0), rtol=1e-6)
    pixels = images.transpose(1, 0, 2, 3).reshape(3, -1).astype(np.float64)
    cov = np.cov(pixels, bias=True)  # population covariance, as documented
    p, lam = stats.pca_eigvecs.astype(np.float64), stats.pca_eigvals.astype(np.float64)
    np.testing.assert_allclose(p @ np.diag(lam) @ p.T, cov, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(lam, np.sort(np.linalg.eigvalsh(cov))[::-1], rtol=1e-6)
    assert lam[0] > lam[1] > lam[2] > 0  # largest first
    np.testing.assert_allclose(p.T @ p, np.eye(3), atol=1e-6)
    # Sign convention: each eigenvector's largest-magnitude component is positive.
    assert all(p[np.argmax(np.abs(p[:, i])), i] > 0 for i in range(3))


@pytest.mark.parametrize("chunk", [1, 4, 13, 100])
def test_chunked_equals_unchunked_exactly(chunk):
    # Integer pixel sums are exact in float64, so the chunk size cannot change a bit.
    dataset = _dataset(_correlated_images())
    whole = compute_stats(dataset, chunk=len(dataset))
    part = compute_stats(dataset, chunk=chunk)
    for name in ("mean", "pca_eigvals", "pca_eigvecs"):
        np.testing.assert_array_equal(getattr(part, name), getattr(whole, name))


def test_memmap_dataset_streams_like_an_array(tmp_path):
    images = _correlated_images(n=9, size=6)
    path = tmp_path / "images.npy"
    np.save(path, images)
    on_disk = _dataset(np.load(path, mmap_mode="r"))
    assert isinstance(on_disk.images, np.memmap)
    a, b = compute_stats(on_disk, chunk=2), compute_stats(_dataset(images))
    np.testing.assert_array_equal(a.mean, b.mean)
    np.testing.assert_array_equal(a.pca_eigvecs, b.pca_eigvecs)


def test_max_images_uses_evenly_spread_images():
    dataset = _dataset(_correlated_images(n=10))
    stats = compute_stats(dataset, max_images=4)  # indices k * 10 // 4 = 0, 2, 5, 7
    expected = compute_stats(dataset.subset([0, 2, 5, 7]))
    np.testing.assert_array_equal(stats.mean, expected.mean)
    np.testing.assert_array_equal(stats.pca_eigvals, expected.pca_eigvals)


def test_flat_image_has_zero_eigenvalues():
    images = np.full((3, 3, 4, 4), 77, dtype=np.uint8)
    stats = compute_stats(_dataset(images))
    np.testing.assert_array_equal(stats.pca_eigvals, np.zeros(3, dtype=np.float32))
    np.testing.assert_array_equal(stats.mean, np.full((3, 4, 4), 77, dtype=np.float32))


def test_dataset_stats_validation():
    good = dict(mean=np.zeros((3, 4, 4)), pca_eigvals=np.ones(3), pca_eigvecs=np.eye(3))
    assert DatasetStats(**good).image_size == 4
    with pytest.raises(ValueError, match=r"\(3, S, S\)"):
        DatasetStats(**{**good, "mean": np.zeros((4, 4, 3))})
    with pytest.raises(ValueError, match="pca_eigvecs"):
        DatasetStats(**{**good, "pca_eigvecs": np.eye(2)})
    with pytest.raises(ValueError, match="NaN"):
        DatasetStats(**{**good, "pca_eigvals": [np.nan, 1, 1]})
    with pytest.raises(TypeError, match="ImageDataset"):
        compute_stats(np.zeros((2, 3, 4, 4), dtype=np.uint8))


def test_image_dataset_basics_and_subset():
    images = _correlated_images(n=6, size=5)
    dataset = ImageDataset(images, np.array([0, 1, 2, 0, 1, 2], dtype=np.int32), ["a", "b", "c"])
    assert (len(dataset), dataset.image_size, dataset.num_classes) == (6, 5, 3)
    assert dataset.labels.dtype == np.int64
    sub = dataset.subset([4, 1])
    np.testing.assert_array_equal(sub.images, images[[4, 1]])
    np.testing.assert_array_equal(sub.labels, [1, 1])
    assert sub.class_names == ["a", "b", "c"]
    with pytest.raises(IndexError, match=r"\[0, 6\)"):
        dataset.subset([0, 6])


@pytest.mark.parametrize(
    "images, labels, names, error, message",
    [
        (np.zeros((2, 3, 4, 4), dtype=np.float32), [0, 1], ["a", "b"], TypeError, "uint8"),
        (np.zeros((2, 4, 4, 3), dtype=np.uint8), [0, 1], ["a", "b"], ValueError, "transpose"),
        (np.zeros((2, 3, 4, 5), dtype=np.uint8), [0, 1], ["a", "b"], ValueError, "square"),
        (np.zeros((2, 3, 4, 4), dtype=np.uint8), [0, 2], ["a", "b"], ValueError, r"\[0, 2\)"),
        (np.zeros((2, 3, 4, 4), dtype=np.uint8), [0], ["a", "b"], ValueError, r"shape \(2,\)"),
        (np.zeros((2, 3, 4, 4), dtype=np.uint8), [0.0, 1.0], ["a", "b"], TypeError, "integer"),
        (np.zeros((2, 3, 4, 4), dtype=np.uint8), [0, 1], ["a", "a"], ValueError, "distinct"),
        (np.zeros((2, 3, 4, 4), dtype=np.uint8), [0, 1], "ab", TypeError, "list of strings"),
        ([[0]], [0], ["a"], TypeError, "NumPy uint8 array"),
    ],
)
def test_image_dataset_errors(images, labels, names, error, message):
    with pytest.raises(error, match=message):
        ImageDataset(images, np.asarray(labels), names)
