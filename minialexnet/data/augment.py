"""The paper's input pipeline on uint8 NCHW batches: mean subtraction (§2) and augmentation (§4.1).

Every function turns stored uint8 images ``(B, 3, S, S)`` into float32 network inputs
``(..., 3, crop, crop)`` in one fused pass per output pixel:

    out[b, c, i, j] = (image[c, top + i, col(j)] - mean[c, top + i, col(j)]) + shift[b, c]
    col(j) = left + j                     (no flip)
    col(j) = left + crop - 1 - j          (horizontal flip)

- §2: the mean image of the training set is cropped at the same place (and flipped the same
  way) as the image, i.e. the mean is subtracted before cropping, as the paper subtracts it
  from each 256x256 image.
- §4.1, training: a random ``crop x crop`` patch (``top, left`` uniform in ``0..S-crop``; 227
  of 256 in the paper, whose "224" breaks conv1's arithmetic, docs/design.md §3), a horizontal
  flip with probability 1/2, and PCA colour noise: every pixel of image ``b`` gets the same
  ``shift[b] = P @ (alpha * lambda) / 255`` with ``alpha ~ N(0, 0.1^2)`` (3 values per image,
  redrawn each time the image is used), ``P`` and ``lambda`` the eigenvectors and eigenvalues
  of the training set's RGB covariance (``DatasetStats``).

  Units: the paper's formula is scale-dependent (``lambda`` is a variance, the shift a
  value). We read it for pixel values in [0, 1], as the usual reproductions do (e.g.
  fb.resnet.torch, ClassyVision: eigenvalues 0.2175, 0.0188, 0.0045 of ImageNet in [0, 1]):
  with ``lambda`` from 0..255 values that is ``P @ (alpha * lambda) / 255`` in 0..255 units,
  a shift of a few levels (std ~5.5 along ImageNet's first component). Applied literally to
  0..255 values the shift would be 255 times larger (std ~1,400 levels) and erase the image.
- §4.1, test time: the centre crop, or the ten crops (four corners and the centre, and their
  horizontal reflections) whose softmax outputs the paper averages.

Randomness: ``draw_train_plan`` makes every random choice for a batch from a passed
``numpy.random.Generator`` (offsets, then flips, then alphas); ``apply_plan`` (Numba) and
``apply_plan_numpy`` (the readable reference) then compute the same bytes from that plan.
The Numba kernel is serial and releases the GIL (``nogil=True``) so that the batch loader can
run several at once in threads; it writes into an output allocated by NumPy.
"""
from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from minialexnet.checks import check_positive_int, check_real, check_rng
from minialexnet.data.dataset import DatasetStats

PCA_STD = 0.1
"""Standard deviation of the PCA colour-noise coefficients alpha (§4.1)."""
PIXEL_SCALE = 255.0
"""The paper's colour-noise formula is applied to pixel values divided by this (see above)."""
TEN_CROP_ORDER = ("top-left", "top-right", "bottom-left", "bottom-right", "center",
                  "top-left flipped", "top-right flipped", "bottom-left flipped",
                  "bottom-right flipped", "center flipped")


@dataclass
class CropPlan:
    """Where each output crop comes from, and its colour shift (one row per output crop).

    Fields:
        offsets: int64 ``(B, 2)``, ``(top, left)`` of the crop in the S x S image.
        flips: bool ``(B,)``, True = mirror the crop horizontally.
        shifts: float32 ``(B, 3)``, RGB value added to every pixel (0..255 units); zeros
            when there is no colour noise.
    """

    offsets: np.ndarray
    flips: np.ndarray
    shifts: np.ndarray

    def __len__(self) -> int:
        return self.offsets.shape[0]

    def __getitem__(self, rows) -> "CropPlan":
        """The plan of some rows (a slice or an index array), e.g. one batch of an epoch."""
        return CropPlan(self.offsets[rows], self.flips[rows], self.shifts[rows])


def pca_color_shift(alpha: np.ndarray, stats: DatasetStats) -> np.ndarray:
    """§4.1 colour noise: ``shift[b] = P @ (alpha[b] * lambda) / 255`` for each image b.

    ``alpha``: float ``(B, 3)``, the random coefficients (N(0, 0.1^2) in the paper).
    ``stats``: gives ``P = stats.pca_eigvecs`` (columns are eigenvectors) and
    ``lambda = stats.pca_eigvals`` of the covariance of 0..255 RGB values.
    Returns float32 ``(B, 3)``: the RGB value to add to every pixel of image b, in 0..255
    units (the 1/255 applies the paper's formula to [0, 1] values; see the module docstring).
    Computed in float64 and rounded once.
    """
    alpha = np.asarray(alpha, dtype=np.float64)
    if alpha.ndim != 2 or alpha.shape[1] != 3:
        raise ValueError(f"pca_color_shift expects alpha of shape (B, 3), got {alpha.shape}")
    eigvecs = stats.pca_eigvecs.astype(np.float64)
    eigvals = stats.pca_eigvals.astype(np.float64)
    return ((alpha * eigvals / PIXEL_SCALE) @ eigvecs.T).astype(np.float32)


