"""Winograd F(2x2, 3x3): the transforms by hand, kernels numba == numpy, and the layer against
im2col (forward, dx, dW, db) and float64 central differences."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minialexnet.backend import use_backend
from minialexnet.gradcheck import check_layer
from minialexnet.kernels import cpu as NUMBA
from minialexnet.kernels import numpy as REFERENCE
from minialexnet.kernels.numpy.winograd import A_T, B_T, G, tile_grid
from minialexnet.layers import Conv2D, winograd
from minialexnet.model import AlexNet

BACKENDS = pytest.mark.parametrize("backend", ["numba", "numpy"])


# ------------------------------------------------------------------ hand-computed cases
def test_one_dimensional_f23_is_a_correlation():
    # F(2, 3): two outputs of a 3-tap correlation from 4 inputs, A^T [(G g) * (B^T d)].
    d, g = np.array([1.0, -2.0, 3.0, 5.0]), np.array([2.0, 0.5, -1.0])
    y = A_T @ ((G @ g) * (B_T @ d))
    # y0 = 1*2 - 2*0.5 + 3*(-1) = -2;  y1 = -2*2 + 3*0.5 + 5*(-1) = -7.5
    np.testing.assert_allclose(y, [-2.0, -7.5], rtol=0, atol=1e-12)


@BACKENDS
def test_ones_filter_sums_each_window_by_hand(backend):
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)  # rows 0-3, 4-7, 8-11, 12-15
    layer = Conv2D(1, 1, 3, algorithm="winograd")
    layer.params["W"] = np.ones((1, 1, 3, 3), dtype=np.float32)
    layer.params["b"] = np.array([0.5], dtype=np.float32)
    with use_backend(backend):
        y = layer.forward(x)
        # top-left window 0+1+2+4+5+6+8+9+10 = 45; one column right +9; one row down +36
        np.testing.assert_array_equal(y, [[[[45.5, 54.5], [81.5, 90.5]]]])
        dx = layer.backward(np.ones_like(y))
    # dx[h, w] counts the windows that cover pixel (h, w); dW[i, j] sums those 4 pixels
    np.testing.assert_array_equal(
        dx[0, 0], [[1, 2, 2, 1], [2, 4, 4, 2], [2, 4, 4, 2], [1, 2, 2, 1]]
    )
    np.testing.assert_array_equal(
        layer.grads["W"][0, 0], [[10, 14, 18], [26, 30, 34], [42, 46, 50]]
    )
    np.testing.assert_array_equal(layer.grads["b"], [4])
    assert y.dtype == dx.dtype == layer.grads["W"].dtype == np.float32


def test_tile_grid_rounds_odd_outputs_up():
    assert tile_grid(13, 13, 1) == (13, 13, 7, 7)  # conv3-5: 7x7 tiles, 14x14 cut
    assert tile_grid(4, 6, 0) == (2, 4, 1, 2)


def test_bad_choices_get_clear_errors():
    with pytest.raises(ValueError, match="3x3 kernel at stride 1"):
        Conv2D(2, 2, 5, algorithm="winograd")
    with pytest.raises(ValueError, match="3x3 kernel at stride 1"):
        Conv2D(2, 2, 3, stride=2, algorithm="winograd")
    with pytest.raises(ValueError, match="unknown algorithm"):
        Conv2D(2, 2, 3, algorithm="fft")


def test_alexnet_picks_winograd_only_for_wide_3x3_layers():
    # conv1/conv2 are not 3x3 stride 1; the paper's conv3-conv5 (256x384, 192x192 and 192x128
    # weights per group) are wide enough; mini's (64x96, 48x48, 48x32) are not.
    chosen = {
        variant: {
            name: layer.algorithm
            for name, layer in AlexNet(10, variant).layers.items()
            if isinstance(layer, Conv2D)
        }
        for variant in ("paper", "mini")
    }
    assert chosen["paper"] == {
        "conv1": "im2col",
        "conv2": "im2col",
        "conv3": "winograd",
        "conv4": "winograd",
        "conv5": "winograd",
    }
    assert set(chosen["mini"].values()) == {"im2col"}
    # the threshold itself, both sides of it
    assert winograd.worthwhile(256, 256, 2) and winograd.worthwhile(128, 128, 1)
    assert not winograd.worthwhile(256, 254, 2) and not winograd.worthwhile(64, 96, 1)


# ---------------------------------------------------------------- properties and agreement
@st.composite
def winograd_cases(draw, max_size=9):
    groups = draw(st.sampled_from([1, 2]))
    padding = draw(st.integers(0, 2))
    h = draw(st.integers(max(1, 3 - 2 * padding), max_size))
    w = draw(st.integers(max(1, 3 - 2 * padding), max_size))
    return dict(
        shape=(draw(st.integers(1, 3)), groups * draw(st.integers(1, 3)), h, w),
        f=groups * draw(st.integers(1, 3)),
        padding=padding,
        groups=groups,
        seed=draw(st.integers(0, 2**32 - 1)),
    )


def build(case, algorithm):
    rng = np.random.default_rng(case["seed"])
    c = case["shape"][1]
    layer = Conv2D(
        c, case["f"], 3, 1, case["padding"], case["groups"], rng=rng, algorithm=algorithm
    )
    layer.params["W"] = rng.standard_normal(layer.params["W"].shape).astype(np.float32)
    layer.params["b"] = rng.standard_normal(case["f"]).astype(np.float32)
    return layer, rng.standard_normal(case["shape"]).astype(np.float32), rng


def run_both(case, backend="numba"):
    """(y, dx, dW, db) of the same layer through im2col and through Winograd."""
    out = []
    for algorithm in ("im2col", "winograd"):
        layer, x, _ = build(case, algorithm)
        with use_backend(backend):
            y = layer.forward(x)
            dy = np.random.default_rng(case["seed"] + 1).standard_normal(y.shape)
            dx = layer.backward(dy.astype(np.float32))
        out.append((y, dx, layer.grads["W"], layer.grads["b"]))
    return out


def assert_close(a, b):
    """float32 agreement relative to the size of the result."""
    np.testing.assert_allclose(b, a, rtol=0, atol=1e-5 * max(1.0, np.abs(a).max()))


@given(winograd_cases())
def test_winograd_equals_im2col_forward_and_both_gradients(case):
    by_im2col, by_winograd = run_both(case)
    for a, b in zip(by_im2col, by_winograd):
        assert a.shape == b.shape and b.dtype == np.float32
        assert_close(a, b)


@settings(max_examples=10)
@given(winograd_cases(max_size=6))
def test_winograd_numpy_backend_equals_im2col(case):
    for a, b in zip(*run_both(case, backend="numpy")):
        assert_close(a, b)


@settings(max_examples=20)
@given(winograd_cases(max_size=6))
def test_gradients_match_finite_differences(case):
    layer, x, rng = build(case, "winograd")
    errors = check_layer(layer, x, rng=rng, max_entries=40)
    assert max(errors.values()) < 1e-6, errors


@given(winograd_cases(max_size=12))
def test_numba_kernels_equal_numpy_kernels(case):
    rng = np.random.default_rng(case["seed"])
    n, c, h, w = case["shape"]
    g, f, p = case["groups"], case["f"], case["padding"]
    out_h, out_w, th, tw = tile_grid(h, w, p)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    grad_v = rng.standard_normal((16, g, c // g, n * th * tw)).astype(np.float32)
    m = rng.standard_normal((16, g, f // g, n * th * tw)).astype(np.float32)
    bias = rng.standard_normal(f).astype(np.float32)
    dy = rng.standard_normal((n, f, out_h, out_w)).astype(np.float32)
    calls = [
        lambda k: k.winograd_input(x, p, g),
        lambda k: k.winograd_input_backward(grad_v, x.shape, p),
        lambda k: k.winograd_output(m, bias, n, out_h, out_w),
        lambda k: k.winograd_output_backward(dy, g),
    ]
    for call in calls:
        expected, got = call(REFERENCE), call(NUMBA)
        assert got.shape == expected.shape and got.dtype == np.float32
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kern", [REFERENCE, NUMBA], ids=["numpy", "numba"])
@given(case=winograd_cases())
def test_input_backward_is_the_adjoint_of_input(kern, case):
    # <winograd_input(x), dV> == <x, winograd_input_backward(dV)> for every x and dV.
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal(case["shape"])
    v = kern.winograd_input(x, case["padding"], case["groups"])
    grad_v = rng.standard_normal(v.shape)
    dx = kern.winograd_input_backward(grad_v, x.shape, case["padding"])
    np.testing.assert_allclose(np.vdot(v, grad_v), np.vdot(x, dx), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(
    "c, f, groups", [(256, 384, 1), (384, 384, 2), (384, 256, 2)], ids=["conv3", "conv4", "conv5"]
)
def test_alexnet_geometry_equals_im2col(c, f, groups):
    # The paper's conv3-conv5 (13x13 maps, padding 1), two images, full channel counts.
    case = dict(shape=(2, c, 13, 13), f=f, padding=1, groups=groups, seed=c + f + groups)
    for a, b in zip(*run_both(case)):
        assert_close(a, b)


def test_transform_filters_is_g_w_g_transposed():
    rng = np.random.default_rng(3)
    weights = rng.standard_normal((4, 3, 3, 3))
    u = winograd.transform_filters(weights, groups=2)  # (16, G, F/G, C/G)
    expected = np.einsum("ai,fcij,bj->abfc", G, weights, G).reshape(16, 2, 2, 3)
    np.testing.assert_allclose(u, expected, rtol=1e-12, atol=1e-12)
