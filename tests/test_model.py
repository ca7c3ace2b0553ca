"""AlexNet as a spec: shapes per layer, the paper's exact totals, init, gradients, state."""

import numpy as np
import pytest

from minialexnet.gradcheck import check_model
from minialexnet.layers import (
    Conv2D,
    Dropout,
    LocalResponseNorm,
    MaxPool2D,
    ReLU,
    SoftmaxCrossEntropy,
    Tanh,
)
from minialexnet.model import VARIANTS, AlexNet

# (layer, output shape of one 227x227 image, parameters): docs/design.md §3, the paper's Figure 2.
PAPER_TRACE = [
    ("input", (3, 227, 227), 0),
    ("conv1", (96, 55, 55), 34_944),
    ("relu1", (96, 55, 55), 0),
    ("norm1", (96, 55, 55), 0),
    ("pool1", (96, 27, 27), 0),
    ("conv2", (256, 27, 27), 307_456),
    ("relu2", (256, 27, 27), 0),
    ("norm2", (256, 27, 27), 0),
    ("pool2", (256, 13, 13), 0),
    ("conv3", (384, 13, 13), 885_120),
    ("relu3", (384, 13, 13), 0),
    ("conv4", (384, 13, 13), 663_936),
    ("relu4", (384, 13, 13), 0),
    ("conv5", (256, 13, 13), 442_624),
    ("relu5", (256, 13, 13), 0),
    ("pool5", (256, 6, 6), 0),
    ("flatten", (9216,), 0),
    ("fc6", (4096,), 37_752_832),
    ("relu6", (4096,), 0),
    ("drop6", (4096,), 0),
    ("fc7", (4096,), 16_781_312),
    ("relu7", (4096,), 0),
    ("drop7", (4096,), 0),
    ("fc8", (1000,), 4_097_000),
]

MINI_TRACE = [
    ("input", (3, 59, 59)),
    ("conv1", (32, 27, 27)),
    ("relu1", (32, 27, 27)),
    ("norm1", (32, 27, 27)),
    ("pool1", (32, 13, 13)),
    ("conv2", (64, 13, 13)),
    ("relu2", (64, 13, 13)),
    ("norm2", (64, 13, 13)),
    ("pool2", (64, 6, 6)),
    ("conv3", (96, 6, 6)),
    ("relu3", (96, 6, 6)),
    ("conv4", (96, 6, 6)),
    ("relu4", (96, 6, 6)),
    ("conv5", (64, 6, 6)),
    ("relu5", (64, 6, 6)),
    ("pool5", (64, 2, 2)),
    ("flatten", (256,)),
    ("fc6", (256,)),
    ("relu6", (256,)),
    ("drop6", (256,)),
    ("fc7", (256,)),
    ("relu7", (256,)),
    ("drop7", (256,)),
    ("fc8", (10,)),
]


@pytest.fixture(scope="module")
def paper():
    return AlexNet(1000, "paper", rng=np.random.default_rng(0))


def test_paper_shapes_and_parameters_per_layer(paper):
    trace = paper.shape_trace()
    assert [(r.name, r.output_shape, r.parameters) for r in trace] == PAPER_TRACE
    assert list(paper.layers) == [name for name, _, _ in PAPER_TRACE[1:]]


def test_paper_totals_are_the_papers(paper):
    assert paper.num_parameters() == 60_965_224
    assert paper.macs() == 724_406_816
    conv_macs = {r.name: r.macs for r in paper.shape_trace() if r.macs}
    # conv1: 96 * 55*55 * 3*11*11; conv2: 256 * 27*27 * 48*5*5 (groups halve the inputs)
    assert conv_macs["conv1"] == 96 * 55 * 55 * 3 * 11 * 11
    assert conv_macs["conv2"] == 256 * 27 * 27 * 48 * 5 * 5
    assert conv_macs["fc6"] == 9216 * 4096
    table = paper.summary()
    assert "60,965,224" in table and "724,406,816" in table and "(256, 6, 6)" in table


def test_paper_groups_lrn_and_pooling_are_the_papers(paper):
    layers = paper.layers
    assert [layers[f"conv{i}"].groups for i in range(1, 6)] == [1, 2, 1, 2, 2]
    for name in ("norm1", "norm2"):
        lrn = layers[name]
        assert isinstance(lrn, LocalResponseNorm)
        assert (lrn.size, lrn.alpha, lrn.beta, lrn.k, lrn.groups) == (5, 1e-4, 0.75, 2.0, 2)
    for name in ("pool1", "pool2", "pool5"):
        assert (layers[name].kernel_size, layers[name].stride) == (3, 2)
    assert layers["drop6"].p == layers["drop7"].p == 0.5


