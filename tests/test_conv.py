"""Conv2D: hand-computed cases, groups, gradient checks, numba == numpy, AlexNet's geometry."""

import threading

import numpy as np
import pytest
from helpers import check_gradients_reused_in_place, check_weight_gradients_alone
from hypothesis import given, settings
from hypothesis import strategies as st

from minialexnet.backend import use_backend
from minialexnet.gradcheck import check_layer
from minialexnet.layers import Conv2D, workspace
from minialexnet.shapes import conv_output_size

BACKENDS = pytest.mark.parametrize("backend", ["numba", "numpy"])
X3 = np.arange(1, 10, dtype=np.float32).reshape(1, 1, 3, 3)  # [[1,2,3],[4,5,6],[7,8,9]]
W22 = np.array([[[[1, 2], [3, 4]]]], dtype=np.float32)  # one 2x2 filter


def make_conv(weights, bias, **kwargs):
    f, cg, kh, kw = weights.shape
    layer = Conv2D(cg * kwargs.get("groups", 1), f, (kh, kw), **kwargs)
    layer.params["W"] = np.array(weights, dtype=np.float32)
    layer.params["b"] = np.array(bias, dtype=np.float32)
    return layer


def definition_conv(x, weights, bias, stride, padding, groups):
    """y[n,f,oh,ow] = b[f] + sum_{c in group(f), i, j} W[f,c,i,j] x_pad[n,c,oh*s+i,ow*s+j]."""
    n, c, h, w = x.shape
    f, cg, kh, kw = weights.shape
    oh, ow = conv_output_size(h, kh, stride, padding), conv_output_size(w, kw, stride, padding)
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    y = np.empty((n, f, oh, ow))
    fg = f // groups
    for fi in range(f):
        g = fi // fg
        for a in range(oh):
            for b in range(ow):
                window = xp[
                    :,
                    g * cg : (g + 1) * cg,
                    a * stride : a * stride + kh,
                    b * stride : b * stride + kw,
                ]
                y[:, fi, a, b] = bias[fi] + np.einsum("ncij,cij->n", window, weights[fi])
    return y


# ------------------------------------------------------------------ hand-computed cases
@BACKENDS
def test_2x2_kernel_on_3x3_by_hand(backend):
    layer = make_conv(W22, [0.5])
    with use_backend(backend):
        y = layer.forward(X3)
        # y[0,0] = 1*1 + 2*2 + 3*4 + 4*5 + 0.5, and so on for the other three windows
        np.testing.assert_array_equal(y, [[[[37.5, 47.5], [67.5, 77.5]]]])
        dy = np.array([[[[1, -1], [2, 0.5]]]], dtype=np.float32)
        dx = layer.backward(dy)
    # db = sum(dy); dW[i,j] = sum dy[oh,ow] x[oh+i, ow+j]; dx[h,w] = sum dy[oh,ow] W[h-oh, w-ow]
    np.testing.assert_array_equal(layer.grads["b"], [2.5])
    np.testing.assert_array_equal(layer.grads["W"], [[[[9.5, 12], [17, 19.5]]]])
    np.testing.assert_array_equal(dx, [[[[1, 1, -2], [5, 5.5, -3], [6, 9.5, 2]]]])
    assert y.dtype == dx.dtype == layer.grads["W"].dtype == layer.grads["b"].dtype == np.float32


