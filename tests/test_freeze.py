"""Freezing layers for fine-tuning: no weight gradients, bit-identical frozen parameters."""

from __future__ import annotations

import numpy as np
import pytest

from minialexnet.backend import kernels
from minialexnet.engine import CPUEngine
from minialexnet.layers import Conv2D, Linear
from minialexnet.model import AlexNet
from minialexnet.optim import SGD
from minialexnet.training import TrainConfig, make_engine


def _batch(model, n=4, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 3, model.input_size, model.input_size)).astype(np.float32)
    return x * 50, rng.integers(0, model.num_classes, n)


def _tiny(seed=0):
    return AlexNet(5, "tiny", rng=np.random.default_rng(seed))


def test_linear_frozen_backward_gives_dx_but_no_weight_gradients():
    layer = Linear(3, 2, rng=np.random.default_rng(0))
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    dy = np.array([[1, 0], [0, 2]], dtype=np.float32)
    layer.forward(x)
    dx_trainable = layer.backward(dy)
    layer.frozen = True
    layer.forward(x)
    dx_frozen = layer.backward(dy)
    assert layer.grads == {}
    np.testing.assert_array_equal(dx_frozen, dx_trainable)
    np.testing.assert_array_equal(dx_frozen, dy @ layer.params["W"])


def test_conv_frozen_backward_skips_the_weight_gradient(monkeypatch):
    layer = Conv2D(2, 4, 3, padding=1, groups=2, rng=np.random.default_rng(0))
    x = np.random.default_rng(1).standard_normal((2, 2, 5, 5)).astype(np.float32)
    dy = np.random.default_rng(2).standard_normal((2, 4, 5, 5)).astype(np.float32)
    layer.forward(x)
    dx_trainable = layer.backward(dy)
    layer.frozen = True

    buffer = layer._buffer

    def no_weight_gradient(name, *args):
        # the dW^T GEMM of each chunk writes into the "grad_w_t" buffer
        assert name != "grad_w_t", "a frozen layer computed its weight gradients"
        return buffer(name, *args)

    monkeypatch.setattr(layer, "_buffer", no_weight_gradient)
    layer.forward(x)
    dx_frozen = layer.backward(dy)
    assert layer.grads == {}
    np.testing.assert_array_equal(dx_frozen, dx_trainable)


def test_winograd_conv_frozen_backward_skips_the_weight_gradient(monkeypatch):
    layer = Conv2D(2, 4, 3, padding=1, groups=2, rng=np.random.default_rng(0))
    layer.algorithm = "winograd"
    x = np.random.default_rng(1).standard_normal((2, 2, 5, 5)).astype(np.float32)
    dy = np.random.default_rng(2).standard_normal((2, 4, 5, 5)).astype(np.float32)
    layer.forward(x)
    dx_trainable = layer.backward(dy)
    layer.frozen = True
    layer.forward(x)

    def no_input_transform(*args, **kwargs):
        # dW needs V, the transformed input tiles; dx does not
        raise AssertionError("a frozen layer computed its weight gradients")

    monkeypatch.setattr(kernels(), "winograd_input", no_input_transform)
    dx_frozen = layer.backward(dy)
    assert layer.grads == {}
    np.testing.assert_array_equal(dx_frozen, dx_trainable)


def test_freeze_marks_layers_up_to_and_including_the_named_one():
    model = _tiny()
    model.freeze("conv5")
    assert model.frozen_layers == ["conv1", "conv2", "conv3", "conv4", "conv5"]
    assert "conv5.b" in model.frozen_parameters() and "fc6.W" not in model.frozen_parameters()
    model.freeze("fc7")
    assert model.frozen_layers == ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7"]
    model.freeze(None)
    assert model.frozen_layers == []


@pytest.mark.parametrize("name", ["fc8", "relu1", "conv9"])
def test_freeze_rejects_the_classifier_and_unknown_layers(name):
    with pytest.raises(ValueError, match="choose one of conv1, .*fc7"):
        _tiny().freeze(name)


def test_backward_stops_at_the_lowest_trainable_layer(monkeypatch):
    model = _tiny()
    model.freeze("conv5")
    called = []
    for name in ("conv5", "relu5", "pool5", "flatten", "fc6"):
        layer = model.layers[name]
        monkeypatch.setattr(
            layer,
            "backward",
            lambda dy, _f=layer.backward, _n=name, **kw: called.append((_n, kw)) or _f(dy, **kw),
        )
    engine = CPUEngine(model, SGD(model, lr=0.01))
    engine.forward_backward(*_batch(model))
    # pool5 and below never ran backward; fc6 was asked for its weight gradients only.
    assert called == [("fc6", {"need_dx": False})]
    assert all(model.layers[n].grads == {} for n in model.frozen_layers)
    assert all(
        g is not None for n, _, g in model.named_parameters() if n not in model.frozen_parameters()
    )


@pytest.mark.parametrize("upto", ["conv5", "fc7", "conv2"])
def test_frozen_parameters_stay_bit_identical_and_the_others_learn(upto):
    model = _tiny()
    model.freeze(upto)
    before = model.state_dict()
    engine = CPUEngine(model, SGD(model, lr=0.01, momentum=0.9, weight_decay=0.0005))
    for seed in range(3):
        assert engine.train_step(*_batch(model, seed=seed)).updated
    frozen = model.frozen_parameters()
    after = model.state_dict()
    for name in before:
        if name in frozen:
            assert after[name].tobytes() == before[name].tobytes(), name
            assert not engine.optimizer.velocity[name].any(), name  # no momentum, no decay
        else:
            assert not np.array_equal(after[name], before[name]), name
    assert len(engine.gradient_arrays()) == len(before) - len(frozen)


def test_trainable_gradients_are_those_of_the_unfrozen_network():
    full, part = _tiny(), _tiny()
    part.freeze("fc6")
    x, y = _batch(full)
    grads = []
    for model in (full, part):
        model.rng = np.random.default_rng(7)  # the same dropout masks
        for layer in model.layers.values():
            if hasattr(layer, "rng"):
                layer.rng = model.rng
        CPUEngine(model).forward_backward(x, y)
        grads.append({n: g for n, _, g in model.named_parameters()})
    for name in ("fc7.W", "fc7.b", "fc8.W", "fc8.b"):
        np.testing.assert_array_equal(grads[1][name], grads[0][name])
    assert grads[1]["fc6.W"] is None


@pytest.mark.parametrize("settings", [{"device": "cuda"}, {"devices": "cpu:0,cpu:1"}])
def test_engines_that_cannot_freeze_refuse_clearly(settings):
    model = _tiny()
    model.freeze("fc7")
    with pytest.raises(ValueError, match="CPU engine only"):
        make_engine(model, None, TrainConfig(**settings))