def test_paper_initialization(paper):
    """§5: weights N(0, 0.01^2); biases 1 in conv2, conv4, conv5, fc6, fc7, else 0."""
    ones = {"conv2", "conv4", "conv5", "fc6", "fc7"}
    for name, p, _ in paper.named_parameters():
        layer, kind = name.split(".")
        assert p.dtype == np.float32
        if kind == "b":
            np.testing.assert_array_equal(p, 1.0 if layer in ones else 0.0)
        elif p.size > 100_000:  # enough samples for a tight check of the spread
            assert abs(p.std() - 0.01) < 2e-4 and abs(p.mean()) < 2e-4, name


def test_bvlc_initialization():
    """init="bvlc" (BVLC's Caffe AlexNet): the biases of 1 become 0.1, fc6/fc7 std 0.005."""
    model = AlexNet(10, "paper", rng=np.random.default_rng(0), init="bvlc")
    tenths = {"conv2", "conv4", "conv5", "fc6", "fc7"}
    for name, p, _ in model.named_parameters():
        layer, kind = name.split(".")
        if kind == "b":
            np.testing.assert_array_equal(p, np.float32(0.1) if layer in tenths else 0.0)
        elif p.size > 100_000:
            std = 0.005 if layer in {"fc6", "fc7"} else 0.01
            assert abs(p.std() - std) < 2e-4 and abs(p.mean()) < 2e-4, name
    assert model.config["init"] == "bvlc"


def test_bvlc_init_keeps_mini_weights_and_lowers_its_biases():
    paper_init = AlexNet(10, "mini", rng=np.random.default_rng(0))
    bvlc = AlexNet(10, "mini", rng=np.random.default_rng(0), init="bvlc")
    for (name, p, _), (_, q, _) in zip(paper_init.named_parameters(), bvlc.named_parameters()):
        if name.endswith(".W"):  # mini's fc6/fc7 use 0.03, not the paper's 0.01
            np.testing.assert_array_equal(p, q)
        else:
            np.testing.assert_array_equal(q, np.where(p == 1.0, np.float32(0.1), p))


def test_paper_forward_one_image(paper):
    x = np.random.default_rng(1).normal(0, 50, (1, 3, 227, 227)).astype(np.float32)
    logits = paper.forward(x)
    assert logits.shape == (1, 1000) and logits.dtype == np.float32
    assert np.all(np.isfinite(logits))


def test_mini_shapes_match_the_spec_and_a_real_forward():
    model = AlexNet(10, "mini", rng=np.random.default_rng(0))
    assert [(r.name, r.output_shape) for r in model.shape_trace()] == MINI_TRACE
    assert model.input_size == 59
    x = np.random.default_rng(0).normal(0, 50, (2, 3, 59, 59)).astype(np.float32)
    for (name, layer), (_, shape) in zip(model.layers.items(), MINI_TRACE[1:]):
        x = layer.forward(x, train=True)
        assert x.shape == (2, *shape), name
    groups = [model.layers[f"conv{i}"].groups for i in range(1, 6)]
    assert groups == [1, 2, 1, 2, 2]


@pytest.mark.parametrize("variant", sorted(set(VARIANTS) - {"paper"}))
def test_every_variant_has_the_papers_topology(variant, paper):
    kinds = [type(layer).__name__ for layer in paper.layers.values()]
    model = AlexNet(7, variant, rng=np.random.default_rng(0))
    assert [type(layer).__name__ for layer in model.layers.values()] == kinds
    assert kinds.count("Conv2D") == 5 and kinds.count("Linear") == 3
    assert kinds.count("LocalResponseNorm") == 2 and kinds.count("MaxPool2D") == 3
    assert kinds.count("Dropout") == 2 and kinds[-1] == "Linear"
    assert model.shape_trace()[-1].output_shape == (7,)


