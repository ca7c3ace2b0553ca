"""The numba.cuda kernels against the NumPy references, at tiny shapes.

Without a GPU these run under the CUDA simulator in a child process (see ``cuda_sim.py``),
where every GPU thread is a Python thread (~0.15 ms each): shapes stay at a few hundred
outputs per launch, GEMMs at most 32-ish per side, batches of one or two.

References: ``minialexnet.kernels.numpy`` (im2col, LRN, max pooling), the layers
(softmax cross-entropy, ReLU, tanh), ``minialexnet.optim.SGD``, ``minialexnet.metrics`` and
NumPy itself. ``im2col`` and ``gemm`` are imported from their files: the package attribute
of the same name is shadowed by the submodule once that has been imported. Three tests need
no GPU and run in the parent process: the package imports without CUDA, the dropout hash's
statistics, and every kernel compiling for sm_90 in float32.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from cuda_sim import cuda_gate, drop_device_tests, run_in_simulator
from helpers import REPO, run_python
from hypothesis import given, settings
from hypothesis import strategies as st

HOST_TESTS = (
    "test_import_needs_no_cuda",
    "test_dropout_hash_statistics",
    "test_every_kernel_compiles_for_sm90_in_float32",
)
_gate = cuda_gate("test_under_cuda_simulator", host_tests=HOST_TESTS)

# The simulator does uint64 arithmetic with NumPy scalars, which warn on the intended wrap.
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")


def test_under_cuda_simulator():
    run_in_simulator(__file__)


# -- helpers ----------------------------------------------------------------------------------


def dev(a):
    from numba import cuda

    return cuda.to_device(np.ascontiguousarray(a))


def host(d):
    return d.copy_to_host()


def rand(rng, *shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def assert_close(got, want, rtol=1e-5, atol=1e-6):
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


# -- im2col / col2im ---------------------------------------------------------------------------

# (N, C, H, W, KH, KW, stride, padding): padding, stride > 1, AlexNet's conv1 (11/4) and
# conv2 (5/1 pad 2) geometry on small images, a non-square kernel, a kernel as big as the image.
GEOMETRIES = [
    (1, 2, 5, 6, 3, 3, 2, 1),
    (1, 1, 15, 15, 11, 11, 4, 0),
    (2, 1, 5, 5, 5, 5, 1, 2),
    (1, 2, 4, 5, 2, 3, 1, 0),
    (1, 1, 4, 4, 4, 4, 3, 0),
]


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_im2col_matches_numpy_reference(geometry):
    from minialexnet.kernels.cuda.im2col import im2col
    from minialexnet.kernels.numpy.im2col import im2col as reference

    n, c, h, w, kh, kw, s, p = geometry
    x = rand(np.random.default_rng(1), n, c, h, w)
    want = reference(x, kh, kw, s, p)
    out = dev(np.full(want.shape, np.nan, dtype=np.float32))  # a dirty reused buffer
    got = im2col(dev(x), kh, kw, s, p, out=out)
    assert got is out
    np.testing.assert_array_equal(host(got), want)


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_col2im_matches_numpy_reference(geometry):
    from minialexnet.kernels.cuda.im2col import col2im
    from minialexnet.kernels.numpy.im2col import col2im as reference
    from minialexnet.shapes import conv_output_size

    n, c, h, w, kh, kw, s, p = geometry
    oh, ow = conv_output_size(h, kh, s, p), conv_output_size(w, kw, s, p)
    cols = rand(np.random.default_rng(2), c * kh * kw, n * oh * ow)
    got = host(col2im(dev(cols), (n, c, h, w), kh, kw, s, p))
    assert_close(got, reference(cols, (n, c, h, w), kh, kw, s, p))


@settings(max_examples=6)
@given(
    n=st.integers(1, 2),
    c=st.integers(1, 2),
    h=st.integers(3, 6),
    w=st.integers(3, 6),
    k=st.integers(1, 3),
    s=st.integers(1, 3),
    p=st.integers(0, 1),
    seed=st.integers(0, 99),
)
def test_col2im_is_the_adjoint_of_im2col(n, c, h, w, k, s, p, seed):
    """<im2col(x), cols> == <x, col2im(cols)> for random geometries: col2im is im2col^T."""
    from minialexnet.kernels.cuda.im2col import col2im, im2col

    rng = np.random.default_rng(seed)
    x = rand(rng, n, c, h, w)
    unfolded = host(im2col(dev(x), k, k, s, p))
    cols = rand(rng, *unfolded.shape)
    folded = host(col2im(dev(cols), x.shape, k, k, s, p))
    lhs = float(np.sum(unfolded.astype(np.float64) * cols))
    rhs = float(np.sum(x.astype(np.float64) * folded))
    assert lhs == pytest.approx(rhs, rel=1e-5, abs=1e-5)


# -- local response normalization ---------------------------------------------------------------


@pytest.mark.parametrize(
    "size,alpha,beta,k,groups,channels,scale",
    [
        (5, 1e-4, 0.75, 2.0, 2, 8, 60.0),  # the paper's constants, LRN in two halves (§3.2)
        (5, 1e-4, 0.75, 2.0, 1, 7, 60.0),  # odd channel count, window clipped at both edges
        (3, 1.0, 0.5, 0.5, 1, 4, 1.0),  # strong normalization: every term matters
        (1, 0.3, 1.0, 1.0, 2, 4, 1.0),  # a window of one channel
    ],
)
def test_lrn_matches_numpy_reference(size, alpha, beta, k, groups, channels, scale):
    from minialexnet.kernels import cuda as kc
    from minialexnet.kernels.numpy import lrn as ref

    rng = np.random.default_rng(3)
    x = rand(rng, 2, channels, 3, 2, scale=scale)
    dy = rand(rng, *x.shape)
    y, s = kc.lrn_forward(dev(x), size, alpha, beta, k, groups)
    want_y, want_s = ref.lrn_forward(x, size, alpha, beta, k, groups)
    assert_close(host(s), want_s, rtol=2e-6)
    assert_close(host(y), want_y, rtol=2e-6)
    dx = kc.lrn_backward(dev(x), y, s, dev(dy), size, alpha, beta, groups)
    assert_close(
        host(dx),
        ref.lrn_backward(x, want_s, dy, size, alpha, beta, groups),
        rtol=1e-5,
        atol=1e-6,
    )


def test_lrn_rejects_bad_arguments():
    from minialexnet.kernels import cuda as kc

    x = dev(np.ones((1, 6, 2, 2), dtype=np.float32))
    with pytest.raises(ValueError, match="do not split into 4 groups"):
        kc.lrn_forward(x, 5, 1e-4, 0.75, 2.0, 4)
    with pytest.raises(ValueError, match="odd"):
        kc.lrn_forward(x, 4, 1e-4, 0.75, 2.0, 1)


# -- max pooling ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape,kernel,stride",
    [
        ((1, 2, 7, 7), 3, 2),  # overlapping windows, the paper's 3/2 (§3.4)
        ((2, 1, 6, 5), 2, 2),  # non-overlapping, uneven width (the last column is dropped)
        ((1, 1, 5, 5), 3, 1),  # heavy overlap: an input can win up to 9 windows
    ],
)
def test_maxpool_matches_numpy_reference_with_ties(shape, kernel, stride):
    """Values from {0, 1, 2}: most windows hold ties, which go to the first maximum."""
    from minialexnet.kernels import cuda as kc
    from minialexnet.kernels.numpy import maxpool as ref

    rng = np.random.default_rng(4)
    x = rng.integers(0, 3, size=shape).astype(np.float32)
    y, argmax = kc.maxpool_forward(dev(x), kernel, stride)
    want_y, want_arg = ref.maxpool_forward(x, kernel, stride)
    np.testing.assert_array_equal(host(y), want_y)
    np.testing.assert_array_equal(host(argmax), want_arg)
    assert host(argmax).dtype == np.uint8
    dy = rand(rng, *want_y.shape)
    dx = kc.maxpool_backward(dev(dy), argmax, shape, kernel, stride)
    assert_close(host(dx), ref.maxpool_backward(dy, want_arg, shape, kernel, stride))


@pytest.mark.parametrize(
    "shape,kernel,stride,padding",
    [
        ((1, 2, 6, 6), 3, 2, (0, 0, 1, 1)),  # Caffe's ceil mode, BVLC AlexNet's pool5
        ((1, 1, 5, 4), 3, 2, (1, 2, 1, 0)),  # asymmetric on both axes
        ((1, 1, 4, 4), 3, 1, (2, 2, 2, 2)),  # windows mostly padding
    ],
)
def test_padded_maxpool_matches_numpy_reference(shape, kernel, stride, padding):
    """Padded positions never win (as if -inf); values all negative, with ties."""
    from minialexnet.kernels import cuda as kc
    from minialexnet.kernels.numpy import maxpool as ref

    rng = np.random.default_rng(5)
    x = -rng.integers(1, 4, size=shape).astype(np.float32)
    y, argmax = kc.maxpool_forward(dev(x), kernel, stride, padding=padding)
    want_y, want_arg = ref.maxpool_forward(x, kernel, stride, padding)
    np.testing.assert_array_equal(host(y), want_y)
    np.testing.assert_array_equal(host(argmax), want_arg)
    dy = rand(rng, *want_y.shape)
    dx = kc.maxpool_backward(dev(dy), argmax, shape, kernel, stride, padding=padding)
    assert_close(host(dx), ref.maxpool_backward(dy, want_arg, shape, kernel, stride, padding))


def test_maxpool_propagates_nan():
    from minialexnet.kernels import cuda as kc

    x = np.arange(25, dtype=np.float32).reshape(1, 1, 5, 5)
    x[0, 0, 1, 1] = np.nan
    y, argmax = kc.maxpool_forward(dev(x), 3, 2)
    y, argmax = host(y), host(argmax)
    # Winners (1,1) and (4,4), at positions (1,1) and (2,2) of windows with corners (0,0), (2,2).
    assert np.isnan(y[0, 0, 0, 0]) and argmax[0, 0, 0, 0] == 1 * 3 + 1
    assert y[0, 0, 1, 1] == 24 and argmax[0, 0, 1, 1] == 2 * 3 + 2


# -- GEMM ---------------------------------------------------------------------------------------


def _operands(rng, batch, m, n, k, trans_a, trans_b):
    lead = () if batch is None else (batch,)
    a = rand(rng, *lead, *((k, m) if trans_a else (m, k)))
    b = rand(rng, *lead, *((n, k) if trans_b else (k, n)))

    def op(t, x):
        return np.swapaxes(x, -1, -2) if t else x

    return a, b, np.matmul(op(trans_a, a), op(trans_b, b))


@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize(
    "tile_name,m,n,k,split",
    [
        ("TILE_32", 37, 29, 19, 1),  # 2x1 blocks with ragged edges, K not a multiple of 8
        ("TILE_32", 5, 3, 27, 3),  # thin output, K split into 3 slices
        ("TILE_64", 33, 70, 9, 1),
        ("TILE_128", 130, 20, 9, 2),  # M one past a tile, split K
    ],
)
def test_gemm_all_transposes_against_numpy(trans_a, trans_b, tile_name, m, n, k, split):
    from minialexnet.kernels.cuda import gemm as g

    a, b, want = _operands(np.random.default_rng(5), None, m, n, k, trans_a, trans_b)
    got = g.gemm(
        dev(a), dev(b), trans_a=trans_a, trans_b=trans_b, tile=getattr(g, tile_name), split_k=split
    )
    assert_close(host(got), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (False, True), (True, False)])
def test_gemm_batched_like_a_grouped_convolution(trans_a, trans_b):
    """Batch = groups: c[g] = op(a[g]) @ op(b[g]) for G = 2, as conv2/4/5 use (§3.2)."""
    from minialexnet.kernels.cuda import gemm as g

    a, b, want = _operands(np.random.default_rng(6), 2, 6, 22, 12, trans_a, trans_b)
    plan = g.GemmPlan(a.shape, b.shape, trans_a, trans_b, split_k=2)
    c = dev(np.full(want.shape, np.nan, dtype=np.float32))
    for _ in range(2):  # a plan (and its workspace) is reusable
        plan(dev(a), dev(b), c)
        assert_close(host(c), want, rtol=1e-5, atol=1e-5)


def test_gemm_plan_chooses_tiles_and_split():
    from minialexnet.kernels.cuda import gemm as g

    assert g.choose_tile(96, 128 * 3025) == g.TILE_128  # conv1 forward at batch 128
    assert g.choose_tile(384, 128 * 169) == g.TILE_128  # conv3 forward
    assert g.choose_tile(128, 1000) == g.TILE_128  # fc8 forward
    assert g.choose_tile(20, 24) == g.TILE_32
    plan = g.GemmPlan((4, 9216), (4096, 9216), trans_b=True)
    assert plan.out_shape == (4, 4096) and plan.flops == 2 * 4 * 4096 * 9216
    assert plan.slices >= 1 and "split_k" in repr(plan)


def test_gemm_rejects_mismatched_shapes():
    from minialexnet.kernels.cuda import gemm as g

    with pytest.raises(ValueError, match="inner dimensions differ"):
        g.GemmPlan((3, 4), (5, 6))
    with pytest.raises(ValueError, match="same size"):
        g.GemmPlan((2, 3, 4), (3, 4, 6))
    with pytest.raises(ValueError, match="split_k"):
        g.GemmPlan((3, 8), (8, 5), split_k=2)  # only one step of 8 along K
    with pytest.raises(TypeError, match="device array"):
        g.gemm(np.ones((2, 2), np.float32), dev(np.ones((2, 2), np.float32)))
    with pytest.raises(TypeError, match="float32"):
        g.gemm(dev(np.ones((2, 2))), dev(np.ones((2, 2))))


# -- layout, bias, activations -------------------------------------------------------------------


def test_layout_round_trip():
    from minialexnet.kernels import cuda as kc

    y_cm = rand(np.random.default_rng(7), 3, 2 * 5)  # (F, N*P), N = 2, P = 5
    image_major = host(kc.to_image_major(dev(y_cm), 2))
    np.testing.assert_array_equal(image_major, y_cm.reshape(3, 2, 5).transpose(1, 0, 2))
    back = host(kc.to_channel_major(dev(image_major)))
    np.testing.assert_array_equal(back, y_cm)


@pytest.mark.parametrize("shape", [(3, 5), (2, 3, 5, 8), "several blocks per output"])
def test_bias_add_and_gradient(shape):
    """(N, F) and (N, F, H, W); N*H*W = 80 > the reduction block, so threads stride; the
    last case has about 2.1 blocks' worth of values per output (partial sums, then a sum)."""
    from minialexnet.kernels import cuda as kc
    from minialexnet.kernels.cuda.bias import VALUES_PER_BLOCK, bias_grad_slices

    if shape == "several blocks per output":
        side = math.ceil(math.sqrt(VALUES_PER_BLOCK * 2.1 / 3))
        shape = (3, 2, side, side)
        assert bias_grad_slices(shape) == 3
    else:
        assert bias_grad_slices(shape) == 1

    rng = np.random.default_rng(8)
    y, b = rand(rng, *shape), rand(rng, shape[1])
    expand = (slice(None),) + (None,) * (len(shape) - 2)
    got = kc.add_bias(dev(y), dev(b))
    assert_close(host(got), y + b[expand])
    axes = (0,) + tuple(range(2, len(shape)))
    assert_close(host(kc.bias_grad(dev(y))), y.sum(axis=axes), rtol=1e-5, atol=1e-5)


