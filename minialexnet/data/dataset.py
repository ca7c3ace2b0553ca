"""A labelled set of images, and the two training-set statistics the paper's input pipeline uses.

``ImageDataset`` holds images as uint8 NCHW ``(N, 3, S, S)`` (in memory or an ``np.memmap``
of a prepared cache file), labels int64 ``(N,)`` and the class names.

``DatasetStats`` holds what §2 and §4.1 need from the *training* set:

- the mean image (§2: "subtracting the mean activity over the training set from each
  pixel"), float32 ``(3, S, S)``;
- the eigen-decomposition of the 3x3 covariance of RGB pixel values (§4.1, PCA colour
  noise): eigenvalues float32 ``(3,)`` (largest first) and eigenvectors float32 ``(3, 3)``
  whose *columns* are the eigenvectors, both for pixel values in 0..255.

``compute_stats`` computes both in one streaming pass over chunks of images, so a memmap of
100k+ ImageNet images (~20 GB at S=256) never has to fit in memory.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from minialexnet.checks import check_labels, check_positive_int

DEFAULT_STATS_CHUNK = 32
"""Images per chunk in ``compute_stats``: 32 images of 3x256x256 in float64 is 50 MB."""


class ImageDataset:
    """Images, labels and class names of one split (train or validation).

    Arguments:
        images: uint8 array ``(N, 3, S, S)``, RGB, NCHW, square; an ``np.memmap`` works and
            stays on disk (only the images a batch needs are read).
        labels: integer array ``(N,)`` of class indices in ``[0, len(class_names))``; stored
            as int64.
        class_names: list of ``num_classes`` human-readable names; label ``k`` is
            ``class_names[k]``.

    Attributes: ``images``, ``labels``, ``class_names``; ``len(dataset)`` is N,
    ``dataset.image_size`` is S and ``dataset.num_classes`` is ``len(class_names)``.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, class_names) -> None:
        if not isinstance(images, np.ndarray):
            raise TypeError(f"ImageDataset expects images as a NumPy uint8 array (N, 3, S, S) "
                            f"(or an np.memmap), got {type(images).__name__}; convert with "
                            f"np.asarray(images, dtype=np.uint8)")
        if images.dtype != np.uint8:
            raise TypeError(f"ImageDataset expects uint8 images with values 0..255, got dtype "
                            f"{images.dtype}; convert with np.clip(x, 0, 255).astype(np.uint8)")
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[2] != images.shape[3]:
            raise ValueError(f"ImageDataset expects square RGB images shaped (N, 3, S, S) "
                             f"(NCHW), got shape {images.shape}; an (N, S, S, 3) array needs "
                             f"images.transpose(0, 3, 1, 2)")
        if images.shape[0] == 0 or images.shape[2] == 0:
            raise ValueError(f"ImageDataset got no images (shape {images.shape})")
        if isinstance(class_names, str) or not all(isinstance(c, str) for c in class_names):
            raise TypeError(f"class_names must be a list of strings, got {class_names!r}")
        class_names = list(class_names)
        if not class_names:
            raise ValueError("class_names is empty: give one name per class")
        if len(set(class_names)) != len(class_names):
            raise ValueError(f"class_names must be distinct, got {class_names}")
        labels = np.asarray(labels)
        if not np.issubdtype(labels.dtype, np.integer):
            raise TypeError(f"ImageDataset expects integer labels, got dtype {labels.dtype}")
        labels = check_labels(labels.astype(np.int64, copy=False), images.shape[0],
                              len(class_names), "ImageDataset")
        self.images = images
        self.labels = labels
        self.class_names = class_names

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def image_size(self) -> int:
        """S, the side of the stored square images."""
        return self.images.shape[2]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def subset(self, indices) -> "ImageDataset":
        """A new dataset of the images at ``indices`` (int array or list), same class names.

        The selected images are copied into memory (from a memmap too), in the given order.
        """
        indices = np.asarray(indices)
        if indices.ndim != 1 or not (np.issubdtype(indices.dtype, np.integer) or indices.size == 0):
            raise ValueError(f"subset expects a 1-D array of integer indices, got dtype "
                             f"{indices.dtype} and shape {indices.shape}")
        indices = indices.astype(np.int64, copy=False)
        if indices.size and (indices.min() < 0 or indices.max() >= len(self)):
            raise IndexError(f"subset indices must lie in [0, {len(self)}), got values from "
                             f"{indices.min()} to {indices.max()}")
        return ImageDataset(np.ascontiguousarray(self.images[indices]), self.labels[indices],
                            self.class_names)

    def __repr__(self) -> str:
        kind = "memmap" if isinstance(self.images, np.memmap) else "in memory"
        return (f"ImageDataset({len(self)} images of 3x{self.image_size}x{self.image_size} "
                f"({kind}), {self.num_classes} classes)")