@BACKENDS
def test_stride2_padding1_by_hand(backend):
    # The 2x2 windows of the zero-padded 5x5 image: [[0,0],[0,1]], [[0,0],[2,3]],
    # [[0,4],[0,7]], [[5,6],[8,9]], each dotted with W = [[1,2],[3,4]].
    layer = make_conv(W22, [0.0], stride=2, padding=1)
    with use_backend(backend):
        y = layer.forward(X3)
        np.testing.assert_array_equal(y, [[[[4, 18], [36, 77]]]])
        dx = layer.backward(np.array([[[[1, 2], [3, 4]]]], dtype=np.float32))
    # The windows tile the padded image: pixel (h, w) gets dy[window] * W[offset] once, e.g.
    # x[0,0] sits at offset (1,1) of window (0,0): 1*4; x[1,1] at offset (0,0) of window (1,1).
    np.testing.assert_array_equal(dx, [[[[4, 6, 8], [6, 4, 8], [12, 12, 16]]]])
    # dW[i,j] = sum over windows of dy * (window entry at (i,j)): dW[0,0] = 4*5,
    # dW[0,1] = 3*4 + 4*6, dW[1,0] = 2*2 + 4*8, dW[1,1] = 1*1 + 2*3 + 3*7 + 4*9
    np.testing.assert_array_equal(layer.grads["W"], [[[[20, 36], [36, 64]]]])
    np.testing.assert_array_equal(layer.grads["b"], [10])


@BACKENDS
def test_groups_2_by_hand_each_filter_sees_only_its_half(backend):
    # 1x1 kernels, groups=2: filter 0 reads channel 0 only, filter 1 channel 1 only.
    x = np.array([[[[1, 2], [3, 4]], [[10, 20], [30, 40]]]], dtype=np.float32)
    layer = make_conv(np.array([[[[2.0]]], [[[-1.0]]]]), [0.0, 1.0], groups=2)
    assert layer.params["W"].shape == (2, 1, 1, 1)
    with use_backend(backend):
        y = layer.forward(x)
        np.testing.assert_array_equal(y, [[[[2, 4], [6, 8]], [[-9, -19], [-29, -39]]]])
        dx = layer.backward(np.array([[[[1, 0], [0, 2]], [[3, 0], [1, 0]]]], dtype=np.float32))
    np.testing.assert_array_equal(dx, [[[[2, 0], [0, 4]], [[-3, 0], [-1, 0]]]])
    np.testing.assert_array_equal(layer.grads["W"].ravel(), [1 + 8, 30 + 30])
    np.testing.assert_array_equal(layer.grads["b"], [3, 4])


@BACKENDS
def test_groups_2_equals_two_separate_convolutions(backend):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 6, 7, 5)).astype(np.float32)
    grouped = Conv2D(6, 4, 3, stride=1, padding=1, groups=2, rng=rng)
    grouped.params["b"] = rng.standard_normal(4).astype(np.float32)
    halves = []
    for g in range(2):
        half = Conv2D(3, 2, 3, stride=1, padding=1, rng=rng)
        half.params["W"] = grouped.params["W"][2 * g : 2 * g + 2].copy()
        half.params["b"] = grouped.params["b"][2 * g : 2 * g + 2].copy()
        halves.append(half)
    dy = rng.standard_normal((2, 4, 7, 5)).astype(np.float32)
    with use_backend(backend):
        y = grouped.forward(x)
        dx = grouped.backward(dy)
        for g, half in enumerate(halves):
            np.testing.assert_allclose(
                y[:, 2 * g : 2 * g + 2],
                half.forward(x[:, 3 * g : 3 * g + 3]),
                rtol=1e-5,
                atol=1e-6,
            )
            np.testing.assert_allclose(
                dx[:, 3 * g : 3 * g + 3],
                half.backward(dy[:, 2 * g : 2 * g + 2]),
                rtol=1e-5,
                atol=1e-6,
            )
            np.testing.assert_allclose(
                grouped.grads["W"][2 * g : 2 * g + 2], half.grads["W"], rtol=1e-5, atol=1e-6
            )


def test_group_outputs_ignore_the_other_groups_channels():
    rng = np.random.default_rng(1)
    layer = Conv2D(4, 6, (3, 2), padding=1, groups=2, rng=rng)
    x = rng.standard_normal((2, 4, 5, 6)).astype(np.float32)
    changed = x.copy()
    changed[:, 2:] = rng.standard_normal((2, 2, 5, 6))  # only group 1's channels
    y, y_changed = layer.forward(x), layer.forward(changed)
    np.testing.assert_array_equal(y[:, :3], y_changed[:, :3])
    assert not np.allclose(y[:, 3:], y_changed[:, 3:])


