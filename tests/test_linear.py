"""Linear and Flatten: hand-computed cases, gradient checks, shapes, dtypes and errors."""

import numpy as np
import pytest
from helpers import check_gradients_reused_in_place, check_weight_gradients_alone
from hypothesis import given, settings
from hypothesis import strategies as st

from minialexnet.gradcheck import check_layer
from minialexnet.layers import Flatten, Linear


def make_linear(weights, bias):
    layer = Linear(len(weights[0]), len(weights))
    layer.params["W"] = np.array(weights, dtype=np.float32)
    layer.params["b"] = np.array(bias, dtype=np.float32)
    return layer


# ------------------------------------------------------------------ hand-computed cases
def test_linear_by_hand():
    layer = make_linear([[1, 2, 3], [0, -1, 4]], [0.5, -2])
    x = np.array([[1, 0, 2], [-1, 3, 1]], dtype=np.float32)
    y = layer.forward(x)
    # y = x W^T + b: [1+0+6+0.5, 0+0+8-2] and [-1+6+3+0.5, 0-3+4-2]
    np.testing.assert_array_equal(y, [[7.5, 6], [8.5, -1]])
    dy = np.array([[1, -2], [3, 0.5]], dtype=np.float32)
    dx = layer.backward(dy)
    np.testing.assert_array_equal(dx, [[1, 4, -5], [3, 5.5, 11]])  # dy W
    np.testing.assert_array_equal(layer.grads["W"], [[-2, 9, 5], [-2.5, 1.5, -3.5]])  # dy^T x
    np.testing.assert_array_equal(layer.grads["b"], [4, -1.5])  # sum over batch
    assert y.dtype == dx.dtype == np.float32


def test_flatten_by_hand():
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2)
    layer = Flatten()
    y = layer.forward(x)
    assert y.shape == (2, 12)
    # C order: y[n, (c*H + h)*W + w] = x[n, c, h, w]
    assert y[1, (2 * 2 + 1) * 2 + 0] == x[1, 2, 1, 0]
    dy = np.random.default_rng(0).standard_normal((2, 12)).astype(np.float32)
    dx = layer.backward(dy)
    assert dx.shape == x.shape and dx.dtype == np.float32
    np.testing.assert_array_equal(dx[1, 2, 1, 0], dy[1, 10])
    assert layer.output_shape((256, 6, 6)) == (9216,)
    assert layer.params == {} and layer.macs((256, 6, 6)) == 0


# ------------------------------------------------------------------------- properties
@given(st.integers(1, 4), st.integers(1, 7), st.integers(1, 6), st.integers(0, 2**32 - 1))
def test_linear_gradients_match_finite_differences(n, d_in, d_out, seed):
    rng = np.random.default_rng(seed)
    layer = Linear(d_in, d_out, rng=rng)
    layer.params["W"] = rng.standard_normal((d_out, d_in)).astype(np.float32)
    layer.params["b"] = rng.standard_normal(d_out).astype(np.float32)
    errors = check_layer(layer, rng.standard_normal((n, d_in)), rng=rng)
    assert max(errors.values()) < 1e-6, errors


@settings(max_examples=10)
@given(
    st.integers(1, 3),
    st.integers(1, 4),
    st.integers(1, 4),
    st.integers(1, 5),
    st.integers(0, 2**32 - 1),
)
def test_flatten_then_linear_gradients(n, c, h, w, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w))
    assert max(check_layer(Flatten(), x, rng=rng).values()) < 1e-6
    linear = Linear(c * h * w, 3, rng=rng)
    linear.params["W"] = rng.standard_normal(linear.params["W"].shape).astype(np.float32)
    errors = check_layer(linear, Flatten().forward(x), rng=rng)
    assert max(errors.values()) < 1e-6, errors


def test_fc6_shape_params_and_macs_and_a_sampled_gradient_check():
    rng = np.random.default_rng(1)
    fc6 = Linear(9216, 4096, rng=rng)
    assert fc6.output_shape((9216,)) == (4096,)
    assert sum(p.size for p in fc6.params.values()) == 37_752_832  # docs/design.md §3
    assert fc6.macs((9216,)) == 9216 * 4096
    assert fc6.params["W"].shape == (4096, 9216) and fc6.params["W"].dtype == np.float32
    assert abs(fc6.params["W"].std() - 0.01) < 1e-4  # N(0, 0.01^2), §5
    np.testing.assert_array_equal(fc6.params["b"], 0)
    small = Linear(9216, 8, rng=rng)  # fc6's fan-in, few outputs: fast
    errors = check_layer(small, rng.standard_normal((2, 9216)), rng=rng, max_entries=30)
    assert max(errors.values()) < 1e-6, errors


# ------------------------------------------------------- protocol, dtypes, inputs, errors
def test_backward_does_not_modify_inputs_and_keeps_dtype():
    rng = np.random.default_rng(2)
    for dtype in (np.float32, np.float64):
        layer = Linear(5, 3, rng=rng).astype(dtype)
        x = rng.standard_normal((4, 5)).astype(dtype)
        dy = rng.standard_normal((4, 3)).astype(dtype)
        x_before, dy_before = x.copy(), dy.copy()
        y = layer.forward(x)
        dx = layer.backward(dy)
        np.testing.assert_array_equal(x, x_before)
        np.testing.assert_array_equal(dy, dy_before)
        assert y.dtype == dx.dtype == layer.grads["W"].dtype == layer.grads["b"].dtype == dtype


def test_weight_gradients_alone_equal_those_of_a_full_backward():
    rng = np.random.default_rng(4)
    layer = Linear(7, 5, rng=rng)
    x = rng.standard_normal((3, 7)).astype(np.float32)
    check_weight_gradients_alone(layer, x, rng.standard_normal((3, 5)).astype(np.float32))


def test_weight_gradients_are_written_in_place_from_call_to_call():
    rng = np.random.default_rng(11)
    weights = rng.standard_normal((5, 7)).astype(np.float32)

    def make():
        layer = Linear(7, 5)
        layer.params["W"] = weights.copy()
        return layer

    x, dy1, dy2 = (
        rng.standard_normal(shape).astype(np.float32) for shape in ((3, 7), (3, 5), (3, 5))
    )
    check_gradients_reused_in_place(make, x, dy1, dy2)


def test_linear_clear_errors():
    layer = Linear(12, 3)
    with pytest.raises(ValueError, match="Flatten"):
        layer.forward(np.zeros((2, 3, 2, 2), np.float32))  # maps, not vectors
    with pytest.raises(ValueError, match="expects 12 features.*Linear\\(10, 3\\)"):
        layer.forward(np.zeros((2, 10), np.float32))  # wrong feature count
    with pytest.raises(TypeError, match="float32"):
        layer.forward(np.zeros((2, 12), np.int32))
    with pytest.raises(RuntimeError, match="before forward"):
        Linear(12, 3).backward(np.zeros((2, 3), np.float32))
    layer.forward(np.zeros((2, 12), np.float32))
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        layer.backward(np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match="Flatten"):
        layer.output_shape((3, 2, 2))
    with pytest.raises(ValueError, match="in_features"):
        Linear(0, 3)


def test_flatten_clear_errors():
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        Flatten().forward(np.zeros((2, 12), np.float32))
    with pytest.raises(TypeError, match="float32"):
        Flatten().forward(np.zeros((2, 3, 2, 2), np.uint8))
    layer = Flatten()
    layer.forward(np.zeros((2, 3, 2, 2), np.float32))
    with pytest.raises(ValueError, match=r"\(2, 12\)"):
        layer.backward(np.zeros((2, 11), np.float32))