def test_relu_and_tanh_match_the_layers():
    from minialexnet.kernels import cuda as kc
    from minialexnet.layers import ReLU, Tanh

    rng = np.random.default_rng(9)
    x, dy = rand(rng, 2, 3, 4), rand(rng, 2, 3, 4)
    x[0, 0, 0], x[0, 0, 1] = np.nan, 0.0
    for layer, forward, backward, rtol in (
        (ReLU(), kc.relu_forward, kc.relu_backward, 0),
        (Tanh(), kc.tanh_forward, kc.tanh_backward, 1e-6),
    ):
        want_y = layer.forward(x)
        want_dx = layer.backward(dy)
        y = forward(dev(x))
        assert_close(host(y), want_y, rtol=rtol, atol=rtol)  # NaN == NaN here
        assert_close(host(backward(y, dev(dy))), want_dx, rtol=rtol, atol=rtol)


# -- dropout ------------------------------------------------------------------------------------


def test_dropout_kernel_matches_its_numpy_reference():
    from minialexnet.kernels import cuda as kc

    rng = np.random.default_rng(10)
    x, dy = rand(rng, 3, 50), rand(rng, 3, 50)
    keep = kc.keep_mask(12345, 2, x.shape, 0.5)
    y = host(kc.dropout_forward(dev(x), 0.5, 12345, 2))
    np.testing.assert_array_equal(y, np.where(keep, x * np.float32(2.0), np.float32(0.0)))
    dx = host(kc.dropout_backward(dev(dy), 0.5, 12345, 2))  # the same coins again
    np.testing.assert_array_equal(dx, np.where(keep, dy * np.float32(2.0), np.float32(0.0)))
    other = host(kc.dropout_forward(dev(x), 0.5, 12345, 3))  # another layer's mask
    assert (other != 0).tolist() != keep.tolist()
    np.testing.assert_array_equal(host(kc.dropout_forward(dev(x), 0.0, 1, 1)), x)