# ------------------------------------------------------------------------- properties
@st.composite
def conv_cases(draw, max_size=8):
    groups = draw(st.sampled_from([1, 2]))
    c, f = groups * draw(st.integers(1, 3)), groups * draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride, padding = draw(st.integers(1, 3)), draw(st.integers(0, 2))
    h = draw(st.integers(max(1, kh - 2 * padding), max_size))
    w = draw(st.integers(max(1, kw - 2 * padding), max_size).filter(lambda v: v != h))
    n = draw(st.integers(1, 3))
    return dict(
        shape=(n, c, h, w),
        c=c,
        f=f,
        k=(kh, kw),
        stride=stride,
        padding=padding,
        groups=groups,
        seed=draw(st.integers(0, 2**32 - 1)),
    )


def build(case):
    rng = np.random.default_rng(case["seed"])
    layer = Conv2D(
        case["c"], case["f"], case["k"], case["stride"], case["padding"], case["groups"], rng=rng
    )
    layer.params["W"] = rng.standard_normal(layer.params["W"].shape).astype(np.float32)
    layer.params["b"] = rng.standard_normal(case["f"]).astype(np.float32)
    x = rng.standard_normal(case["shape"]).astype(np.float32)
    return layer, x, rng


@given(conv_cases())
def test_forward_matches_the_definition(case):
    layer, x, _ = build(case)
    y = layer.forward(x)
    expected = definition_conv(
        x, layer.params["W"], layer.params["b"], case["stride"], case["padding"], case["groups"]
    )
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)


@settings(max_examples=20)
@given(conv_cases())
def test_gradients_match_finite_differences(case):
    layer, x, rng = build(case)
    errors = check_layer(layer, x, rng=rng, max_entries=40)
    assert max(errors.values()) < 1e-6, errors


@settings(max_examples=5)
@given(conv_cases())
def test_gradients_match_finite_differences_numpy_backend(case):
    layer, x, rng = build(case)
    with use_backend("numpy"):
        errors = check_layer(layer, x, rng=rng, max_entries=40)
    assert max(errors.values()) < 1e-6, errors


@given(conv_cases(max_size=12))
def test_numba_equals_numpy_forward_and_backward(case):
    layer, x, rng = build(case)
    out = {}
    for backend in ("numpy", "numba"):
        with use_backend(backend):
            y = layer.forward(x)
            dy = np.random.default_rng(case["seed"]).standard_normal(y.shape).astype(np.float32)
            dx = layer.backward(dy)
            out[backend] = (y, dx, layer.grads["W"].copy(), layer.grads["b"].copy())
    for a, b in zip(out["numpy"], out["numba"]):
        assert a.dtype == b.dtype == np.float32
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)


@settings(max_examples=20)
@given(conv_cases(max_size=12), st.sampled_from(["numba", "numpy"]))
def test_weight_gradients_alone_equal_those_of_a_full_backward(case, backend):
    # need_dx=False (the network's first layer) skips dx, not the weight gradients: the same
    # numbers, bit for bit, since the GEMMs that make them run on the same operands.
    layer, x, rng = build(case)
    dy = rng.standard_normal((x.shape[0], *layer.output_shape(x.shape[1:]))).astype(np.float32)
    with use_backend(backend):
        check_weight_gradients_alone(layer, x, dy)


def test_winograd_weight_gradients_alone_equal_those_of_a_full_backward():
    rng = np.random.default_rng(5)
    layer = Conv2D(4, 6, 3, padding=1, groups=2, rng=rng, algorithm="winograd")
    x = rng.standard_normal((2, 4, 7, 9)).astype(np.float32)
    check_weight_gradients_alone(layer, x, rng.standard_normal((2, 6, 7, 9)).astype(np.float32))


