"""Winograd F(2x2, 3x3) and F(4x4, 5x5): the transforms by hand, kernels numba == numpy, and the
layer against im2col (forward, dx, dW, db) and float64 central differences."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minialexnet.backend import use_backend
from minialexnet.gradcheck import check_layer
from minialexnet.kernels import cpu as NUMBA
from minialexnet.kernels import numpy as REFERENCE
from minialexnet.kernels.numpy.winograd import F2x2_3x3, F4x4_5x5, tile_grid, toom_cook
from minialexnet.layers import Conv2D, winograd
from minialexnet.model import AlexNet

BACKENDS = pytest.mark.parametrize("backend", ["numba", "numpy"])
TRANSFORMS = {3: F2x2_3x3, 5: F4x4_5x5}  # by kernel size


# ------------------------------------------------------------------ hand-computed cases
def test_one_dimensional_f23_is_a_correlation():
    # F(2, 3): two outputs of a 3-tap correlation from 4 inputs, A^T [(G g) * (B^T d)].
    tf = F2x2_3x3
    d, g = np.array([1.0, -2.0, 3.0, 5.0]), np.array([2.0, 0.5, -1.0])
    y = tf.output_t @ ((tf.filter @ g) * (tf.input_t @ d))
    # y0 = 1*2 - 2*0.5 + 3*(-1) = -2;  y1 = -2*2 + 3*0.5 + 5*(-1) = -7.5
    np.testing.assert_allclose(y, [-2.0, -7.5], rtol=0, atol=1e-12)


def test_one_dimensional_f45_is_a_correlation():
    # F(4, 5): four outputs of a 5-tap correlation from 8 inputs.
    tf = F4x4_5x5
    d, g = np.array([1.0, -2.0, 3.0, 5.0, 0.0, 4.0, -1.0, 2.0]), np.array([1.0, 0, 2, 0, -1])
    y = tf.output_t @ ((tf.filter @ g) * (tf.input_t @ d))
    # y_i = d_i + 2 d_(i+2) - d_(i+4):  1+6-0 = 7;  -2+10-4 = 4;  3+0+1 = 4;  5+8-2 = 11
    np.testing.assert_allclose(y, [7.0, 4.0, 4.0, 11.0], rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "m, r, points", [(2, 3, (0, 1, -1)), (4, 5, (0, 1, -1, 2, -2, 0.5, -0.5))]
)
def test_toom_cook_matrices_compute_every_correlation(m, r, points):
    # sum_j A^T[i, j] G[j, k] B^T[j, l] = [l == i + k]: y_i = sum_k g_k d_(i+k) for all d, g.
    tf = toom_cook(m, r, points)
    assert (tf.m, tf.r, tf.alpha) == (m, r, m + r - 1)
    products = np.einsum("ij,jk,jl->ikl", tf.output_t, tf.filter, tf.input_t)
    expected = np.array([[np.eye(tf.alpha)[i + k] for k in range(r)] for i in range(m)])
    np.testing.assert_allclose(products, expected, rtol=0, atol=1e-12)


def test_toom_cook_on_three_points_is_lavin_and_grays_f23_up_to_signs():
    # Lavin & Gray negate B^T's first and last rows, G's first row and A^T's last column:
    # every product A^T[i, j] G[j, k] B^T[j, l] is unchanged.
    tf = toom_cook(2, 3, (0, 1, -1))
    np.testing.assert_array_equal(tf.input_t * [[-1], [1], [1], [-1]], F2x2_3x3.input_t)
    np.testing.assert_array_equal(tf.filter * [[-1], [1], [1], [1]], F2x2_3x3.filter)
    np.testing.assert_array_equal(tf.output_t * [1, 1, 1, -1], F2x2_3x3.output_t)


def test_toom_cook_rejects_repeated_points():
    with pytest.raises(ValueError, match="5 distinct finite points"):
        toom_cook(4, 3, (0, 1, -1, 2, 2))


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


@BACKENDS
def test_f45_ones_filter_on_a_ramp_by_hand(backend):
    # x[h, w] = w; a 5x5 filter of ones sums 5 rows of w .. w+4: 25 w + 50. A 6x10 input gives
    # a 2x6 output: two tiles of 4x4, both cut off (rows 2-3, columns 6-7).
    x = np.tile(np.arange(10, dtype=np.float32), (1, 1, 6, 1))
    layer = Conv2D(1, 1, 5, algorithm="winograd")
    layer.params["W"] = np.ones((1, 1, 5, 5), dtype=np.float32)
    with use_backend(backend):
        y = layer.forward(x)
        dx = layer.backward(np.ones_like(y))
    np.testing.assert_allclose(y[0, 0], np.tile(25.0 * np.arange(6) + 50, (2, 1)), rtol=1e-5)
    # dx counts the windows covering each pixel: (rows 1,2,2,2,2,1) x (columns 1,2,3,4,5,6,5,...)
    rows, cols = np.array([1, 2, 2, 2, 2, 1]), np.array([1, 2, 3, 4, 5, 5, 4, 3, 2, 1])
    np.testing.assert_allclose(dx[0, 0], np.outer(rows, cols), rtol=1e-5, atol=1e-5)


def test_tile_grid_rounds_outputs_up_to_whole_tiles():
    assert tile_grid(13, 13, 1, F2x2_3x3) == (13, 13, 7, 7)  # conv3-5: 7x7 tiles, 14x14 cut
    assert tile_grid(4, 6, 0, F2x2_3x3) == (2, 4, 1, 2)
    assert tile_grid(27, 27, 2, F4x4_5x5) == (27, 27, 7, 7)  # conv2: 7x7 tiles, 28x28 cut


def test_bad_choices_get_clear_errors():
    with pytest.raises(ValueError, match="3x3 or 5x5 kernel at stride 1"):
        Conv2D(2, 2, 7, algorithm="winograd")
    with pytest.raises(ValueError, match="3x3 or 5x5 kernel at stride 1"):
        Conv2D(2, 2, 3, stride=2, algorithm="winograd")
    with pytest.raises(ValueError, match="3x3 or 5x5 kernel at stride 1"):
        Conv2D(2, 2, (3, 5), algorithm="winograd")
    with pytest.raises(ValueError, match="unknown algorithm"):
        Conv2D(2, 2, 3, algorithm="fft")
    # "auto" takes any geometry: Winograd only where it has a transform
    layer = Conv2D(2, 2, 7, algorithm="auto")
    assert layer.algorithm_for((64, 2, 30, 30)) == "im2col"


def algorithms_chosen(model: AlexNet, batch: int) -> dict[str, str]:
    """What each conv layer of ``model`` computes with for a batch of ``batch`` images (its
    input shape: the previous row of ``shape_trace``)."""
    trace = model.shape_trace()
    return {
        row.name: model.layers[row.name].algorithm_for((batch, *before.output_shape))
        for before, row in zip(trace, trace[1:])
        if isinstance(model.layers[row.name], Conv2D)
    }


def test_alexnet_picks_winograd_only_for_wide_stride_1_layers_and_large_batches():
    # conv1 is 11x11 stride 4; the paper's conv2 (48x128 weights per group, 5x5) and conv3-conv5
    # (256x384, 192x192 and 192x128, 3x3) are wide enough; mini's (16x32; 64x96, 48x48,
    # 48x32) are not. conv3-conv5 need 16 images (49 tiles each); conv2 gains at any batch.
    paper, mini = AlexNet(10, "paper"), AlexNet(10, "mini")
    assert {layer.algorithm for layer in paper.layers.values() if isinstance(layer, Conv2D)} == {
        "auto"
    }
    winograd_from_conv2 = {"conv1": "im2col"} | {f"conv{i}": "winograd" for i in range(2, 6)}
    assert algorithms_chosen(paper, 32) == winograd_from_conv2
    assert algorithms_chosen(paper, 16) == winograd_from_conv2
    only_conv2 = {"conv1": "im2col", "conv2": "winograd"} | {
        f"conv{i}": "im2col" for i in (3, 4, 5)
    }
    assert algorithms_chosen(paper, 15) == only_conv2
    assert algorithms_chosen(paper, 1) == only_conv2
    assert set(algorithms_chosen(mini, 128).values()) == {"im2col"}
    # the thresholds themselves, both sides of them
    assert winograd.worthwhile(256, 256, 2) and winograd.worthwhile(128, 128, 1)
    assert not winograd.worthwhile(256, 254, 2) and not winograd.worthwhile(64, 96, 1)
    assert winograd.worthwhile(96, 256, 2, 5) and not winograd.worthwhile(96, 254, 2, 5)
    assert not winograd.worthwhile(96, 256, 2, 7)  # no transform for 7x7
    assert winograd.enough_tiles((16, 8, 13, 13), 3, 1)  # 16 x 7 x 7 = 784 tiles
    assert not winograd.enough_tiles((15, 8, 13, 13), 3, 1)
    assert winograd.enough_tiles((4, 8, 28, 28), 3, 1)  # 4 x 14 x 14 = 784 tiles
    assert not winograd.enough_tiles((4, 8, 28, 27), 3, 0)  # 4 x 13 x 13 = 676
    assert winograd.enough_tiles((1, 8, 5, 5), 5, 0)  # F(4x4, 5x5): one tile is enough


@pytest.mark.parametrize("batch, expected", [(16, "winograd"), (15, "im2col")])
def test_auto_computes_exactly_what_the_algorithm_it_picks_computes(batch, expected):
    # The same weights in three layers; "auto" must give, bit for bit, the outputs and
    # gradients of the explicit algorithm it picks for this batch (16 images of 13x13 with
    # padding 1: 784 tiles, the least for which Winograd is picked).
    rng = np.random.default_rng(3)
    layers = {
        algorithm: Conv2D(
            128, 128, 3, padding=1, rng=np.random.default_rng(0), algorithm=algorithm
        )
        for algorithm in ("auto", "im2col", "winograd")
    }
    x = rng.standard_normal((batch, 128, 13, 13)).astype(np.float32)
    dy = rng.standard_normal((batch, 128, 13, 13)).astype(np.float32)
    assert layers["auto"].algorithm_for(x.shape) == expected
    results = {}
    for algorithm, layer in layers.items():
        y = layer.forward(x, train=True)
        results[algorithm] = (y, layer.backward(dy), layer.grads["W"], layer.grads["b"])
    other = "im2col" if expected == "winograd" else "winograd"
    for auto, chosen in zip(results["auto"], results[expected]):
        np.testing.assert_array_equal(auto, chosen)
    # and the two algorithms do differ in rounding, so the comparison above tells them apart
    assert not np.array_equal(results[expected][0], results[other][0])


# ---------------------------------------------------------------- properties and agreement
@st.composite
def winograd_cases(draw, max_size=9):
    kernel = draw(st.sampled_from([3, 5]))
    groups = draw(st.sampled_from([1, 2]))
    padding = draw(st.integers(0, 2))
    h = draw(st.integers(max(1, kernel - 2 * padding), max_size))
    w = draw(st.integers(max(1, kernel - 2 * padding), max_size))
    return dict(
        kernel=kernel,
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
        c,
        case["f"],
        case["kernel"],
        1,
        case["padding"],
        case["groups"],
        rng=rng,
        algorithm=algorithm,
    )
    layer.params["W"] = rng.standard_normal(layer.params["W"].shape).astype(np.float32)
    layer.params["b"] = rng.standard_normal(case["f"]).astype(np.float32)
    return layer, rng.standard_normal(case["shape"]).astype(np.float32), rng


def run_both(case, backend="numba"):
    """(y, dx, dW, db) of the same layer through im2col and through Winograd, and the scale of
    each: the same sums over absolute values (float64), which bound their rounding error."""
    out = []
    for algorithm in ("im2col", "winograd", "scale"):
        layer, x, _ = build(case, "im2col" if algorithm == "scale" else algorithm)
        dy = np.random.default_rng(case["seed"] + 1).standard_normal(
            (x.shape[0], *layer.output_shape(x.shape[1:]))
        )
        if algorithm == "scale":
            layer.params = {name: np.abs(p) for name, p in layer.params.items()}
            x, dy = np.abs(x).astype(np.float64), np.abs(dy)
        with use_backend(backend):
            y = layer.forward(x)
            dx = layer.backward(dy.astype(x.dtype))
        out.append((y, dx, layer.grads["W"], layer.grads["b"]))
    return out


#: Winograd's float32 error as a fraction of the largest sum of absolute terms in the result
#: (``run_both``'s scale). A sum of K float32 products by im2col is off by at most about
#: K * 2^-24 of its absolute terms; Winograd mixes the terms of a whole tile in its transforms
#: (an entry whose terms are all 0 may come out as 1e-6) and multiplies the rounding by its
#: matrices' norms (F(4x4, 5x5)'s B^T has entries up to 21/4). Largest seen over 6,000
#: random cases of ``winograd_cases`` (up to 12x12): 4.3e-7 for F(2x2, 3x3), 1.6e-5 for
#: F(4x4, 5x5); on AlexNet's conv2-conv5 2.2e-6 and 1.6e-7. By kernel size, 10x those:
TOLERANCE = {3: 4e-6, 5: 2e-4}


def assert_close(a, b, scale, kernel):
    """|b - a| within ``TOLERANCE`` of the largest sum of absolute terms behind an entry."""
    error = np.abs(b.astype(np.float64) - a).max()
    assert error <= TOLERANCE[kernel] * scale.max(), (error, scale.max())


@given(winograd_cases())
def test_winograd_equals_im2col_forward_and_both_gradients(case):
    by_im2col, by_winograd, scales = run_both(case)
    for a, b, scale in zip(by_im2col, by_winograd, scales):
        assert a.shape == b.shape and b.dtype == np.float32
        assert_close(a, b, scale, case["kernel"])


@settings(max_examples=10)
@given(winograd_cases(max_size=6))
def test_winograd_numpy_backend_equals_im2col(case):
    for a, b, scale in zip(*run_both(case, backend="numpy")):
        assert_close(a, b, scale, case["kernel"])


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
    g, f, p, tf = case["groups"], case["f"], case["padding"], TRANSFORMS[case["kernel"]]
    out_h, out_w, th, tw = tile_grid(h, w, p, tf)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    a2 = tf.alpha**2
    grad_v = rng.standard_normal((a2, g, c // g, n * th * tw)).astype(np.float32)
    m = rng.standard_normal((a2, g, f // g, n * th * tw)).astype(np.float32)
    bias = rng.standard_normal(f).astype(np.float32)
    dy = rng.standard_normal((n, f, out_h, out_w)).astype(np.float32)
    calls = [
        lambda k, **out: k.winograd_input(x, p, g, tf, **out),
        lambda k, **out: k.winograd_input_backward(grad_v, x.shape, p, tf, **out),
        lambda k, **out: k.winograd_output(m, bias, n, out_h, out_w, tf, **out),
        lambda k, **out: k.winograd_output_backward(dy, g, tf, **out),
    ]
    for call in calls:
        expected, got = call(REFERENCE), call(NUMBA)
        assert got.shape == expected.shape and got.dtype == np.float32
        # F(4x4, 5x5)'s matrices have entries up to 21/4 (B^T), so its sums are larger
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
        for kern in (REFERENCE, NUMBA):  # into a given array: the same numbers, that array
            contiguous = np.full_like(expected, np.nan)
            # and into a strided view of a larger one (every other element of the last axis)
            strided = np.full((*expected.shape[:-1], 2 * expected.shape[-1]), np.nan, np.float32)
            for out in (contiguous, strided[..., ::2]):
                assert call(kern, out=out) is out
                np.testing.assert_allclose(
                    out, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max()
                )
            assert np.isnan(strided[..., 1::2]).all()  # nothing written beside the view


@pytest.mark.parametrize("kern", [REFERENCE, NUMBA], ids=["numpy", "numba"])
@given(case=winograd_cases())
def test_input_backward_is_the_adjoint_of_input(kern, case):
    # <winograd_input(x), dV> == <x, winograd_input_backward(dV)> for every x and dV.
    rng = np.random.default_rng(case["seed"])
    x, tf = rng.standard_normal(case["shape"]), TRANSFORMS[case["kernel"]]
    v = kern.winograd_input(x, case["padding"], case["groups"], tf)
    grad_v = rng.standard_normal(v.shape)
    dx = kern.winograd_input_backward(grad_v, x.shape, case["padding"], tf)
    np.testing.assert_allclose(np.vdot(v, grad_v), np.vdot(x, dx), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(
    "kernel, c, f, groups, size",
    [(5, 96, 256, 2, 27), (3, 256, 384, 1, 13), (3, 384, 384, 2, 13), (3, 384, 256, 2, 13)],
    ids=["conv2", "conv3", "conv4", "conv5"],
)
def test_alexnet_geometry_equals_im2col(kernel, c, f, groups, size):
    # The paper's conv2-conv5 (27x27 maps with padding 2, 13x13 with padding 1), two images,
    # full channel counts.
    case = dict(
        kernel=kernel,
        shape=(2, c, size, size),
        f=f,
        padding=kernel // 2,
        groups=groups,
        seed=c + f + groups,
    )
    for a, b, scale in zip(*run_both(case)):
        assert_close(a, b, scale, case["kernel"])


def test_chunks_of_images_give_the_batch_result(monkeypatch):
    # Chunks of 2 images for a batch of 5 (the last chunk one image) against one chunk.
    case = dict(kernel=5, shape=(5, 4, 9, 8), f=6, padding=2, groups=2, seed=11)
    whole = run_both(case)[1]
    monkeypatch.setattr(winograd, "min_chunk_tiles", 2 * 3 * 2)  # 3x2 tiles per image
    assert winograd._chunks(5, 3 * 2) == [(0, 2), (2, 4), (4, 5)]
    for a, b in zip(whole, run_both(case)[1]):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5 * np.abs(a).max())


@pytest.mark.parametrize("kernel", [3, 5])
def test_transform_filters_is_g_w_g_transposed(kernel):
    rng, g = np.random.default_rng(3), TRANSFORMS[kernel].filter
    weights = rng.standard_normal((4, 3, kernel, kernel))
    u = winograd.transform_filters(weights, groups=2)  # (a*a, G, F/G, C/G)
    expected = np.einsum("ai,fcij,bj->abfc", g, weights, g).reshape(-1, 2, 2, 3)
    np.testing.assert_allclose(u, expected, rtol=1e-12, atol=1e-12)
