"""im2col / col2im: hand-computed cases, the layout contract, adjointness, numba == numpy."""

import importlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minialexnet.shapes import conv_output_size

# The kernel *files* (kernels/<backend>/im2col.py); the package attribute of the same name can
# be shadowed by the submodule, so import the files themselves.
REFERENCE = importlib.import_module("minialexnet.kernels.numpy.im2col")
NUMBA = importlib.import_module("minialexnet.kernels.cpu.im2col")
BACKENDS = pytest.mark.parametrize("kern", [REFERENCE, NUMBA], ids=["numpy", "numba"])

X3 = np.arange(1, 10, dtype=np.float32).reshape(1, 1, 3, 3)  # [[1,2,3],[4,5,6],[7,8,9]]


def definition_im2col(x, kh, kw, stride, padding):
    """The contract written as plain loops over every entry (slow, obviously right)."""
    n, c, h, w = x.shape
    oh, ow = conv_output_size(h, kh, stride, padding), conv_output_size(w, kw, stride, padding)
    cols = np.zeros((c * kh * kw, n * oh * ow), dtype=x.dtype)
    for ni in range(n):
        for ci in range(c):
            for i in range(kh):
                for j in range(kw):
                    for a in range(oh):
                        for b in range(ow):
                            hh, ww = a * stride + i - padding, b * stride + j - padding
                            if 0 <= hh < h and 0 <= ww < w:
                                cols[(ci * kh + i) * kw + j, ni * oh * ow + a * ow + b] = x[
                                    ni, ci, hh, ww
                                ]
    return cols


# ------------------------------------------------------------------ hand-computed cases
@BACKENDS
def test_im2col_2x2_kernel_on_3x3_by_hand(kern):
    cols = kern.im2col(X3, 2, 2, 1, 0)
    # rows: kernel offsets (0,0), (0,1), (1,0), (1,1); columns: windows (0,0), (0,1), (1,0), (1,1)
    expected = np.array([[1, 2, 4, 5], [2, 3, 5, 6], [4, 5, 7, 8], [5, 6, 8, 9]], dtype=np.float32)
    np.testing.assert_array_equal(cols, expected)
    assert cols.dtype == np.float32


@BACKENDS
def test_im2col_stride2_padding1_by_hand(kern):
    # Padded 5x5 image; the four 2x2 windows start at padded (0,0), (0,2), (2,0), (2,2):
    # [[0,0],[0,1]], [[0,0],[2,3]], [[0,4],[0,7]], [[5,6],[8,9]].
    cols = kern.im2col(X3, 2, 2, 2, 1)
    expected = np.array([[0, 0, 0, 5], [0, 0, 4, 6], [0, 2, 0, 8], [1, 3, 7, 9]], dtype=np.float32)
    np.testing.assert_array_equal(cols, expected)


@BACKENDS
def test_col2im_sums_overlapping_windows_by_hand(kern):
    # cols[(i, j), (oh, ow)] = 4*(2i + j) + 2*oh + ow; dx[h, w] sums the entries with
    # (oh + i, ow + j) == (h, w), e.g. dx[1, 1] = 3 + 6 + 9 + 12 = 30.
    cols = np.arange(16, dtype=np.float32).reshape(4, 4)
    dx = kern.col2im(cols, (1, 1, 3, 3), 2, 2, 1, 0)
    expected = np.array([[0, 5, 5], [10, 30, 20], [10, 25, 15]], dtype=np.float32).reshape(
        1, 1, 3, 3
    )
    np.testing.assert_array_equal(dx, expected)


@BACKENDS
def test_col2im_drops_padding_by_hand(kern):
    # Stride 2, padding 1: the windows tile the padded image, so each pixel comes from exactly
    # one entry (rows = kernel offsets (i, j), columns = windows) and padding entries vanish.
    cols = np.arange(1, 17, dtype=np.float64).reshape(4, 4)
    dx = kern.col2im(cols, (1, 1, 3, 3), 2, 2, 2, 1)
    # pixel (h, w) sits at padded (h+1, w+1): window (oh, ow) = ((h+1)//2, (w+1)//2),
    # offset (i, j) = ((h+1)%2, (w+1)%2), entry cols[2i + j, 2oh + ow] = 4*(2i+j) + 2oh + ow + 1
    expected = np.array([[13, 10, 14], [7, 4, 8], [15, 12, 16]], dtype=np.float64).reshape(
        1, 1, 3, 3
    )
    np.testing.assert_array_equal(dx, expected)


@BACKENDS
def test_layout_rows_are_channel_major_and_columns_image_major(kern):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    cols = kern.im2col(x, 3, 2, 1, 1)
    np.testing.assert_array_equal(cols, definition_im2col(x, 3, 2, 1, 1))
    # row (c=2, i=1, j=0), column (n=1, oh=0, ow=3) -> x_pad[1, 2, 0*1+1, 3*1+0] = x[1, 2, 0, 2]
    oh, ow = 4, 6
    assert cols[(2 * 3 + 1) * 2 + 0, 1 * oh * ow + 0 * ow + 3] == x[1, 2, 0, 2]


# ------------------------------------------------------------------------- properties
@st.composite
def geometries(draw, max_n=3, max_c=4, max_size=10):
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    stride, padding = draw(st.integers(1, 3)), draw(st.integers(0, 2))
    h = draw(st.integers(max(1, kh - 2 * padding), max_size))
    w = draw(st.integers(max(1, kw - 2 * padding), max_size))
    n, c = draw(st.integers(1, max_n)), draw(st.integers(1, max_c))
    return (n, c, h, w), kh, kw, stride, padding