@pytest.mark.parametrize(
    "name, c, f, k, stride, padding, groups, size, out",
    [
        ("conv1", 3, 4, 11, 4, 0, 1, 227, 55),
        ("conv2", 4, 4, 5, 1, 2, 2, 27, 27),
        ("conv3", 4, 6, 3, 1, 1, 1, 13, 13),
        ("conv4", 6, 6, 3, 1, 1, 2, 13, 13),
        ("conv5", 6, 4, 3, 1, 1, 2, 13, 13),
    ],
)
def test_alexnet_geometry(name, c, f, k, stride, padding, groups, size, out):
    rng = np.random.default_rng(5)
    layer = Conv2D(c, f, k, stride, padding, groups, rng=rng)
    layer.params["W"] = rng.standard_normal(layer.params["W"].shape).astype(np.float32)
    assert layer.output_shape((c, size, size)) == (f, out, out)
    x = rng.standard_normal((2, c, size, size)).astype(np.float32)
    assert layer.forward(x).shape == (2, f, out, out)
    errors = check_layer(layer, x, rng=rng, max_entries=12)
    assert max(errors.values()) < 1e-6, (name, errors)


def test_paper_layer_sizes_params_and_macs():
    # docs/design.md §3: parameters and per-image multiply-accumulates of the paper's conv layers.
    table = [
        ((3, 96, 11, 4, 0, 1), (3, 227, 227), (96, 55, 55), 34_944, 105_415_200),
        ((96, 256, 5, 1, 2, 2), (96, 27, 27), (256, 27, 27), 307_456, 223_948_800),
        ((256, 384, 3, 1, 1, 1), (256, 13, 13), (384, 13, 13), 885_120, 149_520_384),
        ((384, 384, 3, 1, 1, 2), (384, 13, 13), (384, 13, 13), 663_936, 112_140_288),
        ((384, 256, 3, 1, 1, 2), (384, 13, 13), (256, 13, 13), 442_624, 74_760_192),
    ]
    for args, in_shape, out_shape, params, macs in table:
        layer = Conv2D(*args, rng=np.random.default_rng(0))
        assert layer.output_shape(in_shape) == out_shape
        assert sum(p.size for p in layer.params.values()) == params
        assert layer.macs(in_shape) == macs


# ------------------------------------------------------- protocol, dtypes, inputs, errors
@BACKENDS
def test_backward_does_not_modify_dy_or_x_and_keeps_dtype(backend):
    rng = np.random.default_rng(2)
    for dtype in (np.float32, np.float64):
        layer = Conv2D(4, 6, 3, stride=2, padding=1, groups=2, rng=rng).astype(dtype)
        x = rng.standard_normal((2, 4, 9, 7)).astype(dtype)
        x_before = x.copy()
        with use_backend(backend):
            y = layer.forward(x)
            dy = rng.standard_normal(y.shape).astype(dtype)
            dy_before = dy.copy()
            dx = layer.backward(dy)
            dx_again = layer.backward(dy)  # same cache, same answer
        np.testing.assert_array_equal(x, x_before)
        np.testing.assert_array_equal(dy, dy_before)
        np.testing.assert_array_equal(dx, dx_again)
        assert y.dtype == dx.dtype == dtype
        assert all(g.dtype == dtype for g in layer.grads.values())


def test_returned_arrays_are_not_overwritten_by_later_calls():
    # The layer reuses scratch buffers; what it returns must stay valid.
    rng = np.random.default_rng(3)
    layer = Conv2D(3, 4, 3, padding=1, rng=rng)
    x1, x2 = rng.standard_normal((2, 2, 3, 6, 6)).astype(np.float32)
    y1 = layer.forward(x1)
    dx1 = layer.backward(rng.standard_normal(y1.shape).astype(np.float32))
    y1_copy, dx1_copy = y1.copy(), dx1.copy()
    layer.backward(2 * layer.forward(x2))
    np.testing.assert_array_equal(y1, y1_copy)
    np.testing.assert_array_equal(dx1, dx1_copy)