def test_dropout_hash_statistics():
    """The NumPy twin of the kernel's coins (runs on the host): keep rate 1 - p, fresh masks
    for other seeds and sequences, and no correlation between neighbouring elements."""
    from minialexnet.kernels.cuda.dropout import keep_mask

    count = 200_000
    for p in (0.5, 0.1, 0.9):
        rate = keep_mask(7, 0, (count,), p).mean()
        assert abs(rate - (1 - p)) < 4 * np.sqrt(p * (1 - p) / count)
    a = keep_mask(7, 0, (count,), 0.5)
    for b in (keep_mask(8, 0, (count,), 0.5), keep_mask(7, 1, (count,), 0.5)):
        assert abs(np.mean(a == b) - 0.5) < 0.01
    neighbours = np.corrcoef(a[:-1].astype(float), a[1:].astype(float))[0, 1]
    assert abs(neighbours) < 0.01
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        keep_mask(1, 1, (3,), 1.0)


# -- softmax cross-entropy ------------------------------------------------------------------------


def test_softmax_cross_entropy_matches_the_layer_and_metrics():
    from minialexnet.kernels import cuda as kc
    from minialexnet.layers import SoftmaxCrossEntropy
    from minialexnet.metrics import topk_correct

    rng = np.random.default_rng(11)
    logits = rand(rng, 5, 40, scale=3.0)  # 40 classes > the 32-thread reduction block
    logits[0] *= 1e4  # huge logits: exp would overflow unshifted
    labels = rng.integers(0, 40, size=5)
    labels[1] = int(np.argmax(logits[1]))  # at least one top-1 hit
    layer = SoftmaxCrossEntropy()
    want_loss = layer.forward(logits, labels)
    totals, log_z, _ = kc.softmax_cross_entropy_forward(dev(logits), dev(labels))
    loss_sum, top1, top5 = host(totals)
    assert loss_sum / 5 == pytest.approx(want_loss, rel=1e-5)
    assert top1 == topk_correct(logits, labels, 1).sum()
    assert top5 == topk_correct(logits, labels, 5).sum()
    dlogits = kc.softmax_cross_entropy_backward(dev(logits), dev(labels), log_z)
    assert_close(host(dlogits), layer.backward(), rtol=1e-4, atol=1e-7)