@dataclass
class DatasetStats:
    """Training-set statistics for mean subtraction (§2) and PCA colour noise (§4.1).

    Fields (pixel values in 0..255):
        mean: float32 ``(3, S, S)``, the mean image over the training set.
        pca_eigvals: float32 ``(3,)``, eigenvalues ``lambda_i`` of the 3x3 covariance of RGB
            pixel values over all training pixels, largest first, >= 0.
        pca_eigvecs: float32 ``(3, 3)``, column ``i`` is the unit eigenvector ``p_i`` of
            ``lambda_i`` (so ``cov = P @ diag(lambda) @ P.T``).

    Checkpoints store the three arrays as ``data/mean``, ``data/pca_eigvals`` and
    ``data/pca_eigvecs``; rebuild with ``DatasetStats(mean=..., pca_eigvals=...,
    pca_eigvecs=...)``.
    """

    mean: np.ndarray
    pca_eigvals: np.ndarray
    pca_eigvecs: np.ndarray

    def __post_init__(self) -> None:
        self.mean = np.asarray(self.mean, dtype=np.float32)
        self.pca_eigvals = np.asarray(self.pca_eigvals, dtype=np.float32)
        self.pca_eigvecs = np.asarray(self.pca_eigvecs, dtype=np.float32)
        if self.mean.ndim != 3 or self.mean.shape[0] != 3 or self.mean.shape[1] != self.mean.shape[2]:
            raise ValueError(f"DatasetStats.mean must be the mean image shaped (3, S, S), got "
                             f"shape {self.mean.shape}")
        if self.pca_eigvals.shape != (3,) or self.pca_eigvecs.shape != (3, 3):
            raise ValueError(f"DatasetStats expects pca_eigvals of shape (3,) and pca_eigvecs "
                             f"of shape (3, 3), got {self.pca_eigvals.shape} and "
                             f"{self.pca_eigvecs.shape}")
        if not (np.all(np.isfinite(self.mean)) and np.all(np.isfinite(self.pca_eigvals))
                and np.all(np.isfinite(self.pca_eigvecs))):
            raise ValueError("DatasetStats contains NaN or infinite values; recompute them "
                             "with compute_stats(train_dataset)")

    @property
    def image_size(self) -> int:
        """S, the side of the images the mean image was computed on."""
        return self.mean.shape[1]


def compute_stats(dataset: ImageDataset, max_images: int | None = None,
                  chunk: int = DEFAULT_STATS_CHUNK) -> DatasetStats:
    """Mean image (§2) and RGB-covariance PCA (§4.1) of a training set, in one streaming pass.

    With ``x_n`` the images as float64 and ``q_m`` the M = n*S*S RGB pixel vectors (0..255):

        mean = (1/n) sum_n x_n                                  float32 (3, S, S)
        cov  = (1/M) sum_m q_m q_m^T - mu mu^T,  mu = (1/M) sum_m q_m   (3, 3)
        cov  = P diag(lambda) P^T   (numpy.linalg.eigh; lambda sorted largest first)

    The covariance is the population one (divide by M; M is in the millions, so M - 1 would
    not change a digit). The sums run over chunks of ``chunk`` images in float64; because
    pixel values are integers, every partial sum of ``q q^T`` is an integer below 2**53 for up
    to ~2 million 256x256 images, so float64 holds it exactly and the one-pass formula loses
    nothing to cancellation before the final division.

    ``max_images`` (optional) uses that many images spread evenly over the dataset (indices
    ``k * N // max_images``), not the first ones: prepared datasets are often sorted by class.
    Each eigenvector's sign is fixed (its largest-magnitude component is positive) so the
    result does not depend on the LAPACK build.

    Returns a ``DatasetStats``.
    """
    if not isinstance(dataset, ImageDataset):
        raise TypeError(f"compute_stats expects an ImageDataset, got {type(dataset).__name__}")
    chunk = check_positive_int(chunk, "chunk")
    n_total = len(dataset)
    if max_images is None or max_images >= n_total:
        indices = np.arange(n_total, dtype=np.int64)
    else:
        max_images = check_positive_int(max_images, "max_images")
        indices = np.arange(max_images, dtype=np.int64) * n_total // max_images
    size = dataset.image_size
    image_sum = np.zeros((3, size, size), dtype=np.float64)
    pixel_sum = np.zeros(3, dtype=np.float64)
    pixel_outer = np.zeros((3, 3), dtype=np.float64)
    for start in range(0, len(indices), chunk):
        batch = dataset.images[indices[start:start + chunk]]          # uint8 (b, 3, S, S)
        image_sum += batch.sum(axis=0, dtype=np.float64)
        # Every pixel as one RGB column: (3, b*S*S).
        pixels = batch.transpose(1, 0, 2, 3).reshape(3, -1).astype(np.float64)
        pixel_sum += pixels.sum(axis=1)
        pixel_outer += pixels @ pixels.T
    n_images = len(indices)
    n_pixels = n_images * size * size
    mu = pixel_sum / n_pixels
    cov = pixel_outer / n_pixels - np.outer(mu, mu)
    eigvals, eigvecs = np.linalg.eigh((cov + cov.T) / 2)
    order = np.argsort(eigvals)[::-1]                  # largest first, as PCA is usually read
    eigvals, eigvecs = eigvals[order], eigvecs[:, order]
    eigvals = np.maximum(eigvals, 0.0)                 # round-off can give -1e-13 for a flat channel
    largest = eigvecs[np.argmax(np.abs(eigvecs), axis=0), np.arange(3)]
    eigvecs = eigvecs * np.where(largest < 0, -1.0, 1.0)
    return DatasetStats(mean=(image_sum / n_images).astype(np.float32),
                        pca_eigvals=eigvals.astype(np.float32),
                        pca_eigvecs=eigvecs.astype(np.float32))