def test_weight_gradients_are_written_in_place_from_call_to_call():
    # Grouped, strided and padded, so the (G, rows, F/G) -> W-shaped copy is exercised.
    rng = np.random.default_rng(12)
    weights = rng.standard_normal((6, 2, 3, 3)).astype(np.float32)

    def make():
        layer = Conv2D(4, 6, 3, stride=2, padding=1, groups=2)
        layer.params["W"] = weights.copy()
        return layer

    x = rng.standard_normal((2, 4, 9, 7)).astype(np.float32)
    dy1, dy2 = rng.standard_normal((2, 2, 6, 5, 4)).astype(np.float32)
    check_gradients_reused_in_place(make, x, dy1, dy2)


def test_winograd_weight_gradients_are_written_in_place_from_call_to_call():
    rng = np.random.default_rng(13)
    weights = rng.standard_normal((6, 2, 3, 3)).astype(np.float32)

    def make():
        layer = Conv2D(4, 6, 3, padding=1, groups=2, algorithm="winograd")
        layer.params["W"] = weights.copy()
        return layer

    x = rng.standard_normal((2, 4, 7, 6)).astype(np.float32)
    dy1, dy2 = rng.standard_normal((2, 2, 6, 7, 6)).astype(np.float32)
    check_gradients_reused_in_place(make, x, dy1, dy2)


def test_default_init_matches_the_paper():
    layer = Conv2D(96, 256, 5, padding=2, groups=2, rng=np.random.default_rng(0))
    assert layer.params["W"].shape == (256, 48, 5, 5)
    assert layer.params["W"].dtype == layer.params["b"].dtype == np.float32
    assert abs(layer.params["W"].std() - 0.01) < 5e-4 and abs(layer.params["W"].mean()) < 5e-4
    np.testing.assert_array_equal(layer.params["b"], 0)


def test_clear_errors():
    layer = Conv2D(3, 4, 3)
    with pytest.raises(ValueError, match="C=3"):
        layer.forward(np.zeros((1, 2, 8, 8), np.float32))  # wrong channels
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        layer.forward(np.zeros((3, 8, 8), np.float32))  # missing batch axis
    with pytest.raises(TypeError, match="float32"):
        layer.forward(np.zeros((1, 3, 8, 8), np.int64))  # integer pixels
    with pytest.raises(ValueError, match="does not fit"):
        layer.forward(np.zeros((1, 3, 2, 8), np.float32))  # kernel > padded input
    with pytest.raises(RuntimeError, match="before forward"):
        Conv2D(3, 4, 3).backward(np.zeros((1, 4, 6, 6), np.float32))
    layer.forward(np.zeros((1, 3, 8, 8), np.float32))
    with pytest.raises(ValueError, match=r"\(1, 4, 6, 6\)"):
        layer.backward(np.zeros((1, 4, 6, 5), np.float32))  # dy of the wrong shape
    with pytest.raises(ValueError, match="groups=2 must divide"):
        Conv2D(3, 4, 3, groups=2)
    with pytest.raises(ValueError, match="kernel_size"):
        Conv2D(3, 4, (3, 3, 3))
    with pytest.raises(ValueError, match="padding"):
        Conv2D(3, 4, 3, padding=-1)