def test_softmax_top_k_counts_ties_for_the_label():
    from minialexnet.kernels import cuda as kc

    logits = np.zeros((2, 6), dtype=np.float32)
    logits[1, :5] = 1.0  # label 5 is below five others: not top-5
    totals, _, _ = kc.softmax_cross_entropy_forward(dev(logits), dev(np.array([3, 5])))
    loss_sum, top1, top5 = host(totals)
    assert (top1, top5) == (1, 1)
    assert loss_sum == pytest.approx(np.log(6) + np.log(5 * np.e + 1), rel=1e-6)


# -- SGD ------------------------------------------------------------------------------------------


class _TwoParameters:
    def __init__(self, rng):
        self.params = {"a.W": rand(rng, 3, 4), "a.b": rand(rng, 5)}
        self.grads = {name: np.zeros_like(p) for name, p in self.params.items()}

    def named_parameters(self):
        for name, p in self.params.items():
            yield name, p, self.grads[name]


def test_sgd_update_matches_optim_sgd():
    """Two §5 steps (momentum 0.9, weight decay 0.0005 * lr) against ``optim.SGD``."""
    from minialexnet.kernels import cuda as kc
    from minialexnet.optim import SGD

    rng = np.random.default_rng(12)
    model = _TwoParameters(rng)
    device = {name: (dev(p), dev(np.zeros_like(p))) for name, p in model.params.items()}
    optimizer = SGD(model, lr=0.05, momentum=0.9, weight_decay=0.0005)
    for _ in range(2):
        for name in model.grads:
            model.grads[name][...] = rand(rng, *model.grads[name].shape)
            w, v = device[name]
            kc.sgd_update(
                w,
                dev(model.grads[name]),
                v,
                optimizer.lr,
                optimizer.momentum,
                optimizer.weight_decay,
            )
        optimizer.step()
    for name, (w, v) in device.items():
        assert_close(host(w), model.params[name], rtol=1e-6, atol=1e-7)
        assert_close(host(v), optimizer.velocity[name], rtol=1e-6, atol=1e-7)