@given(geometries(), st.integers(0, 2**32 - 1))
def test_both_backends_match_the_definition(geometry, seed):
    shape, kh, kw, stride, padding = geometry
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    expected = definition_im2col(x, kh, kw, stride, padding)
    for kern in (REFERENCE, NUMBA):
        cols = kern.im2col(x, kh, kw, stride, padding)
        assert cols.dtype == np.float32
        np.testing.assert_array_equal(cols, expected)


@given(geometries(), st.sampled_from([np.float32, np.float64]), st.integers(0, 2**32 - 1))
def test_col2im_is_the_adjoint_of_im2col(geometry, dtype, seed):
    # <im2col(x), c> == <x, col2im(c)> for every x and c: col2im is im2col's transpose, which
    # is exactly what the convolution's backward pass needs.
    shape, kh, kw, stride, padding = geometry
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    for kern in (REFERENCE, NUMBA):
        cols = kern.im2col(x, kh, kw, stride, padding)
        c = rng.standard_normal(cols.shape).astype(dtype)
        dx = kern.col2im(c, shape, kh, kw, stride, padding)
        assert dx.dtype == dtype and dx.shape == shape
        lhs, rhs = np.vdot(cols.astype(np.float64), c), np.vdot(x.astype(np.float64), dx)
        scale = np.vdot(np.abs(cols), np.abs(c))  # size of the sum's terms
        tol = 1e-6 if dtype == np.float32 else 1e-12
        assert abs(lhs - rhs) <= tol * scale + 1e-30


@given(geometries(), st.sampled_from([np.float32, np.float64]), st.integers(0, 2**32 - 1))
def test_numba_col2im_equals_numpy(geometry, dtype, seed):
    shape, kh, kw, stride, padding = geometry
    rng = np.random.default_rng(seed)
    oh = conv_output_size(shape[2], kh, stride, padding)
    ow = conv_output_size(shape[3], kw, stride, padding)
    cols = rng.standard_normal((shape[1] * kh * kw, shape[0] * oh * ow)).astype(dtype)
    expected = REFERENCE.col2im(cols, shape, kh, kw, stride, padding)
    got = NUMBA.col2im(cols, shape, kh, kw, stride, padding)
    assert got.dtype == dtype
    rtol = 1e-6 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=rtol * 10)


@pytest.mark.parametrize(
    "shape, k, stride, padding, out_hw",
    [
        ((2, 3, 227, 227), 11, 4, 0, 55),  # conv1
        ((2, 4, 27, 27), 5, 1, 2, 27),  # conv2
        ((2, 4, 13, 13), 3, 1, 1, 13),  # conv3-5
    ],
)
def test_alexnet_geometry_numba_equals_numpy(shape, k, stride, padding, out_hw):
    rng = np.random.default_rng(7)
    x = rng.standard_normal(shape).astype(np.float32)
    cols = NUMBA.im2col(x, k, k, stride, padding)
    assert cols.shape == (shape[1] * k * k, shape[0] * out_hw * out_hw)
    np.testing.assert_array_equal(cols, REFERENCE.im2col(x, k, k, stride, padding))
    c = rng.standard_normal(cols.shape).astype(np.float32)
    np.testing.assert_allclose(
        NUMBA.col2im(c, shape, k, k, stride, padding),
        REFERENCE.col2im(c, shape, k, k, stride, padding),
        rtol=1e-5,
        atol=1e-5,
    )


# ------------------------------------------------------------- buffers, inputs, errors
@BACKENDS
def test_out_buffer_is_filled_and_returned(kern):
    x = np.random.default_rng(2).standard_normal((2, 2, 5, 4)).astype(np.float32)
    out = np.full((2 * 9, 2 * 5 * 4), np.nan, dtype=np.float32)
    cols = kern.im2col(x, 3, 3, 1, 1, out=out)
    assert cols is out
    np.testing.assert_array_equal(out, definition_im2col(x, 3, 3, 1, 1))
    dx_out = np.full(x.shape, np.nan, dtype=np.float32)
    assert kern.col2im(out, x.shape, 3, 3, 1, 1, out=dx_out) is dx_out
    assert np.isfinite(dx_out).all()


@BACKENDS
def test_inputs_are_not_modified(kern):
    x = np.random.default_rng(3).standard_normal((2, 3, 6, 7))
    x_before = x.copy()
    cols = kern.im2col(x, 3, 3, 2, 1)
    cols_before = cols.copy()
    kern.col2im(cols, x.shape, 3, 3, 2, 1)
    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_array_equal(cols, cols_before)


@BACKENDS
def test_non_contiguous_input(kern):
    x = np.random.default_rng(4).standard_normal((3, 4, 6, 5)).astype(np.float32)
    view = x[:, ::2]  # (3, 2, 6, 5), not contiguous
    np.testing.assert_array_equal(
        kern.im2col(view, 2, 3, 1, 0), definition_im2col(np.ascontiguousarray(view), 2, 3, 1, 0)
    )


@BACKENDS
def test_clear_errors(kern):
    with pytest.raises(ValueError, match="does not fit"):
        kern.im2col(X3, 4, 4, 1, 0)  # kernel larger than the 3x3 image
    with pytest.raises(ValueError, match=r"C\*KH\*KW, N\*OH\*OW"):
        kern.col2im(np.zeros((4, 5), np.float32), (1, 1, 3, 3), 2, 2, 1, 0)
    with pytest.raises(ValueError, match="out must be"):
        kern.im2col(X3, 2, 2, 1, 0, out=np.zeros((4, 5), np.float32))
    with pytest.raises(ValueError, match="out must be"):
        kern.im2col(X3, 2, 2, 1, 0, out=np.zeros((4, 4), np.float64))