def test_ablation_switches():
    tanh = AlexNet(10, "mini", activation="tanh")
    assert "tanh1" in tanh.layers and "relu1" not in tanh.layers
    assert sum(isinstance(layer, Tanh) for layer in tanh.layers.values()) == 7
    assert not any(isinstance(layer, ReLU) for layer in tanh.layers.values())

    no_lrn = AlexNet(10, "mini", lrn=False)
    assert not any(isinstance(layer, LocalResponseNorm) for layer in no_lrn.layers.values())

    no_dropout = AlexNet(10, "mini", dropout=0.0)
    assert not any(isinstance(layer, Dropout) for layer in no_dropout.layers.values())

    # Non-overlapping 2x2/2 pooling: the paper's sizes stay 27, 13, 6 (§3.4 says so) ...
    paper_pool = AlexNet(1000, "paper", overlapping_pool=False)
    shapes = {r.name: r.output_shape for r in paper_pool.shape_trace()}
    assert (shapes["pool1"], shapes["pool2"], shapes["pool5"]) == (
        (96, 27, 27),
        (256, 13, 13),
        (256, 6, 6),
    )
    assert paper_pool.num_parameters() == 60_965_224
    # ... while mini's last map becomes 3x3 (6 is even), so fc6 gets 64*9 inputs.
    mini_pool = AlexNet(10, "mini", overlapping_pool=False)
    assert all(
        (layer.kernel_size, layer.stride) == (2, 2)
        for layer in mini_pool.layers.values()
        if isinstance(layer, MaxPool2D)
    )
    assert mini_pool.layers["fc6"].params["W"].shape == (256, 64 * 9)


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_whole_network_gradient_matches_finite_differences(activation):
    model = AlexNet(5, "tiny", rng=np.random.default_rng(2), activation=activation)
    rng = np.random.default_rng(3)
    # 0..255-scale inputs so that LRN really acts; smaller ones for tanh, which would
    # saturate (and have a vanishing, uncheckable gradient) at that scale.
    x = rng.normal(0, 40 if activation == "relu" else 2, (3, 3, 31, 31))
    errors = check_model(model, x, np.array([0, 4, 2]), rng=rng, eps=1e-4, max_entries=8)
    assert set(errors) == {"x", *(name for name, _, _ in model.named_parameters())}
    assert max(errors.values()) < 1e-6, errors


def test_backward_returns_the_input_gradient_and_fills_every_grad():
    model = AlexNet(4, "tiny", rng=np.random.default_rng(0))
    x = np.random.default_rng(1).normal(0, 30, (2, 3, 31, 31)).astype(np.float32)
    loss = SoftmaxCrossEntropy()
    loss.forward(model.forward(x, train=True), np.array([1, 3]))
    dx = model.backward(loss.backward())
    assert dx.shape == x.shape and dx.dtype == np.float32
    for name, p, g in model.named_parameters():
        assert g is not None and g.shape == p.shape and g.dtype == np.float32, name
    assert np.abs(model.layers["conv1"].grads["W"]).sum() > 0


def test_a_training_step_skips_conv1s_input_gradient_and_changes_no_weight_gradient(
    monkeypatch,
):
    model = AlexNet(4, "tiny", rng=np.random.default_rng(0))
    x = np.random.default_rng(1).normal(0, 30, (2, 3, 31, 31)).astype(np.float32)
    loss = SoftmaxCrossEntropy()
    loss.forward(model.forward(x, train=False), np.array([1, 3]))
    model.backward(loss.backward())
    full = {name: g.copy() for name, _, g in model.named_parameters()}
    asked = []
    conv1 = model.layers["conv1"]
    monkeypatch.setattr(
        conv1, "backward", lambda dy, _f=conv1.backward, **kw: asked.append(kw) or _f(dy, **kw)
    )
    assert model.backward(loss.backward(), need_dx=False) is None
    assert asked == [{"need_dx": False}]
    for name, _, g in model.named_parameters():
        np.testing.assert_array_equal(g, full[name], err_msg=name)


def test_state_dict_round_trip():
    a = AlexNet(6, "tiny", rng=np.random.default_rng(0))
    b = AlexNet(6, "tiny", rng=np.random.default_rng(1))
    x = np.random.default_rng(2).normal(0, 30, (2, 3, 31, 31)).astype(np.float32)
    assert not np.allclose(a.forward(x), b.forward(x))
    state = a.state_dict()
    assert list(state)[:4] == ["conv1.W", "conv1.b", "conv2.W", "conv2.b"]
    assert len(state) == 16
    state["conv1.W"][...] = 0.0  # copies: the model is untouched
    assert np.abs(a.layers["conv1"].params["W"]).min() > 0
    b.load_state_dict(a.state_dict())
    np.testing.assert_array_equal(a.forward(x), b.forward(x))


def test_load_state_dict_is_strict_with_clear_errors():
    model = AlexNet(6, "tiny", rng=np.random.default_rng(0))
    state = model.state_dict()
    missing = dict(state)
    del missing["fc7.b"]
    with pytest.raises(ValueError, match=r"missing keys \['fc7.b'\]"):
        model.load_state_dict(missing)
    with pytest.raises(ValueError, match=r"unexpected keys \['fc9.W'\]"):
        model.load_state_dict({**state, "fc9.W": np.zeros(3, np.float32)})
    with pytest.raises(ValueError, match=r"fc8.W has shape \(7, 8\).*expects \(6, 8\)"):
        model.load_state_dict({**state, "fc8.W": np.zeros((7, 8), np.float32)})
    # A failed load leaves the parameters as they were.
    np.testing.assert_array_equal(model.layers["conv1"].params["W"], state["conv1.W"])