def test_the_divergence_flag_is_sticky_and_stops_the_guarded_update():
    """mark_divergence sets the flag on a NaN or infinite loss sum and never clears it (a
    finite loss later leaves it set); the guarded SGD kernel then changes neither w nor v,
    while the unguarded one (apply_update's) still updates."""
    from numba import cuda

    from minialexnet.kernels import cuda as kc

    flag = cuda.to_device(np.zeros(1, dtype=np.int32))
    seen = []
    for loss_sum in (2.5, np.nan, 3.0, np.inf):
        totals = dev(np.array([loss_sum, 1, 2, -1], dtype=np.float32))
        kc.mark_divergence(totals, flag)
        seen.append((int(host(flag)[0]), float(host(totals)[3])))
    assert seen == [(0, 0.0), (1, 1.0), (1, 1.0), (1, 1.0)]
    rng = np.random.default_rng(13)
    w0, g, v0 = rand(rng, 7), rand(rng, 7), rand(rng, 7)
    w, v = dev(w0), dev(v0)
    kc.sgd_update(w, dev(g), v, 0.1, 0.9, 0.0005, skip_if=flag)
    np.testing.assert_array_equal(host(w), w0)
    np.testing.assert_array_equal(host(v), v0)
    kc.sgd_update(w, dev(g), v, 0.1, 0.9, 0.0005, skip_if=dev(np.zeros(1, np.int32)))
    moved = host(w)
    assert not np.array_equal(moved, w0)
    kc.sgd_update(w, dev(g), v, 0.1, 0.9, 0.0005)  # no flag: always updates
    assert not np.array_equal(host(w), moved)


