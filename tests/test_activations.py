"""ReLU and tanh (§3.1): hand-computed values, gradients, the layer protocol."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minialexnet.backend import use_backend
from minialexnet.gradcheck import check_layer
from minialexnet.kernels import cpu, numpy
from minialexnet.kernels.cpu import relu as cpu_relu
from minialexnet.layers import ReLU, Tanh

BACKENDS = pytest.mark.parametrize("backend", ["numba", "numpy"])


@BACKENDS
def test_relu_by_hand(backend):
    layer = ReLU()
    x = np.array([[-2.0, -0.0, 0.0, 0.5, 3.0]], dtype=np.float32)
    with use_backend(backend):
        y = layer.forward(x)
        np.testing.assert_array_equal(y, [[0, 0, 0, 0.5, 3]])
        dx = layer.backward(np.array([[1.0, 2.0, 3.0, 4.0, 5.0]], dtype=np.float32))
    # The derivative at exactly 0 is taken as 0, like PyTorch and Caffe.
    np.testing.assert_array_equal(dx, [[0, 0, 0, 4, 5]])


@BACKENDS
def test_relu_lets_nan_through_both_ways(backend):
    layer = ReLU()
    with use_backend(backend):
        y = layer.forward(np.array([[np.nan, 1.0, -1.0]]))
        assert np.isnan(y[0, 0]) and y[0, 1] == 1.0
        # A non-finite gradient stays non-finite where the unit was off (inf * 0 = NaN).
        with np.errstate(invalid="ignore"):
            dx = layer.backward(np.array([[1.0, np.inf, np.inf]]))
    assert dx[0, 1] == np.inf and np.isnan(dx[0, 2])


@given(
    st.lists(st.integers(1, 40), min_size=1, max_size=4),
    st.sampled_from([np.float32, np.float64]),
    st.integers(0, 2**32 - 1),
)
def test_numba_relu_equals_numpy(shape, dtype, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    x[rng.random(shape) < 0.1] = 0.0  # exact zeros: the unit is off there
    dy = rng.standard_normal(shape).astype(dtype)
    y = cpu.relu_forward(x)
    assert y.dtype == dtype
    np.testing.assert_array_equal(y, numpy.relu_forward(x))
    dx = cpu.relu_backward(y, dy)
    assert dx.dtype == dtype
    np.testing.assert_array_equal(dx, numpy.relu_backward(y, dy))


@pytest.mark.parametrize("parallel_from", [0, 2**62], ids=["threads", "serial"])
def test_both_numba_relu_loops_equal_numpy(parallel_from, monkeypatch):
    # The kernels pick the threaded or the serial loop by size (PARALLEL_FROM): both, with
    # NaNs, infinities and exact zeros, against the reference.
    monkeypatch.setattr(cpu_relu, "PARALLEL_FROM", parallel_from)
    rng = np.random.default_rng(7)
    x = rng.standard_normal(5000).astype(np.float32)
    x[::7], x[3::11], x[5::13] = 0.0, np.nan, -np.inf
    dy = rng.standard_normal(5000).astype(np.float32)
    dy[1::17] = np.inf
    y = cpu.relu_forward(x)
    np.testing.assert_array_equal(y, numpy.relu_forward(x))
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(cpu.relu_backward(y, dy), numpy.relu_backward(y, dy))


def test_relu_keeps_only_its_output_between_the_passes():
    # Memory: the mask [x > 0] is read off y in backward; no array of ReLU's own survives
    # forward (the next layer keeps y anyway).
    layer = ReLU()
    y = layer.forward(np.array([[-1.0, 0.0, 2.0]], dtype=np.float32))
    assert layer._cache is y
    np.testing.assert_array_equal(layer.backward(np.full((1, 3), 3.0)), [[0.0, 0.0, 3.0]])


def test_tanh_by_hand():
    layer = Tanh()
    y = layer.forward(np.array([[0.0, 1.0, -2.0]]))
    np.testing.assert_allclose(y, [[0.0, 0.7615941559557649, -0.9640275800758169]], rtol=1e-15)
    dx = layer.backward(np.array([[2.0, -1.0, 3.0]]))
    # d tanh / dx = 1 - tanh^2: 1 at 0, 0.41997... at 1, 0.07065... at -2.
    np.testing.assert_allclose(
        dx, [[2.0, -0.41997434161402614, 3 * 0.07065082485316443]], rtol=1e-14
    )


def test_tanh_saturates_where_relu_does_not():
    # The point of Fig. 1: for large inputs tanh's gradient vanishes, ReLU's stays 1.
    x = np.array([[10.0, 20.0]])
    dy = np.array([[1.0, 1.0]])
    tanh, relu = Tanh(), ReLU()
    tanh.forward(x)
    relu.forward(x)
    assert np.all(tanh.backward(dy) < 1e-8)
    np.testing.assert_array_equal(relu.backward(dy), dy)


shapes = st.lists(st.integers(1, 5), min_size=2, max_size=4).map(tuple)


@given(shapes, st.integers(0, 2**32 - 1), st.sampled_from([ReLU, Tanh]))
def test_gradient_matches_finite_differences(shape, seed, layer_class):
    rng = np.random.default_rng(seed)
    # Keep inputs at least 0.05 away from ReLU's kink at 0, where no derivative exists.
    x = rng.choice([-1.0, 1.0], size=shape) * rng.uniform(0.05, 3.0, size=shape)
    errors = check_layer(layer_class(), x, rng=rng)
    assert errors["x"] < 1e-7, errors


@pytest.mark.parametrize("layer_class", [ReLU, Tanh])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_preserved_and_inputs_untouched(layer_class, dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 4, 5)).astype(dtype)
    dy = rng.standard_normal(x.shape)  # float64 upstream on purpose
    x_before, dy_before = x.copy(), dy.copy()
    layer = layer_class()
    y = layer.forward(x)
    dx = layer.backward(dy)
    assert y.dtype == dtype and dx.dtype == dtype and dx.shape == x.shape
    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_array_equal(dy, dy_before)
    assert layer.params == {} and layer.output_shape((3, 4, 5)) == (3, 4, 5)


@pytest.mark.parametrize("layer_class", [ReLU, Tanh])
def test_bad_inputs_give_clear_errors(layer_class):
    layer = layer_class()
    with pytest.raises(RuntimeError, match="before forward"):
        layer.backward(np.zeros((2, 3)))
    with pytest.raises(TypeError, match="float32"):
        layer.forward(np.zeros((2, 3), dtype=np.int32))
    with pytest.raises(TypeError, match="NumPy array"):
        layer.forward([[1.0, 2.0]])
    layer.forward(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="dy"):
        layer.backward(np.zeros((3, 2)))