def test_astype_float64_runs_in_float64():
    model = AlexNet(3, "tiny", rng=np.random.default_rng(0)).astype(np.float64)
    assert all(p.dtype == np.float64 for _, p, _ in model.named_parameters())
    y = model.forward(np.random.default_rng(0).normal(0, 30, (2, 3, 31, 31)))
    assert y.dtype == np.float64


def test_same_seed_same_network_and_dropout_draws_from_model_rng():
    a = AlexNet(3, "tiny", rng=np.random.default_rng(5))
    b = AlexNet(3, "tiny", rng=np.random.default_rng(5))
    for (_, pa, _), (_, pb, _) in zip(a.named_parameters(), b.named_parameters()):
        np.testing.assert_array_equal(pa, pb)
    assert a.layers["drop6"].rng is a.rng
    x = np.random.default_rng(0).normal(0, 30, (4, 3, 31, 31)).astype(np.float32)
    np.testing.assert_array_equal(a.forward(x, train=True), b.forward(x, train=True))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"variant": "vgg"}, "unknown AlexNet variant 'vgg'; choose one of paper, mini, tiny"),
        ({"activation": "gelu"}, "unknown activation 'gelu'"),
        ({"num_classes": 1}, "num_classes must be an integer >= 2"),
        ({"num_classes": 2.5}, "num_classes must be an integer >= 2"),
        ({"dropout": 1.0}, r"dropout must lie in \[0, 1\)"),
        ({"init": "he"}, "unknown initialisation 'he'; choose one of paper, bvlc"),
    ],
)
def test_constructor_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AlexNet(**{"num_classes": 10, "variant": "tiny", **kwargs})


@pytest.mark.parametrize("rng", [0, np.random.RandomState(0)])
def test_constructor_wants_a_generator(rng):
    with pytest.raises(TypeError, match=r"AlexNet needs a numpy.random.Generator .*default_rng"):
        AlexNet(10, "tiny", rng=rng)


def test_forward_rejects_wrong_input_size_with_advice():
    model = AlexNet(3, "mini")
    with pytest.raises(ValueError, match="takes 59x59 crops, got images of 64x64"):
        model.forward(np.zeros((1, 3, 64, 64), np.float32))
    with pytest.raises(ValueError, match="C=3"):
        model.forward(np.zeros((1, 1, 59, 59), np.float32))


def test_from_config_rebuilds_the_same_architecture():
    model = AlexNet(4, "mini", activation="tanh", lrn=False, dropout=0.3)
    clone = AlexNet.from_config(model.config)
    assert clone.config == model.config
    assert [type(layer) for layer in clone.layers.values()] == [
        type(layer) for layer in model.layers.values()
    ]
    assert isinstance(clone.layers["conv1"], Conv2D)


# --------------------------------------------------------------------------------------------
# BVLC's Caffe AlexNet, tables from files, preprocessing and class names
# --------------------------------------------------------------------------------------------

# BVLC AlexNet as the ONNX model zoo's bvlcalexnet files compute it, 224x224 input:
# (224 - 11) // 4 + 1 = 54, (54 - 3) // 2 + 1 = 26, (26 - 3) // 2 + 1 = 12, and pool5 with
# pads (0, 0, 1, 1): (12 + 1 - 3) // 2 + 1 = 6 (unpadded it would be 5, and fc6 would not
# get the file's 9216 inputs).
BVLC_SHAPES = {
    "conv1": (96, 54, 54),
    "pool1": (96, 26, 26),
    "conv2": (256, 26, 26),
    "pool2": (256, 12, 12),
    "conv5": (256, 12, 12),
    "pool5": (256, 6, 6),
    "flatten": (9216,),
    "fc8": (1000,),
}


def test_bvlc_shapes_constants_and_preprocessing():
    model = AlexNet(1000, "bvlc", rng=np.random.default_rng(0))
    shapes = {row.name: row.output_shape for row in model.shape_trace()}
    assert {name: shapes[name] for name in BVLC_SHAPES} == BVLC_SHAPES
    assert model.num_parameters() == 60_965_224  # the same weights as the paper's
    for name in ("norm1", "norm2"):
        norm = model.layers[name]
        # Caffe's alpha 1e-4 over a window of 5 is 2e-5 on the plain sum; k = 1; no groups
        assert (norm.size, norm.alpha, norm.beta, norm.k, norm.groups) == (5, 2e-5, 0.75, 1.0, 1)
    assert model.layers["pool5"].padding == (0, 0, 1, 1)
    assert model.layers["pool1"].padding == (0, 0, 0, 0)
    assert [model.layers[f"conv{i}"].groups for i in range(1, 6)] == [1, 2, 1, 2, 2]
    assert model.preprocessing == {"channels": "BGR", "mean": [104.0, 117.0, 123.0]}
    assert AlexNet(3, "tiny").preprocessing == {"channels": "RGB", "mean": "image"}


