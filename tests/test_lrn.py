"""Local response normalization (§3.3): hand-computed cases, then properties.

The hand cases use alpha = 1 and k = 1, so that every term of every window changes the answer:
a window that is one channel too wide or too narrow, a sum divided by ``size`` (the
Caffe/PyTorch convention) or a window that leaks across groups all give different numbers.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minialexnet import use_backend
from minialexnet.gradcheck import check_layer
from minialexnet.kernels import cpu as numba_kernels
from minialexnet.kernels import numpy as numpy_kernels
from minialexnet.layers import LocalResponseNorm

BACKENDS = ["numpy", "numba"]


def column(*values, dtype=np.float64):
    """Channels of a 1x1 image: shape (1, C, 1, 1)."""
    return np.array(values, dtype=dtype).reshape(1, -1, 1, 1)


# --------------------------------------------------------------------------------------------
# Hand-computed cases
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_three_channels_by_hand(backend):
    # a = (1, 2, 3), size 3 (window i-1..i+1), alpha = beta = k = 1:
    #   channel 0: window {0, 1}     -> 1 + 1 + 4     = 6   -> 1/6
    #   channel 1: window {0, 1, 2}  -> 1 + 1 + 4 + 9 = 15  -> 2/15
    #   channel 2: window {1, 2}     -> 1 + 4 + 9     = 14  -> 3/14
    with use_backend(backend):
        layer = LocalResponseNorm(size=3, alpha=1.0, beta=1.0, k=1.0)
        y = layer.forward(column(1, 2, 3))
    np.testing.assert_allclose(y.ravel(), [1 / 6, 2 / 15, 3 / 14], rtol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_paper_beta_and_wide_window_by_hand(backend):
    # size 5 covers all three channels from each of them: base 1 + 14 = 15 everywhere.
    with use_backend(backend):
        y = LocalResponseNorm(size=5, alpha=1.0, beta=0.75, k=1.0).forward(column(1, 2, 3))
    np.testing.assert_allclose(y.ravel(), np.array([1, 2, 3]) / 15**0.75, rtol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_groups_keep_windows_inside_each_half_by_hand(backend):
    # Channels (1, 2 | 3, 4), size 3: channel 1's window stops at the group edge.
    #   group 0: both windows {0, 1}: 1 + 1 + 4 = 6;  group 1: {2, 3}: 1 + 9 + 16 = 26
    # (with groups=1, channel 1 would see 1 + 1 + 4 + 9 = 15 instead).
    with use_backend(backend):
        y = LocalResponseNorm(size=3, alpha=1.0, beta=1.0, k=1.0, groups=2).forward(
            column(1, 2, 3, 4)
        )
    np.testing.assert_allclose(y.ravel(), [1 / 6, 2 / 6, 3 / 26, 4 / 26], rtol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_backward_by_hand(backend):
    # The same 3-channel case with dy = (1, -2, 0.5):
    #   s = (6, 15, 14), y = (1/6, 2/15, 3/14), t_j = dy_j y_j / s_j
    #   dx_i = dy_i / s_i - 2 x_i sum_{j in window(i)} t_j        (alpha = beta = 1)
    s = np.array([6.0, 15.0, 14.0])
    y = np.array([1 / 6, 2 / 15, 3 / 14])
    dy = np.array([1.0, -2.0, 0.5])
    t = dy * y / s
    expected = [
        1 / 6 - 2 * 1 * (t[0] + t[1]),
        -2 / 15 - 2 * 2 * (t[0] + t[1] + t[2]),
        0.5 / 14 - 2 * 3 * (t[1] + t[2]),
    ]
    with use_backend(backend):
        layer = LocalResponseNorm(size=3, alpha=1.0, beta=1.0, k=1.0)
        layer.forward(column(1, 2, 3))
        dx = layer.backward(dy.reshape(1, 3, 1, 1))
    np.testing.assert_allclose(dx.ravel(), expected, rtol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_layer_keeps_x_and_scale_not_y_between_the_passes(backend):
    # Memory: y is recomputed in backward from x and scale (one array fewer per LRN layer).
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 6, 3, 3)).astype(np.float32)
    with use_backend(backend):
        layer = LocalResponseNorm(size=5, alpha=1e-2, beta=0.75, k=2.0)
        y = layer.forward(x)
        kept = layer._cache
    assert len(kept) == 2 and kept[0] is x and not any(a is y for a in kept)


@pytest.mark.parametrize("backend", BACKENDS)
def test_kernel_returns_the_scale(backend):
    kernels = numpy_kernels if backend == "numpy" else numba_kernels
    y, scale = kernels.lrn_forward(column(1, 2, 3), 3, 1.0, 1.0, 1.0, 1)
    np.testing.assert_allclose(scale.ravel(), [6, 15, 14], rtol=1e-12)


def test_size_one_normalizes_each_channel_by_itself():
    x = column(1.0, -2.0, 3.0)
    y = LocalResponseNorm(size=1, alpha=0.5, beta=1.0, k=2.0).forward(x)
    np.testing.assert_allclose(y.ravel(), [1 / 2.5, -2 / 4.0, 3 / 6.5], rtol=1e-12)


# --------------------------------------------------------------------------------------------
# Properties over random shapes and loud constants
# --------------------------------------------------------------------------------------------


@st.composite
def lrn_cases(draw, max_group_channels=7, max_side=6):
    """A layer with loud constants and an input of random (odd, non-square) shape."""
    groups = draw(st.sampled_from([1, 2]))
    channels = groups * draw(st.integers(1, max_group_channels))
    shape = (
        draw(st.integers(1, 3)),
        channels,
        draw(st.integers(1, max_side)),
        draw(st.integers(1, max_side)),
    )
    layer = LocalResponseNorm(
        size=draw(st.sampled_from([1, 3, 5, 7])),
        alpha=draw(st.floats(1e-4, 1.0)),
        beta=draw(st.floats(0.5, 1.0)),
        k=draw(st.floats(0.5, 3.0)),
        groups=groups,
    )
    seed = draw(st.integers(0, 2**32 - 1))
    return layer, shape, seed


@given(lrn_cases())
def test_gradient_matches_finite_differences(case):
    layer, shape, seed = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * 1.5
    errors = check_layer(layer, x, rng=rng, max_entries=60)
    assert errors["x"] < 1e-6, (layer, shape, errors)


@given(lrn_cases(max_group_channels=13, max_side=9), st.sampled_from([np.float32, np.float64]))
def test_numba_matches_numpy_reference(case, dtype):
    layer, shape, seed = case
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * 2).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    args = (layer.size, layer.alpha, layer.beta, layer.k, layer.groups)
    y_ref, scale_ref = numpy_kernels.lrn_forward(x, *args)
    y, scale = numba_kernels.lrn_forward(x, *args)
    bwd = (layer.size, layer.alpha, layer.beta, layer.groups)
    dx_ref = numpy_kernels.lrn_backward(x, scale_ref, dy, *bwd)
    dx = numba_kernels.lrn_backward(x, scale, dy, *bwd)
    for got in (y, scale, dx):
        assert got.dtype == dtype
    tol = dict(rtol=2e-5, atol=2e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(scale, scale_ref, **tol)
    np.testing.assert_allclose(y, y_ref, **tol)
    np.testing.assert_allclose(dx, dx_ref, **tol)


def test_running_sum_does_not_drift_when_magnitudes_differ():
    # A huge channel entering and leaving the Numba kernel's running sum must not leave
    # rounding residue behind for the small channels far from it (float64 accumulator).
    x = np.full((1, 40, 2, 3), 1e-2, dtype=np.float32)
    x[:, :3] = 3e3
    args = (5, 1.0, 0.75, 0.5, 1)
    y_ref, scale_ref = numpy_kernels.lrn_forward(x.astype(np.float64), *args)
    y, scale = numba_kernels.lrn_forward(x, *args)
    np.testing.assert_allclose(scale, scale_ref, rtol=1e-6)
    np.testing.assert_allclose(y, y_ref, rtol=1e-6)


@pytest.mark.parametrize("channels, side", [(96, 55), (256, 27)])
def test_alexnet_geometry(channels, side):
    # conv1's and conv2's LRN: paper constants, two groups, ReLU-like activations.
    rng = np.random.default_rng(channels)
    x = np.maximum(rng.standard_normal((2, channels, side, side)) * 30, 0).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    layer = LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=2.0, groups=2)
    results = {}
    for backend in BACKENDS:
        with use_backend(backend):
            y = layer.forward(x)
            results[backend] = (y, layer.backward(dy))
    for ref, got in zip(results["numpy"], results["numba"]):
        assert got.shape == x.shape and got.dtype == np.float32
        np.testing.assert_allclose(got, ref, rtol=2e-5, atol=1e-6)
    # The halves really are separate: changing group 1's input leaves group 0's output alone.
    x2 = x.copy()
    x2[:, channels // 2 :] *= 3
    np.testing.assert_array_equal(layer.forward(x2)[:, : channels // 2], y[:, : channels // 2])
    errors = check_layer(layer, x[:1].astype(np.float64), rng=rng, max_entries=40)
    assert errors["x"] < 1e-6, errors


def test_matches_torch_with_alpha_times_size():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    cases = [(5, (2, 9, 4, 6)), (3, (1, 4, 5, 3)), (7, (3, 11, 2, 5)), (1, (1, 3, 2, 2))]
    for size, shape in cases:
        x = rng.standard_normal(shape) * 3
        dy = rng.standard_normal(shape)
        alpha, beta, k = 0.3, 0.75, 1.5
        layer = LocalResponseNorm(size, alpha, beta, k)
        y = layer.forward(x)
        dx = layer.backward(dy)
        xt = torch.tensor(x, requires_grad=True)
        yt = torch.nn.LocalResponseNorm(size, alpha * size, beta, k)(xt)
        yt.backward(torch.tensor(dy))
        np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-10)
        np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-9, atol=1e-12)


# --------------------------------------------------------------------------------------------
# The layer protocol: dtypes, no mutation, errors
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_preserved_and_inputs_untouched(backend, dtype):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 6, 3, 4)).astype(dtype)
    dy = rng.standard_normal(x.shape)  # float64 upstream on purpose
    x_before, dy_before = x.copy(), dy.copy()
    with use_backend(backend):
        layer = LocalResponseNorm(groups=2)
        y = layer.forward(x)
        dx = layer.backward(dy)
    assert y.dtype == dtype and dx.dtype == dtype
    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_array_equal(dy, dy_before)
    assert layer.output_shape((6, 3, 4)) == (6, 3, 4) and layer.macs((6, 3, 4)) == 0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(size=4), "odd"),
        (dict(size=0), "size"),
        (dict(size=2.5), "size"),
        (dict(alpha=-1.0), "alpha"),
        (dict(k=0.0), "k"),
        (dict(beta=float("nan")), "beta"),
        (dict(groups=0), "groups"),
    ],
)
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LocalResponseNorm(**kwargs)


def test_bad_inputs_give_clear_errors():
    layer = LocalResponseNorm(groups=2)
    with pytest.raises(RuntimeError, match="before forward"):
        layer.backward(np.zeros((1, 4, 2, 2), dtype=np.float32))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        layer.forward(np.zeros((4, 2, 2), dtype=np.float32))
    with pytest.raises(ValueError, match="divisible by 2"):
        layer.forward(np.zeros((1, 5, 2, 2), dtype=np.float32))
    with pytest.raises(TypeError, match="float32"):
        layer.forward(np.zeros((1, 4, 2, 2), dtype=np.int64))
    layer.forward(np.ones((1, 4, 2, 2), dtype=np.float32))
    with pytest.raises(ValueError, match="dy"):
        layer.backward(np.ones((1, 4, 2, 3), dtype=np.float32))
