"""Inverted dropout (§4.2)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minialexnet.gradcheck import check_layer
from minialexnet.layers import Dropout


def test_test_mode_is_the_identity_and_backward_passes_dy_through():
    layer = Dropout(0.5, rng=np.random.default_rng(0))
    x = np.random.default_rng(1).standard_normal((4, 7)).astype(np.float32)
    y = layer.forward(x, train=False)
    np.testing.assert_array_equal(y, x)
    assert y is not x
    dy = np.arange(28, dtype=np.float32).reshape(4, 7)
    np.testing.assert_array_equal(layer.backward(dy), dy)


def test_train_mode_by_hand():
    # p = 0.75: kept units are scaled by 1 / (1 - 0.75) = 4, dropped ones are exactly 0,
    # and backward uses the same mask and scale.
    layer = Dropout(0.75, rng=np.random.default_rng(5))
    x = np.linspace(1.0, 2.0, 40).reshape(2, 20)
    y = layer.forward(x, train=True)
    kept = y != 0
    assert 0 < kept.sum() < x.size
    np.testing.assert_allclose(y[kept], 4 * x[kept], rtol=1e-15)
    dy = np.linspace(-1.0, 1.0, 40).reshape(2, 20)
    np.testing.assert_allclose(layer.backward(dy), np.where(kept, 4 * dy, 0), rtol=1e-15)


@pytest.mark.parametrize("p", [0.5, 0.2, 0.9])
def test_mask_statistics(p):
    layer = Dropout(p, rng=np.random.default_rng(11))
    x = np.ones((64, 1024), dtype=np.float32)
    y = layer.forward(x, train=True)
    kept = np.mean(y != 0)
    # 65,536 Bernoulli draws: the standard error of the kept fraction is below 0.002.
    assert abs(kept - (1 - p)) < 0.02
    assert abs(y.mean() - 1.0) < 0.1  # E[y] = x: the point of inverted dropout
    # A fresh mask on every call.
    assert not np.array_equal(layer.forward(x, train=True) != 0, y != 0)


def test_p_zero_is_the_identity_even_in_training():
    x = np.random.default_rng(2).standard_normal((3, 5))
    layer = Dropout(0.0, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(layer.forward(x, train=True), x)
    np.testing.assert_array_equal(layer.backward(x * 2), x * 2)


def test_same_seed_same_mask_in_float32_and_float64():
    x = np.random.default_rng(3).standard_normal((4, 9))
    y64 = Dropout(0.5, rng=np.random.default_rng(9)).forward(x, train=True)
    y32 = Dropout(0.5, rng=np.random.default_rng(9)).forward(x.astype(np.float32), train=True)
    np.testing.assert_array_equal(y64 != 0, y32 != 0)


@given(
    st.lists(st.integers(1, 6), min_size=2, max_size=4).map(tuple),
    st.floats(0.0, 0.9),
    st.integers(0, 2**32 - 1),
)
def test_gradient_matches_finite_differences_in_training_mode(shape, p, seed):
    # check_layer replays the layer's generator, so every evaluation sees the same mask.
    rng = np.random.default_rng(seed)
    layer = Dropout(p, rng=np.random.default_rng(seed + 1))
    errors = check_layer(layer, rng.standard_normal(shape), rng=rng, train=True)
    assert errors["x"] < 1e-7, errors


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_preserved_and_inputs_untouched(train, dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 16)).astype(dtype)
    dy = rng.standard_normal(x.shape)  # float64 upstream on purpose
    x_before, dy_before = x.copy(), dy.copy()
    layer = Dropout(0.5, rng=rng)
    y = layer.forward(x, train=train)
    dx = layer.backward(dy)
    assert y.dtype == dtype and dx.dtype == dtype
    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_array_equal(dy, dy_before)


@pytest.mark.parametrize("p", [1.0, 1, -0.1, 1.5, float("nan"), "0.5", None, True])
def test_bad_probability(p):
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        Dropout(p)


def test_bad_inputs_give_clear_errors():
    layer = Dropout()
    with pytest.raises(RuntimeError, match="before forward"):
        layer.backward(np.zeros((2, 3)))
    with pytest.raises(TypeError, match="float32"):
        layer.forward(np.zeros((2, 3), dtype=np.uint8), train=True)
    layer.forward(np.zeros((2, 3)), train=True)
    with pytest.raises(ValueError, match="dy"):
        layer.backward(np.zeros((2, 4)))