def test_paper_lrn_constants_come_from_the_table(paper):
    norm = paper.layers["norm1"]
    assert (norm.size, norm.alpha, norm.beta, norm.k, norm.groups) == (5, 1e-4, 0.75, 2.0, 2)


def test_custom_table_round_trips_through_json_config_and_splits_into_towers():
    import json
    from dataclasses import replace

    from minialexnet.model import CUSTOM, TINY, variant_from_dict, variant_to_dict
    from minialexnet.parallel import TwoTowerAlexNet

    # tiny on 39x39 inputs with 12 conv1 filters, a padded pool5 and LRN k = 1
    convs = list(TINY.convs)
    convs[0] = replace(convs[0], filters=12)
    convs[4] = replace(convs[4], pool_padding=(0, 0, 1, 1))
    table = replace(
        TINY, input_size=39, convs=tuple(convs), norm=replace(TINY.norm, k=1.0, alpha=3e-5)
    )
    assert variant_from_dict(json.loads(json.dumps(variant_to_dict(table)))) == table
    model = AlexNet(5, CUSTOM, np.random.default_rng(1), table=table, class_names=list("abcde"))
    shapes = {row.name: row.output_shape for row in model.shape_trace()}
    assert shapes["conv5"] == (8, 4, 4) and shapes["pool5"] == (8, 2, 2)  # unpadded: 1x1
    config = json.loads(json.dumps(model.config))  # as a checkpoint stores it
    clone = AlexNet.from_config(config)
    assert clone.config == model.config and clone.class_names == list("abcde")
    clone.load_state_dict(model.state_dict())
    x = np.random.default_rng(2).standard_normal((2, 3, 39, 39)).astype(np.float32)
    np.testing.assert_array_equal(clone.forward(x), model.forward(x))
    with TwoTowerAlexNet.from_model(model) as towers:
        np.testing.assert_allclose(towers.forward(x), model.forward(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"variant": "custom"}, "needs its table"),
        ({"table": {"input_size": 3}}, "only for variant='custom'"),
        ({"variant": "custom", "table": {"input_size": 3}}, "not an AlexNet table"),
        ({"class_names": ["a", "b"]}, "2 names but the network has 10 classes"),
        ({"class_names": "abcdefghij"}, "list of strings"),
        ({"preprocessing": {"channels": "RGB"}}, "exactly the keys"),
        ({"preprocessing": {"channels": "HSV", "mean": "image"}}, "'channels' must be one of"),
        ({"preprocessing": {"channels": "BGR", "mean": [1, 2]}}, "three finite numbers"),
    ],
)
def test_table_preprocessing_and_class_name_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AlexNet(**{"num_classes": 10, "variant": "tiny", **kwargs})


def test_preprocess_by_hand():
    from minialexnet.preprocessing import preprocess

    images = np.zeros((1, 3, 2, 2), np.uint8)
    images[0, 0], images[0, 1], images[0, 2] = 200, 100, 50  # R, G, B
    bvlc = preprocess(images, {"channels": "BGR", "mean": [104.0, 117.0, 123.0]})
    assert bvlc.dtype == np.float32
    np.testing.assert_array_equal(bvlc[0, :, 0, 0], [50 - 104, 100 - 117, 200 - 123])
    mean_image = np.stack([np.full((2, 2), v, np.float32) for v in (10.0, 20.0, 30.0)])
    ours = preprocess(images, {"channels": "RGB", "mean": "image"}, mean_image)
    np.testing.assert_array_equal(ours[0, :, 1, 1], [190, 80, 20])
    with pytest.raises(ValueError, match="mean_image of shape"):
        preprocess(images, {"channels": "RGB", "mean": "image"})
    with pytest.raises(ValueError, match="uint8 RGB images"):
        preprocess(images.astype(np.float32), {"channels": "RGB", "mean": "image"})


def test_config_of_an_older_checkpoint_without_init_rebuilds_the_paper_init():
    config = dict(AlexNet(4, "tiny").config)
    del config["init"]
    assert AlexNet.from_config(config).config["init"] == "paper"
