"""§2 mean subtraction and §4.1 augmentation: hand cases, NumPy reference == Numba, errors."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minialexnet.data import augment
from minialexnet.data.augment import (
    CropPlan,
    apply_plan,
    apply_plan_numpy,
    center_crop,
    draw_train_plan,
    pca_color_shift,
    random_crop_flip,
    ten_crop,
)
from minialexnet.data.dataset import DatasetStats


def _images(n, size, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, 3, size, size), dtype=np.uint8)


def _stats(size, mean=None, eigvals=(0.0, 0.0, 0.0), eigvecs=None):
    mean = np.zeros((3, size, size), dtype=np.float32) if mean is None else mean
    return DatasetStats(
        mean=mean,
        pca_eigvals=np.asarray(eigvals, dtype=np.float32),
        pca_eigvecs=np.eye(3) if eigvecs is None else eigvecs,
    )


def _plan(offsets, flips, shifts=None):
    offsets = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    shifts = np.zeros((len(offsets), 3)) if shifts is None else shifts
    return CropPlan(offsets, np.asarray(flips, dtype=bool), np.asarray(shifts, dtype=np.float32))


@pytest.mark.parametrize("apply", [apply_plan, apply_plan_numpy])
def test_crop_at_known_offset_and_flip_equal_slicing(apply):
    images = _images(2, 9)
    mean = np.zeros((3, 9, 9), dtype=np.float32)
    plan = _plan([[2, 3], [4, 1]], [False, True])
    out = apply(images, np.array([1, 0]), plan, mean, 5)
    np.testing.assert_array_equal(out[0], images[1, :, 2:7, 3:8].astype(np.float32))
    np.testing.assert_array_equal(out[1], images[0, :, 4:9, 1:6][:, :, ::-1].astype(np.float32))
    assert out.dtype == np.float32 and out.shape == (2, 3, 5, 5)


def test_hand_computed_pixels():
    # By hand: image row [10, 20, 30, 40], mean row [1, 2, 3, 4], crop 2 at
    # left=1, shift 0.5 on channel 0: columns 1..2 give (20 - 2) + 0.5 = 18.5 and
    # (30 - 3) + 0.5 = 27.5; flipped: [27.5, 18.5].
    images = np.zeros((1, 3, 4, 4), dtype=np.uint8)
    images[0, 0, 1] = [10, 20, 30, 40]
    mean = np.zeros((3, 4, 4), dtype=np.float32)
    mean[0, 1] = [1, 2, 3, 4]
    shifts = [[0.5, 0, 0], [0.5, 0, 0]]
    plan = _plan([[1, 1], [1, 1]], [False, True], shifts)
    for apply in (apply_plan, apply_plan_numpy):
        out = apply(images, np.array([0, 0]), plan, mean, 2)
        np.testing.assert_array_equal(out[0, 0, 0], [18.5, 27.5])
        np.testing.assert_array_equal(out[1, 0, 0], [27.5, 18.5])
        np.testing.assert_array_equal(out[0, 0, 1], [0.5, 0.5])  # row 2: (0 - 0) + 0.5
        np.testing.assert_array_equal(out[0, 1], np.zeros((2, 2)))  # channel 1: no shift


def test_mean_subtracted_at_the_crops_place_and_flipped_with_it():
    size, crop = 6, 4
    images = np.full((1, 3, size, size), 100, dtype=np.uint8)
    mean = np.arange(3 * size * size, dtype=np.float32).reshape(3, size, size)
    plan = _plan([[1, 2], [1, 2]], [False, True])
    out = apply_plan(images, np.array([0, 0]), plan, mean, crop)
    np.testing.assert_array_equal(out[0], 100 - mean[:, 1:5, 2:6])
    np.testing.assert_array_equal(out[1], (100 - mean[:, 1:5, 2:6])[:, :, ::-1])


def test_ten_crop_corners_centre_and_flips_exactly():
    size, crop, batch = 7, 4, 3
    images = _images(batch, size, seed=1)
    mean = np.random.default_rng(2).uniform(0, 255, size=(3, size, size)).astype(np.float32)
    out = ten_crop(images, crop, _stats(size, mean))
    assert out.shape == (10, batch, 3, crop, crop) and out.dtype == np.float32
    centred = images.astype(np.float32) - mean
    windows = [(0, 0), (0, 3), (3, 0), (3, 3), (1, 1)]  # far = 3, centre = 3 // 2
    for k, (top, left) in enumerate(windows):
        expected = centred[:, :, top : top + crop, left : left + crop]
        np.testing.assert_array_equal(out[k], expected, err_msg=augment.TEN_CROP_ORDER[k])
        np.testing.assert_array_equal(
            out[k + 5], expected[..., ::-1], err_msg=augment.TEN_CROP_ORDER[k + 5]
        )


def test_center_crop_offset_rounds_down():
    size, crop = 8, 5  # (8 - 5) // 2 = 1
    images = _images(2, size)
    mean = np.full((3, size, size), 0.25, dtype=np.float32)
    out = center_crop(images, crop, _stats(size, mean))
    np.testing.assert_array_equal(out, images[:, :, 1:6, 1:6].astype(np.float32) - 0.25)


def test_pca_shift_formula_by_hand():
    # P = I, lambda = (255, 510, 0), alpha = (1, 0.5, 3): shift = alpha * lambda / 255.
    stats = _stats(4, eigvals=(255.0, 510.0, 0.0))
    np.testing.assert_allclose(pca_color_shift(np.array([[1.0, 0.5, 3.0]]), stats), [[1, 1, 0]])
    # A rotated basis: the shift is P @ (alpha * lambda) / 255.
    p = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))[0]
    stats = _stats(4, eigvals=(300.0, 20.0, 5.0), eigvecs=p)
    alpha = np.array([[0.1, -0.2, 0.3], [1.0, 2.0, -1.0]])
    expected = (p.astype(np.float32).astype(np.float64) @ (alpha * [300.0, 20.0, 5.0]).T).T / 255
    np.testing.assert_allclose(pca_color_shift(alpha, stats), expected, rtol=1e-6)


def test_zero_eigenvalues_leave_the_crop_unchanged():
    images = _images(5, 10)
    stats = _stats(
        10,
        mean=np.full((3, 10, 10), 3.0, dtype=np.float32),
        eigvecs=np.linalg.qr(np.random.default_rng(1).normal(size=(3, 3)))[0],
    )
    noisy = random_crop_flip(images, 7, stats, np.random.default_rng(5), pca_std=0.1)
    plain = random_crop_flip(images, 7, stats, np.random.default_rng(5), pca_std=0.0)
    np.testing.assert_array_equal(noisy, plain)


def test_colour_noise_lies_along_the_single_eigenvector():
    size, crop, batch = 10, 7, 6
    images = _images(batch, size)
    direction = np.array([1.0, 2.0, 2.0]) / 3.0
    basis = np.linalg.qr(np.column_stack([direction, [0, 1, 0], [0, 0, 1]]))[0]
    basis[:, 0] = direction  # exact first column (qr may flip it)
    stats = _stats(size, eigvals=(2550.0, 0.0, 0.0), eigvecs=basis)
    noisy = random_crop_flip(images, crop, stats, np.random.default_rng(9), pca_std=0.1)
    plain = random_crop_flip(images, crop, stats, np.random.default_rng(9), pca_std=0.0)
    diff = (noisy.astype(np.float64) - plain).reshape(batch, 3, -1)
    # Same shift at every pixel of an image (float32 rounding of x + s aside)...
    np.testing.assert_allclose(diff, diff[:, :, :1].repeat(diff.shape[2], axis=2), atol=1e-4)
    shift = diff[:, :, 0]
    # ...equal to alpha_1 * lambda_1 / 255 * p_1 with the generator's own draw of alpha.
    rng = np.random.default_rng(9)
    rng.integers(0, size - crop + 1, size=(batch, 2))
    rng.random(batch)
    alpha = 0.1 * rng.standard_normal((batch, 3))
    np.testing.assert_allclose(shift, np.outer(alpha[:, 0] * 10.0, direction), atol=1e-4)
    assert np.abs(shift).max() > 0.1  # the noise is really there


def test_train_plan_covers_every_offset_and_flips_half():
    stats = _stats(12)
    plan = draw_train_plan(np.random.default_rng(0), 4000, 12, 9, stats)
    assert plan.offsets.min() == 0 and plan.offsets.max() == 3
    assert set(np.unique(plan.offsets)) == {0, 1, 2, 3}
    assert 0.45 < plan.flips.mean() < 0.55
    assert plan.shifts.dtype == np.float32 and plan.offsets.dtype == np.int64


def test_random_crop_flip_is_reproducible_from_the_generator():
    images, stats = _images(8, 12), _stats(12, eigvals=(500.0, 50.0, 5.0))
    a = random_crop_flip(images, 9, stats, np.random.default_rng(3))
    b = random_crop_flip(images, 9, stats, np.random.default_rng(3))
    c = random_crop_flip(images, 9, stats, np.random.default_rng(4))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    out = np.empty_like(a)
    assert random_crop_flip(images, 9, stats, np.random.default_rng(3), out=out) is out
    np.testing.assert_array_equal(out, a)


@given(size=st.integers(1, 20), data=st.data())
def test_numba_equals_numpy_reference(size, data):
    crop = data.draw(st.integers(1, size))
    n = data.draw(st.integers(1, 4))
    batch = data.draw(st.integers(1, 6))
    seed = data.draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 3, size, size), dtype=np.uint8)
    mean = rng.uniform(0, 255, size=(3, size, size)).astype(np.float32)
    stats = _stats(
        size,
        mean,
        eigvals=rng.uniform(0, 5000, size=3),
        eigvecs=np.linalg.qr(rng.normal(size=(3, 3)))[0],
    )
    indices = rng.integers(0, n, size=batch)
    plan = draw_train_plan(rng, batch, size, crop, stats, pca_std=0.5)
    np.testing.assert_array_equal(
        apply_plan(images, indices, plan, mean, crop),
        apply_plan_numpy(images, indices, plan, mean, crop),
    )


def test_numba_reads_a_read_only_memmap(tmp_path):
    images = _images(4, 16)
    np.save(tmp_path / "x.npy", images)
    on_disk = np.load(tmp_path / "x.npy", mmap_mode="r")
    stats = _stats(16, eigvals=(100.0, 10.0, 1.0))
    np.testing.assert_array_equal(
        random_crop_flip(on_disk, 11, stats, np.random.default_rng(0)),
        random_crop_flip(images, 11, stats, np.random.default_rng(0)),
    )


def test_errors_say_what_to_do():
    images, stats = _images(2, 8), _stats(8)
    with pytest.raises(ValueError, match="crop size 9 is larger"):
        center_crop(images, 9, stats)
    with pytest.raises(ValueError, match="uint8 images shaped"):
        center_crop(images.astype(np.float32), 5, stats)
    with pytest.raises(ValueError, match="compute_stats"):
        center_crop(_images(2, 10), 5, stats)
    with pytest.raises(TypeError, match="default_rng"):
        random_crop_flip(images, 5, stats, rng=0)
    with pytest.raises(ValueError, match="out must be"):
        ten_crop(images, 5, stats, out=np.empty((2, 10, 3, 5, 5), dtype=np.float32))
    with pytest.raises(ValueError, match="pca_std"):
        random_crop_flip(images, 5, stats, np.random.default_rng(0), pca_std=-1)


def test_the_default_colour_noise_has_the_paper_s_std():
    """§4.1: alpha ~ N(0, 0.1^2), by default. With P = I and eigenvalues of 255 the shift of
    each channel is alpha itself; the draws are replayed by hand from the same seed."""
    size, crop, n = 6, 4, 50
    images = np.full((n, 3, size, size), 100, dtype=np.uint8)
    stats = _stats(size, eigvals=(255.0, 255.0, 255.0))
    out = random_crop_flip(images, crop, stats, np.random.default_rng(5))
    rng = np.random.default_rng(5)
    rng.integers(0, size - crop + 1, size=(n, 2), dtype=np.int64)
    rng.random(n)
    alpha = 0.1 * rng.standard_normal((n, 3))
    np.testing.assert_allclose(
        out - 100.0, np.broadcast_to(alpha[:, :, None, None], out.shape), atol=1e-4
    )