def draw_train_plan(rng: np.random.Generator, count: int, image_size: int, crop: int,
                    stats: DatasetStats, pca_std: float = PCA_STD) -> CropPlan:
    """Random crops, flips and colour shifts for ``count`` training images (§4.1).

    Draws, in this order: ``offsets`` uniform integers in ``[0, S - crop]`` (``(count, 2)``),
    ``flips`` (``rng.random(count) < 0.5``), ``alpha = pca_std * rng.standard_normal((count,
    3))``. The draws do not depend on ``pca_std`` (0 turns the colour noise off without
    changing the crops), so the same generator state always gives the same crops and flips.
    """
    check_rng(rng, "draw_train_plan")
    count = check_positive_int(count, "count", minimum=0)
    _check_crop(crop, image_size)
    check_real(pca_std, "pca_std", low=0.0)
    offsets = rng.integers(0, image_size - crop + 1, size=(count, 2), dtype=np.int64)
    flips = rng.random(count) < 0.5
    alpha = pca_std * rng.standard_normal((count, 3))
    return CropPlan(offsets, flips, pca_color_shift(alpha, stats))


def center_plan(count: int, image_size: int, crop: int) -> CropPlan:
    """The centre crop of each of ``count`` images: offset ``(S - crop) // 2``, no flip."""
    _check_crop(crop, image_size)
    middle = (image_size - crop) // 2
    return CropPlan(np.full((count, 2), middle, dtype=np.int64), np.zeros(count, dtype=bool),
                    np.zeros((count, 3), dtype=np.float32))


def ten_crop_plan(image_size: int, crop: int) -> CropPlan:
    """The ten test crops of §4.1 of one image, in ``TEN_CROP_ORDER`` (10 rows)."""
    _check_crop(crop, image_size)
    far, middle = image_size - crop, (image_size - crop) // 2
    corners = np.array([[0, 0], [0, far], [far, 0], [far, far], [middle, middle]], dtype=np.int64)
    return CropPlan(np.concatenate([corners, corners]), np.repeat([False, True], 5),
                    np.zeros((10, 3), dtype=np.float32))


def apply_plan_numpy(images: np.ndarray, indices: np.ndarray, plan: CropPlan, mean: np.ndarray,
                     crop: int) -> np.ndarray:
    """Readable reference of ``apply_plan``: one crop per plan row, with NumPy slicing.

    ``images`` uint8 ``(N, 3, S, S)``; ``indices`` int64 ``(B,)``, the image of each plan row;
    ``mean`` float32 ``(3, S, S)``. Returns float32 ``(B, 3, crop, crop)`` (formula in the
    module docstring), bit-identical to ``apply_plan``.
    """
    out = np.empty((len(indices), 3, crop, crop), dtype=np.float32)
    for b, n in enumerate(indices):
        top, left = plan.offsets[b]
        window = (slice(None), slice(top, top + crop), slice(left, left + crop))
        x = images[n][window].astype(np.float32) - mean[window]    # §2, at the crop's place
        x += plan.shifts[b][:, None, None]                          # §4.1 colour noise
        out[b] = x[:, :, ::-1] if plan.flips[b] else x              # §4.1 reflection
    return out


@numba.njit(cache=True, nogil=True)
def _apply_plan_kernel(images, indices, offsets, flips, shifts, mean, out):
    """Numba twin of ``apply_plan_numpy``: out[b] from images[indices[b]] (formula above)."""
    crop = out.shape[2]
    for b in range(out.shape[0]):
        n, top, left = indices[b], offsets[b, 0], offsets[b, 1]
        for c in range(3):
            shift = shifts[b, c]
            for i in range(crop):
                # Row views indexed by the loop counter only: LLVM then vectorizes the j loop
                # (uint8 -> float32 conversion, subtract, add; a reversed store when flipped).
                src = images[n, c, top + i, left:left + crop]
                avg = mean[c, top + i, left:left + crop]
                dst = out[b, c, i]
                if flips[b]:
                    for j in range(crop):
                        dst[crop - 1 - j] = (np.float32(src[j]) - avg[j]) + shift
                else:
                    for j in range(crop):
                        dst[j] = (np.float32(src[j]) - avg[j]) + shift
    return out


def apply_plan(images: np.ndarray, indices: np.ndarray, plan: CropPlan, mean: np.ndarray,
               crop: int, out: np.ndarray | None = None) -> np.ndarray:
    """Crop, flip, shift and mean-subtract, fused (Numba): float32 ``(B, 3, crop, crop)``.

    ``images`` uint8 ``(N, 3, S, S)`` (an ``np.memmap`` is read in place: only the cropped
    rows of the selected images are touched); ``indices`` int64 ``(B,)`` picks the image of
    each plan row (the same image may appear several times, e.g. for ten crops); ``mean``
    float32 ``(3, S, S)``; ``out`` optional float32 ``(B, 3, crop, crop)`` C-contiguous
    buffer to write into. Formula in the module docstring; the inputs are not checked here
    (the public functions and the loader check them).
    """
    if out is None:
        out = np.empty((len(indices), 3, crop, crop), dtype=np.float32)
    # np.asarray: a memmap becomes a plain ndarray view of the same pages (no copy).
    return _apply_plan_kernel(np.asarray(images), np.asarray(indices, dtype=np.int64),
                              plan.offsets, plan.flips, plan.shifts, mean, out)