@settings(max_examples=20)
@given(conv_cases(), st.integers(1, 3))
def test_chunked_batch_equals_the_whole_batch_at_once(case, images_per_chunk):
    # Chunks of 1-3 images (cols within chunk_bytes) against one chunk holding the batch:
    # y and dx up to float rounding, dW and db up to the order of the sums over the batch.
    layer, x, _ = build(case)
    dy = (
        np.random.default_rng(case["seed"])
        .standard_normal((x.shape[0], *layer.output_shape(x.shape[1:])))
        .astype(np.float32)
    )
    results = []
    layer.min_chunk_columns = 0  # else the floor of columns makes these tiny images one chunk
    for chunk_images in (images_per_chunk, x.shape[0]):
        image_bytes = layer._rows_of_cols() * dy.shape[2] * dy.shape[3] * 4
        layer.chunk_bytes = chunk_images * image_bytes
        assert len(layer._chunks(x.shape[0], dy.shape[2] * dy.shape[3], np.float32)) == -(
            -x.shape[0] // chunk_images
        )
        y = layer.forward(x)
        dx = layer.backward(dy)
        results.append((y, dx, layer.grads["W"].copy(), layer.grads["b"].copy()))
    chunked, whole = results
    np.testing.assert_allclose(chunked[0], whole[0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(chunked[1], whole[1], rtol=1e-6, atol=1e-6)
    for a, b in zip(chunked[2:], whole[2:]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_chunks_fit_chunk_bytes_but_keep_the_column_floor():
    layer = Conv2D(4, 6, 3, padding=1)  # columns of one 8x8 image: 36 rows x 64 windows
    image_bytes = 36 * 64 * 4
    layer.chunk_bytes, layer.min_chunk_columns = 3 * image_bytes, 0
    assert layer._chunks(7, 64, np.float32) == [(0, 3), (3, 6), (6, 7)]
    layer.min_chunk_columns = 4 * 64 + 1  # needs 5 images: the floor wins over the bytes
    assert layer._chunks(7, 64, np.float32) == [(0, 5), (5, 7)]
    layer.chunk_bytes, layer.min_chunk_columns = 1, 0  # still one image at least
    assert layer._chunks(2, 64, np.float32) == [(0, 1), (1, 2)]
    assert layer._chunks(2, 64, np.float64) == [(0, 1), (1, 2)]


def test_backward_keeps_only_x_between_the_passes():
    # Memory: no whole-batch im2col matrix survives forward; the scratch buffers stay
    # within one chunk (here chunk_bytes of one image's columns).
    layer = Conv2D(4, 6, 3, padding=1)
    layer.chunk_bytes = 4 * 9 * 8 * 8 * 4  # C*KH*KW x OH*OW floats
    layer.min_chunk_columns = 0  # no floor: one image per chunk
    x = np.ones((5, 4, 8, 8), dtype=np.float32)
    workspace.release()  # earlier tests' larger buffers would hide the sizes
    layer.forward(x)
    assert layer._cache is x
    assert set(workspace.held()) == {"cols", "activations"}
    assert all(nbytes <= layer.chunk_bytes for nbytes in workspace.held().values())


def test_conv_layers_share_one_workspace_per_thread():
    # Memory: the paper's five conv layers never run at once, so their scratch is one set
    # (per thread), sized by the largest layer, not one set each.
    rng = np.random.default_rng(3)
    small, large = Conv2D(3, 4, 3, padding=1, rng=rng), Conv2D(8, 16, 5, padding=2, rng=rng)
    x_small = rng.standard_normal((2, 3, 9, 9)).astype(np.float32)
    x_large = rng.standard_normal((3, 8, 11, 11)).astype(np.float32)
    workspace.release()
    large.backward(rng.standard_normal(large.forward(x_large).shape).astype(np.float32))
    after_large = workspace.held()
    y_small = small.forward(x_small)
    dx_small = small.backward(np.ones_like(y_small))
    assert workspace.held() == after_large  # the smaller layer reused the same buffers
    # What a layer returns never lives in the workspace: the next layer cannot overwrite it.
    y_copy, dx_copy = y_small.copy(), dx_small.copy()
    large.backward(rng.standard_normal(large.forward(x_large).shape).astype(np.float32))
    np.testing.assert_array_equal(y_small, y_copy)
    np.testing.assert_array_equal(dx_small, dx_copy)


def test_each_thread_has_its_own_workspace():
    # The towers of §3.2 run conv layers on two threads at once: they must not share scratch.
    workspace.release()
    workspace.scratch("cols", (4, 5), np.float32)[:] = 1.0
    seen = {}

    def other_thread():
        seen["before"] = workspace.held()
        workspace.scratch("cols", (4, 5), np.float32)[:] = 2.0

    thread = threading.Thread(target=other_thread)
    thread.start()
    thread.join()
    assert seen["before"] == {}
    assert (workspace.scratch("cols", (4, 5), np.float32) == 1.0).all()