# -- host-side tests (no CUDA needed; run in the parent process) ----------------------------------


def test_import_needs_no_cuda():
    """Importing the CUDA package and model never initialises CUDA; without a GPU the
    network refuses with an actionable message instead of crashing."""
    code = (
        "import numpy as np\n"
        "import minialexnet.kernels.cuda as kc, minialexnet.gpu.model as cm\n"
        "from minialexnet.model import AlexNet\n"
        "print('available', kc.is_available())\n"
        "if not kc.is_available():\n"
        "    try:\n"
        "        cm.CudaAlexNet(AlexNet(5, 'tiny', np.random.default_rng(0)))\n"
        "    except RuntimeError as err:\n"
        "        print('refused:', err)\n"
    )
    stdout = run_python(code, unset_env=("NUMBA_ENABLE_CUDASIM",))
    if "available False" in stdout:
        assert "refused:" in stdout and "NVIDIA GPU" in stdout


def test_every_kernel_compiles_for_sm90_in_float32():
    """The simulator does not type kernels: compile each one with NVVM for an H100 and check
    the PTX has no float64 instruction (a stray Python float literal would add some)."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    done = subprocess.run(
        [sys.executable, os.path.join(REPO, "tests", "cuda_ptx.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    if done.returncode == 3:
        pytest.skip(done.stderr.strip() or "no CUDA toolkit (NVVM) to compile with")
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout)
    assert len(report) >= 31
    errors = {name: r["error"] for name, r in report.items() if r["error"]}
    assert not errors, errors
    doubles = {name: r["f64"] for name, r in report.items() if r["f64"]}
    assert not doubles, doubles
    # im2col / col2im index in 32 bits (kernels/cuda/im2col.py): no 64-bit division is left.
    assert report["im2col"]["div64"] == [] and report["col2im"]["div64"] == [], (
        report["im2col"]["div64"],
        report["col2im"]["div64"],
    )


drop_device_tests(globals(), keep=("test_under_cuda_simulator", *HOST_TESTS))