def random_crop_flip(images: np.ndarray, crop: int, stats: DatasetStats,
                     rng: np.random.Generator, pca_std: float = PCA_STD,
                     out: np.ndarray | None = None) -> np.ndarray:
    """The §4.1 training augmentation of a batch, with §2 mean subtraction, in one pass.

    ``images`` uint8 ``(B, 3, S, S)``; ``stats`` the training set's ``DatasetStats`` (mean
    image ``(3, S, S)``, PCA of RGB); ``rng`` supplies all randomness (``draw_train_plan``).
    Per image: a random ``crop x crop`` window, a horizontal flip with probability 1/2, PCA
    colour noise with ``alpha ~ N(0, pca_std^2)`` (``pca_std=0`` disables it), minus the
    mean image at the same window. Returns float32 ``(B, 3, crop, crop)`` (into ``out`` if
    given).
    """
    _check_batch(images, crop, stats, "random_crop_flip", out, (len(images), 3, crop, crop))
    plan = draw_train_plan(rng, len(images), images.shape[2], crop, stats, pca_std)
    return apply_plan(images, np.arange(len(images)), plan, stats.mean, crop, out)


def center_crop(images: np.ndarray, crop: int, stats: DatasetStats,
                out: np.ndarray | None = None) -> np.ndarray:
    """Test-time input (§4.1): the centre ``crop x crop`` window minus the mean image (§2).

    ``images`` uint8 ``(B, 3, S, S)``; the window starts at ``(S - crop) // 2`` on both axes.
    Returns float32 ``(B, 3, crop, crop)`` (into ``out`` if given).
    """
    _check_batch(images, crop, stats, "center_crop", out, (len(images), 3, crop, crop))
    plan = center_plan(len(images), images.shape[2], crop)
    return apply_plan(images, np.arange(len(images)), plan, stats.mean, crop, out)


def ten_crop(images: np.ndarray, crop: int, stats: DatasetStats,
             out: np.ndarray | None = None) -> np.ndarray:
    """The ten test crops of §4.1, minus the mean image: float32 ``(10, B, 3, crop, crop)``.

    ``out[k, b]`` is crop ``k`` of image ``b`` in ``TEN_CROP_ORDER``: the four corners and the
    centre (offset ``(S - crop) // 2``), then the same five mirrored horizontally. The paper
    averages the network's softmax over the ten.
    """
    batch = len(images)
    _check_batch(images, crop, stats, "ten_crop", out, (10, batch, 3, crop, crop))
    one = ten_crop_plan(images.shape[2], crop)
    plan = one[np.repeat(np.arange(10), batch)]                 # crop-major: row k*B + b
    indices = np.tile(np.arange(batch), 10)
    flat = None if out is None else out.reshape(10 * batch, 3, crop, crop)
    return apply_plan(images, indices, plan, stats.mean, crop, flat).reshape(
        10, batch, 3, crop, crop)


def _check_crop(crop, image_size: int) -> None:
    crop = check_positive_int(crop, "crop")
    if crop > image_size:
        raise ValueError(f"crop size {crop} is larger than the {image_size}x{image_size} "
                         f"images; use a crop <= {image_size} (the paper: 227 of 256, the "
                         f"mini model: 59 of 64) or store larger images")


def check_images_and_stats(images: np.ndarray, crop: int, stats: DatasetStats,
                           who: str) -> None:
    """Raise a clear error unless ``images`` is uint8 ``(B, 3, S, S)``, ``crop <= S`` and
    ``stats`` is a ``DatasetStats`` whose mean image is ``(3, S, S)``."""
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4 \
            or images.shape[1] != 3 or images.shape[2] != images.shape[3]:
        got = (f"dtype {images.dtype} and shape {images.shape}" if isinstance(images, np.ndarray)
               else type(images).__name__)
        raise ValueError(f"{who} expects uint8 images shaped (B, 3, S, S), got {got}")
    if not isinstance(stats, DatasetStats):
        raise TypeError(f"{who} expects the training set's DatasetStats (compute_stats(train_"
                        f"set)), got {type(stats).__name__}")
    size = images.shape[2]
    if stats.image_size != size:
        raise ValueError(f"{who}: the mean image is {stats.image_size}x{stats.image_size} but "
                         f"the images are {size}x{size}; use the statistics of a training set "
                         f"stored at the same size (compute_stats(train_set))")
    _check_crop(crop, size)


def _check_batch(images, crop, stats, who, out, out_shape) -> None:
    check_images_and_stats(images, crop, stats, who)
    if out is not None and (not isinstance(out, np.ndarray) or out.dtype != np.float32
                            or out.shape != out_shape or not out.flags.c_contiguous):
        got = f"{out.dtype} {out.shape}" if isinstance(out, np.ndarray) else type(out).__name__
        raise ValueError(f"{who}: out must be a C-contiguous float32 array of shape "
                         f"{out_shape}, got {got}")
