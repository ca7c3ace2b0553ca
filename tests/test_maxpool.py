"""Overlapping max pooling (§3.4): hand-computed cases, ties, then properties."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minialexnet import use_backend
from minialexnet.gradcheck import check_layer
from minialexnet.kernels import cpu as numba_kernels
from minialexnet.kernels import numpy as numpy_kernels
from minialexnet.layers import MaxPool2D
from minialexnet.shapes import conv_output_size

BACKENDS = ["numpy", "numba"]
KERNELS = {"numpy": numpy_kernels, "numba": numba_kernels}


def image(rows, dtype=np.float64):
    """One single-channel image (1, 1, H, W) from nested lists."""
    return np.array(rows, dtype=dtype)[None, None]


# --------------------------------------------------------------------------------------------
# Hand-computed cases
# --------------------------------------------------------------------------------------------

# 3x3 windows every 2 pixels on a 5x5 image: 2x2 outputs, windows overlap in row and
# column 2. The 10 at (1, 2) sits in the shared column and wins both top windows.
FIVE_BY_FIVE = [
    [1, 9, 2, 0, 3],
    [4, 0, 10, 8, 1],
    [7, 2, 6, 1, 0],
    [0, 3, 1, 2, 9],
    [5, 1, 0, 4, 2],
]


@pytest.mark.parametrize("backend", BACKENDS)
def test_overlapping_3x3_stride_2_on_5x5_by_hand(backend):
    with use_backend(backend):
        layer = MaxPool2D(kernel_size=3, stride=2)
        y = layer.forward(image(FIVE_BY_FIVE))
        # windows: rows 0-2 x cols 0-2 -> 10 at (1,2); rows 0-2 x cols 2-4 -> 10 at (1,2);
        #          rows 2-4 x cols 0-2 -> 7 at (2,0);  rows 2-4 x cols 2-4 -> 9 at (3,4)
        np.testing.assert_array_equal(y[0, 0], [[10, 10], [7, 9]])
        dx = layer.backward(np.array([[[[1.0, -2.0], [3.0, 0.5]]]]))
    expected = np.zeros((5, 5))
    expected[1, 2] = 1.0 - 2.0  # the shared winner collects both windows' gradients
    expected[2, 0] = 3.0
    expected[3, 4] = 0.5
    np.testing.assert_array_equal(dx[0, 0], expected)


@pytest.mark.parametrize("backend", BACKENDS)
def test_argmax_holds_window_positions_in_one_byte(backend):
    # Winners (1,2), (1,2), (2,0), (3,4) sit in windows with corners (0,0), (0,2), (2,0),
    # (2,2): at rows/columns (1,2), (1,0), (0,0), (1,2) of their windows, i * 3 + j.
    _, argmax = KERNELS[backend].maxpool_forward(image(FIVE_BY_FIVE), 3, 2)
    assert argmax.dtype == np.uint8
    np.testing.assert_array_equal(argmax[0, 0], [[1 * 3 + 2, 1 * 3 + 0], [0, 1 * 3 + 2]])


@pytest.mark.parametrize("backend", BACKENDS)
def test_windows_larger_than_16x16_number_their_positions_in_16_bits(backend):
    # 17 * 17 = 289 positions do not fit a byte; the winner sits at the last one.
    x = np.zeros((1, 1, 17, 17), dtype=np.float32)
    x[0, 0, 16, 16] = 1.0
    _, argmax = KERNELS[backend].maxpool_forward(x, 17, 1)
    assert argmax.dtype == np.uint16 and argmax[0, 0, 0, 0] == 288
    dx = KERNELS[backend].maxpool_backward(np.full((1, 1, 1, 1), 2.0), argmax, x.shape, 17, 1)
    assert dx[0, 0, 16, 16] == 2.0 and dx.sum() == 2.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_ties_go_to_the_first_maximum_in_row_major_order(backend):
    # Three 7s: (0, 2) comes first row by row; (1, 0) would be first column by column
    # (or for a max taken down the columns first), (2, 2) would be the last one.
    x = image([[0, 0, 7], [7, 0, 0], [0, 0, 7]])
    with use_backend(backend):
        layer = MaxPool2D(3, 2)
        layer.forward(x)
        dx = layer.backward(np.full((1, 1, 1, 1), 2.5))
    expected = np.zeros((3, 3))
    expected[0, 2] = 2.5
    np.testing.assert_array_equal(dx[0, 0], expected)


@pytest.mark.parametrize("backend", BACKENDS)
def test_all_zero_region_after_relu_routes_to_each_windows_top_left(backend):
    x = np.zeros((1, 1, 5, 5))
    with use_backend(backend):
        layer = MaxPool2D(3, 2)
        layer.forward(x)
        dx = layer.backward(np.array([[[[1.0, 2.0], [3.0, 4.0]]]]))
    expected = np.zeros((5, 5))
    expected[0, 0], expected[0, 2], expected[2, 0], expected[2, 2] = 1.0, 2.0, 3.0, 4.0
    np.testing.assert_array_equal(dx[0, 0], expected)


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_propagates_and_the_first_nan_wins(backend):
    nan = np.nan
    x = image([[1, nan, 3, 4, 5, 6, 7], [1, nan, 3, nan, 5, 6, 7], [1, 2, 3, 4, 5, 6, 8]])
    y, argmax = KERNELS[backend].maxpool_forward(x, 3, 2)
    assert np.isnan(y[0, 0, 0, 0]) and np.isnan(y[0, 0, 0, 1]) and y[0, 0, 0, 2] == 8
    # Winners (0,1), (1,3), (2,6) in windows with corners (0,0), (0,2), (0,4).
    np.testing.assert_array_equal(argmax[0, 0], [[0 * 3 + 1, 1 * 3 + 1, 2 * 3 + 2]])


@pytest.mark.parametrize("backend", BACKENDS)
def test_symmetric_padding_1_on_5x5_by_hand(backend):
    # Padded to 7x7: windows cover rows (and columns) -1..1, 1..3, 3..5 of the image, i.e.
    # the real rows 0-1, 1-3 and 3-4.
    with use_backend(backend):
        layer = MaxPool2D(kernel_size=3, stride=2, padding=1)
        assert layer.padding == (1, 1, 1, 1)
        assert layer.output_shape((1, 5, 5)) == (1, 3, 3)
        y = layer.forward(image(FIVE_BY_FIVE))
        dy = np.arange(1.0, 10.0).reshape(1, 1, 3, 3)
        dx = layer.backward(dy)
    # rows 0-1: cols 0-1 -> 9 at (0,1); cols 1-3 -> 10 at (1,2); cols 3-4 -> 8 at (1,3)
    # rows 1-3: cols 0-1 -> 7 at (2,0); cols 1-3 -> 10 at (1,2); cols 3-4 -> 9 at (3,4)
    # rows 3-4: cols 0-1 -> 5 at (4,0); cols 1-3 -> 4 at (4,3); cols 3-4 -> 9 at (3,4)
    np.testing.assert_array_equal(y[0, 0], [[9, 10, 8], [7, 10, 9], [5, 4, 9]])
    expected = np.zeros((5, 5))
    expected[0, 1] = 1
    expected[1, 2] = 2 + 5  # wins windows (0, 1) and (1, 1)
    expected[1, 3] = 3
    expected[2, 0] = 4
    expected[3, 4] = 6 + 9  # wins windows (1, 2) and (2, 2)
    expected[4, 0] = 7
    expected[4, 3] = 8
    np.testing.assert_array_equal(dx[0, 0], expected)


@pytest.mark.parametrize("backend", BACKENDS)
def test_caffe_ceil_mode_padding_bottom_right_acts_as_minus_infinity(backend):
    # Caffe's ceil-mode pooling as ONNX pads (top, left, bottom, right) = (0, 0, 1, 1):
    # 4x4 -> 2x2 instead of 1x1. All inputs are negative: zero padding would answer 0 in
    # three windows; -inf padding takes the maximum of the real pixels.
    x = -np.arange(1.0, 17.0).reshape(1, 1, 4, 4)
    with use_backend(backend):
        layer = MaxPool2D(3, 2, padding=(0, 0, 1, 1))
        assert layer.output_shape((1, 4, 4)) == (1, 2, 2)
        y = layer.forward(x)
        dx = layer.backward(np.array([[[[1.0, 2.0], [3.0, 4.0]]]]))
    # rows 0-2 x cols 0-2 -> -1 at (0,0); rows 0-2 x cols 2-3 -> -3 at (0,2)
    # rows 2-3 x cols 0-2 -> -9 at (2,0); rows 2-3 x cols 2-3 -> -11 at (2,2)
    np.testing.assert_array_equal(y[0, 0], [[-1, -3], [-9, -11]])
    expected = np.zeros((4, 4))
    expected[0, 0], expected[0, 2], expected[2, 0], expected[2, 2] = 1.0, 2.0, 3.0, 4.0
    np.testing.assert_array_equal(dx[0, 0], expected)


@pytest.mark.parametrize("backend", BACKENDS)
def test_padding_never_wins_even_against_minus_infinity(backend):
    # Every input is -inf, so padding "holding -inf" would tie; the winner must still be a
    # real pixel (the first one of the window in row-major order), or backward would lose dy.
    x = np.full((1, 1, 3, 3), -np.inf)
    y, argmax = KERNELS[backend].maxpool_forward(x, 3, 2, (1, 1, 1, 1))
    assert np.all(y == -np.inf)
    # Windows with corners (-1,-1), (-1,1), (1,-1), (1,1): their first real pixels (0,0),
    # (0,1), (1,0), (1,1) sit at window positions (1,1), (1,0), (0,1), (0,0).
    np.testing.assert_array_equal(argmax[0, 0], [[1 * 3 + 1, 1 * 3 + 0], [0 * 3 + 1, 0]])


# --------------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------------


def brute_force(x, kernel_size, stride, padding=(0, 0, 0, 0)):
    """Definition by enumeration: np.argmax of each flattened window (first max, row-major),
    the window clipped to the image (padded positions are never a maximum)."""
    n, c, h, w = x.shape
    top, left, bottom, right = padding
    out_h = conv_output_size(h, kernel_size, stride, (top, bottom))
    out_w = conv_output_size(w, kernel_size, stride, (left, right))
    y = np.empty((n, c, out_h, out_w), dtype=x.dtype)
    argmax = np.empty((n, c, out_h, out_w), dtype=np.int64)  # position i * kernel + j
    for i in range(n):
        for ch in range(c):
            for oh in range(out_h):
                for ow in range(out_w):
                    r0, c0 = oh * stride - top, ow * stride - left
                    r1, c1 = max(r0, 0), max(c0, 0)
                    window = x[i, ch, r1 : r0 + kernel_size, c1 : c0 + kernel_size]
                    r, s = divmod(int(np.argmax(window)), window.shape[1])
                    y[i, ch, oh, ow] = window[r, s]
                    argmax[i, ch, oh, ow] = (r1 + r - r0) * kernel_size + c1 + s - c0
    return y, argmax


@st.composite
def pool_cases(draw, padded=True):
    kernel_size = draw(st.integers(1, 4))
    stride = draw(st.integers(1, 3))
    pad = st.integers(0, kernel_size - 1) if padded else st.just(0)
    padding = tuple(draw(pad) for _ in range(4))  # (top, left, bottom, right)
    shape = (
        draw(st.integers(1, 3)),
        draw(st.integers(1, 5)),
        draw(st.integers(max(1, kernel_size - padding[0] - padding[2]), 11)),
        draw(st.integers(max(1, kernel_size - padding[1] - padding[3]), 11)),
    )
    return kernel_size, stride, padding, shape, draw(st.integers(0, 2**32 - 1))


@given(pool_cases(), st.sampled_from(["distinct", "ties", "nans"]))
def test_both_kernels_match_the_brute_force_definition(case, values):
    kernel_size, stride, padding, shape, seed = case
    rng = np.random.default_rng(seed)
    if values == "ties":  # few distinct values: many ties, resolved as in np.argmax
        x = rng.integers(0, 3, size=shape).astype(np.float32)
    else:
        x = rng.permutation(np.prod(shape)).reshape(shape).astype(np.float32)
    if values == "nans":  # NaNs in some planes only (np.argmax picks the first NaN), so
        # the Numba kernel's NaN-aware planes and its plain ones both run
        planes = x.reshape(-1, *shape[2:])
        for q in rng.choice(len(planes), size=(len(planes) + 1) // 2, replace=False):
            planes[q][rng.random(shape[2:]) < 0.2] = np.nan
    y_def, argmax_def = brute_force(x, kernel_size, stride, padding)
    dy = rng.standard_normal(y_def.shape).astype(np.float32)
    dx = {}
    for backend, kernels in KERNELS.items():
        y, argmax = kernels.maxpool_forward(x, kernel_size, stride, padding)
        np.testing.assert_array_equal(y, y_def)
        np.testing.assert_array_equal(argmax, argmax_def)
        dx[backend] = kernels.maxpool_backward(dy, argmax, x.shape, kernel_size, stride, padding)
        assert dx[backend].dtype == np.float32
    np.testing.assert_allclose(dx["numba"], dx["numpy"], rtol=1e-6, atol=1e-6)
    # Gradient mass is conserved: every output hands its dy to exactly one input.
    np.testing.assert_allclose(dx["numba"].sum(), dy.sum(dtype=np.float64), rtol=1e-4, atol=1e-4)


def distinct_values(rng, shape):
    """Distinct values in [-0.5, 0.5), at least 1/size apart: a 1e-6 nudge never changes
    which element wins (no near-ties), and values of order 1 keep the rounding error of the
    float64 finite differences far below the tolerance. (Unscaled values up to ~1,800 put
    that rounding error near 1e-6 and failed about one run in eleven.)"""
    size = int(np.prod(shape))
    return (rng.permutation(size).reshape(shape) - size / 2) / size


@given(pool_cases(padded=False))
def test_gradient_matches_finite_differences(case):
    kernel_size, stride, _, shape, seed = case
    rng = np.random.default_rng(seed)
    x = distinct_values(rng, shape)
    errors = check_layer(MaxPool2D(kernel_size, stride), x, rng=rng, max_entries=60)
    assert errors["x"] < 1e-6, errors


@pytest.mark.parametrize("backend", BACKENDS)
@given(case=pool_cases())
def test_padded_gradient_matches_finite_differences(backend, case):
    kernel_size, stride, padding, shape, seed = case
    rng = np.random.default_rng(seed)
    x = distinct_values(rng, shape)
    with use_backend(backend):
        errors = check_layer(MaxPool2D(kernel_size, stride, padding), x, rng=rng, max_entries=60)
    assert errors["x"] < 1e-6, errors


@pytest.mark.parametrize(
    "channels, side, out, padding",
    [
        (96, 55, 27, 0),
        (256, 27, 13, 0),
        (256, 13, 6, 0),
        (256, 12, 6, (0, 0, 1, 1)),  # BVLC AlexNet's pool5 on 224x224 inputs (Caffe ceil mode)
    ],
)
def test_alexnet_geometry(channels, side, out, padding):
    rng = np.random.default_rng(side)
    x = rng.standard_normal((2, channels, side, side)).astype(np.float32)
    layer = MaxPool2D(3, 2, padding)
    assert layer.output_shape((channels, side, side)) == (channels, out, out)
    dy = rng.standard_normal((2, channels, out, out)).astype(np.float32)
    results = {}
    for backend in BACKENDS:
        with use_backend(backend):
            y = layer.forward(x)
            results[backend] = (y, layer.backward(dy))
    assert results["numba"][0].shape == (2, channels, out, out)
    np.testing.assert_array_equal(results["numba"][0], results["numpy"][0])
    np.testing.assert_allclose(results["numba"][1], results["numpy"][1], rtol=1e-6, atol=1e-6)


def test_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    for kernel_size, stride, shape in [
        (3, 2, (2, 3, 9, 7)),
        (2, 2, (1, 2, 6, 8)),
        (3, 1, (1, 1, 5, 4)),
    ]:
        x = rng.permutation(np.prod(shape)).reshape(shape).astype(np.float64)
        layer = MaxPool2D(kernel_size, stride)
        y = layer.forward(x)
        dy = rng.standard_normal(y.shape)
        dx = layer.backward(dy)
        xt = torch.tensor(x, requires_grad=True)
        yt, indices = torch.nn.functional.max_pool2d_with_indices(xt, kernel_size, stride)
        yt.backward(torch.tensor(dy))
        np.testing.assert_array_equal(y, yt.detach().numpy())
        np.testing.assert_array_equal(layer._cache[0], indices.numpy())
        np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-12)


# --------------------------------------------------------------------------------------------
# The layer protocol: dtypes, no mutation, errors
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_preserved_and_inputs_untouched(backend, dtype):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 7, 9)).astype(dtype)
    x_before = x.copy()
    with use_backend(backend):
        layer = MaxPool2D()
        y = layer.forward(x)
        dy = rng.standard_normal(y.shape)  # float64 upstream on purpose
        dy_before = dy.copy()
        dx = layer.backward(dy)
    assert y.shape == (2, 3, 3, 4) and y.dtype == dtype and dx.dtype == dtype
    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_array_equal(dy, dy_before)


def test_non_contiguous_input():
    x = np.random.default_rng(4).standard_normal((2, 7, 9, 3)).transpose(0, 3, 1, 2)
    for backend in BACKENDS:
        y, argmax = KERNELS[backend].maxpool_forward(x, 3, 2)
        y_def, argmax_def = brute_force(np.ascontiguousarray(x), 3, 2)
        np.testing.assert_array_equal(y, y_def)
        np.testing.assert_array_equal(argmax, argmax_def)


def test_bad_inputs_give_clear_errors():
    with pytest.raises(ValueError, match="kernel_size"):
        MaxPool2D(kernel_size=0)
    with pytest.raises(ValueError, match="stride"):
        MaxPool2D(stride=1.5)
    with pytest.raises(ValueError, match="smaller than kernel_size"):
        MaxPool2D(3, 2, padding=3)
    with pytest.raises(ValueError, match="top, left, bottom, right"):
        MaxPool2D(3, 2, padding=(1, 1, 1))
    with pytest.raises(ValueError, match="padding"):
        MaxPool2D(3, 2, padding=(0, -1, 0, 0))
    layer = MaxPool2D(3, 2)
    with pytest.raises(RuntimeError, match="before forward"):
        layer.backward(np.zeros((1, 1, 2, 2)))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        layer.forward(np.zeros((5, 5)))
    with pytest.raises(ValueError, match="does not fit"):
        layer.forward(np.zeros((1, 1, 2, 8)))
    layer.forward(np.zeros((1, 1, 5, 5)))
    with pytest.raises(ValueError, match="dy"):
        layer.backward(np.zeros((1, 1, 3, 3)))
