"""ONNX import and export: BVLC AlexNet's layout against onnxruntime, our own networks round
trip, every supported form of the ops, and clear errors for everything else."""

from __future__ import annotations

import json

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from minialexnet import load_onnx, save_onnx  # noqa: E402
from minialexnet.model import AlexNet  # noqa: E402
from minialexnet.onnx_io import ONNXFormatError  # noqa: E402

BVLC_WIDTHS, BVLC_UNITS = (96, 256, 384, 384, 256), (4096, 4096)
NARROW_WIDTHS, NARROW_UNITS = (8, 16, 12, 12, 16), (24, 20)
GROUPS = (1, 2, 1, 2, 2)  # conv2, conv4, conv5 in two groups, as in Caffe's net


# --------------------------------------------------------------------------------------------
# A graph in the layout of the model zoo's bvlcalexnet files, built with onnx.helper
# --------------------------------------------------------------------------------------------


def zoo_graph(
    opset,
    *,
    widths=BVLC_WIDTHS,
    units=BVLC_UNITS,
    classes=1000,
    seed=0,
    fc="gemm",
    dropout="default",
    reshape=(1, -1),
    edit=None,
):
    """BVLC AlexNet's graph as the zoo names it (data_0, conv1_w_0, ..., pool5_1, OC2_DUMMY_0,
    fc6_1, ..., prob_1): 224x224 input, LRN size 5 alpha 1e-4 beta 0.75 bias 1, pool5 pads
    (0, 0, 1, 1), Gemm with transB=1, Dropout, a final Softmax. Random He-scaled weights.

    ``fc="matmul"`` writes fc6-fc8 as MatMul + Add; ``dropout`` picks the Dropout form:
    "default", "ratio" (explicit 0.5), "mask" (a second, unused output), "training_false"
    (opset 12+: training_mode input False); ``edit(nodes, inits)`` may change the graph.
    """
    rng = np.random.default_rng(seed)
    nodes, inits = [], []

    def const(name, array):
        inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def weight(name, shape, fan_in):
        return const(name, (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32))

    def node(op, inputs, output, **attrs):
        nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    x, channels = "data_0", 3
    kernels = ((11, 4, 0), (5, 1, 2), (3, 1, 1), (3, 1, 1), (3, 1, 1))
    for i, (width, groups, (k, s, p)) in enumerate(zip(widths, GROUPS, kernels), start=1):
        w = weight(f"conv{i}_w_0", (width, channels // groups, k, k), channels // groups * k * k)
        b = const(f"conv{i}_b_0", rng.uniform(-0.5, 0.5, width).astype(np.float32))
        x = node(
            "Conv",
            [x, w, b],
            f"conv{i}_1",
            kernel_shape=[k, k],
            strides=[s, s],
            pads=[p] * 4,
            **({"group": groups} if groups > 1 else {}),
        )
        x = node("Relu", [x], f"relu{i}_1" if i < 5 else "conv5_2")
        if i <= 2:
            x = node("LRN", [x], f"norm{i}_1", size=5, alpha=1e-4, beta=0.75, bias=1.0)
        if i in (1, 2, 5):
            x = node(
                "MaxPool",
                [x],
                f"pool{i}_1",
                kernel_shape=[3, 3],
                strides=[2, 2],
                pads=[0, 0, 1, 1] if i == 5 else [0, 0, 0, 0],
            )
        channels = width
    x = node("Reshape", [x, const("OC2_DUMMY_1", np.array(reshape, np.int64))], "OC2_DUMMY_0")
    features = channels * 36
    for i, out in zip((6, 7, 8), (*units, classes)):
        w = weight(f"fc{i}_w_0", (out, features), features)
        b = const(f"fc{i}_b_0", rng.uniform(-0.5, 0.5, out).astype(np.float32))
        if fc == "gemm":
            x = node("Gemm", [x, w, b], f"fc{i}_1", transB=1)
        else:
            inits[-2] = numpy_helper.from_array(
                numpy_helper.to_array(inits[-2]).T.copy(), f"fc{i}_w_0"
            )
            x = node("Add", [node("MatMul", [x, w], f"fc{i}_mm"), b], f"fc{i}_1")
        if i < 8:
            x = node("Relu", [x], f"fc{i}_2")
            x = _dropout(node, const, x, f"fc{i}_3", opset, dropout, nodes)
        features = out
    node("Softmax", [x], "prob_1", **({"axis": 1} if opset >= 13 else {}))
    if edit is not None:
        edit(nodes, inits)
    graph = helper.make_graph(
        nodes,
        "bvlc_alexnet",
        [helper.make_tensor_value_info("data_0", TensorProto.FLOAT, [1, 3, 224, 224])],
        [helper.make_tensor_value_info("prob_1", TensorProto.FLOAT, [1, classes])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7 if opset <= 12 else 8
    return model


def _dropout(node, const, x, out, opset, form, nodes):
    if opset < 12:
        attrs = {"ratio": 0.5} if form == "ratio" else {}
        inputs = [x]
    else:
        attrs = {}
        inputs = [x] if form == "default" else [x, const(f"{out}_ratio", np.float32(0.5))]
        if form == "training_false":
            inputs.append(const(f"{out}_training", np.array(False)))
    outputs = [out, f"{out}_mask"] if form == "mask" else [out]
    nodes.append(helper.make_node("Dropout", inputs, outputs, name=out, **attrs))
    return out


def ort_logits(model, x, logits="fc8_1"):
    """onnxruntime's fc8 output (the logits before the file's Softmax)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    copy.graph.output.append(helper.make_tensor_value_info(logits, TensorProto.FLOAT, None))
    session = ort.InferenceSession(copy.SerializeToString(), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return session.run([logits], {name: x})[0]


def relative_error(ours, theirs) -> float:
    return float(np.abs(ours - theirs).max() / np.abs(theirs).max())


def save(model, path):
    onnx.save(model, str(path))
    return str(path)


def image(seed=1, batch=1, size=224):
    return (np.random.default_rng(seed).standard_normal((batch, 3, size, size)) * 60).astype(
        np.float32
    )


# --------------------------------------------------------------------------------------------
# BVLC AlexNet's layout, full size, against onnxruntime
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("opset", [9, 12])
def test_bvlc_layout_matches_onnxruntime_and_is_the_bvlc_variant(opset, tmp_path):
    graph = zoo_graph(opset)
    model = load_onnx(save(graph, tmp_path / "bvlcalexnet.onnx"))
    assert model.config["variant"] == "bvlc" and model.input_size == 224
    assert model.config["dropout"] == 0.5 and model.num_classes == 1000
    assert model.preprocessing == {"channels": "BGR", "mean": [104.0, 117.0, 123.0]}
    assert model.class_names[:2] == ["n01440764", "n01443537"] and len(model.class_names) == 1000
    norm = model.layers["norm1"]
    assert (norm.size, norm.alpha, norm.k, norm.groups) == (5, 1e-4 / 5, 1.0, 1)
    assert model.layers["pool5"].padding == (0, 0, 1, 1)
    x = image()
    want = ort_logits(graph, x)
    error = relative_error(model.forward(x), want)
    print(f"bvlc layout, opset {opset}: worst relative error {error:.2e}")
    assert error < 1e-4
    assert np.abs(want).max() > 1.0  # a live network, not near-constant logits


# --------------------------------------------------------------------------------------------
# Our own networks: onnxruntime agrees, and they load back bit-exactly
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["paper", "mini", "tiny"])
def test_exported_networks_match_onnxruntime_and_round_trip_exactly(variant, tmp_path):
    from helpers import healthy_alexnet

    model = healthy_alexnet(variant, 10, seed=3)
    path = tmp_path / f"{variant}.onnx"
    save_onnx(model, path)
    x = image(seed=4, batch=2, size=model.input_size)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    want = session.run(None, {"input": x})[0]
    error = relative_error(model.forward(x), want)
    print(f"exported {variant}: worst relative error {error:.2e}")
    assert error < 1e-4
    loaded = load_onnx(path)
    assert loaded.config == model.config
    for (name, p, _), (name2, q, _) in zip(model.named_parameters(), loaded.named_parameters()):
        assert name == name2 and p.dtype == q.dtype
        np.testing.assert_array_equal(p, q)
    np.testing.assert_array_equal(loaded.forward(x), model.forward(x))


def test_preprocessing_and_class_names_survive_export_and_import(tmp_path):
    names = ["circle", "square", "triangle", "star", "cross"]
    preprocessing = {"channels": "BGR", "mean": [1.5, 2.0, 3.25]}
    model = AlexNet(
        5, "tiny", np.random.default_rng(0), class_names=names, preprocessing=preprocessing
    )
    save_onnx(model, tmp_path / "tiny.onnx")
    loaded = load_onnx(tmp_path / "tiny.onnx")
    assert loaded.class_names == names and loaded.preprocessing == preprocessing
    props = {p.key: p.value for p in onnx.load(str(tmp_path / "tiny.onnx")).metadata_props}
    assert json.loads(props["minialexnet.class_names"]) == names  # readable by others too
    assert json.loads(props["minialexnet.preprocessing"]) == preprocessing
    override = load_onnx(tmp_path / "tiny.onnx", class_names=list("abcde"))
    assert override.class_names == list("abcde")


def test_custom_table_exports_and_loads_back(tmp_path):
    """A network from a table no variant has (BVLC-like LRN, padded pool5) round trips, runs
    like onnxruntime, rebuilds from its JSON config and splits into two towers."""
    from dataclasses import replace

    from minialexnet.model import TINY
    from minialexnet.parallel import TwoTowerAlexNet

    convs = list(TINY.convs)
    convs[4] = replace(convs[4], pool_padding=(0, 0, 1, 1))
    table = replace(
        TINY, input_size=39, convs=tuple(convs), norm=replace(TINY.norm, k=1.0, alpha=2e-5)
    )
    model = AlexNet(6, "custom", np.random.default_rng(0), table=table)  # He everywhere
    save_onnx(model, tmp_path / "custom.onnx")
    loaded = load_onnx(tmp_path / "custom.onnx")
    assert loaded.config == model.config
    x = image(seed=6, batch=2, size=39)
    session = ort.InferenceSession(
        str(tmp_path / "custom.onnx"), providers=["CPUExecutionProvider"]
    )
    error = relative_error(loaded.forward(x), session.run(None, {"input": x})[0])
    print(f"exported custom table: worst relative error {error:.2e}")
    assert error < 1e-4
    clone = AlexNet.from_config(json.loads(json.dumps(loaded.config)))
    clone.load_state_dict(loaded.state_dict())
    np.testing.assert_array_equal(clone.forward(x), loaded.forward(x))
    with TwoTowerAlexNet.from_model(loaded) as towers:
        np.testing.assert_allclose(towers.forward(x), loaded.forward(x), rtol=1e-5, atol=1e-4)


# --------------------------------------------------------------------------------------------
# Every supported form, on a narrow network of BVLC's geometry
# --------------------------------------------------------------------------------------------


def narrow(opset, **options):
    return zoo_graph(opset, widths=NARROW_WIDTHS, units=NARROW_UNITS, classes=10, **options)


def check_against_onnxruntime(graph, tmp_path, label):
    model = load_onnx(save(graph, tmp_path / "narrow.onnx"))
    x = image(seed=7)
    error = relative_error(model.forward(x), ort_logits(graph, x))
    print(f"{label}: worst relative error {error:.2e}")
    assert error < 1e-4
    return model


@pytest.mark.parametrize("opset", [7, 8, 9, 10, 11, 12, 13, 15, 17, 18, 21])
def test_every_opset_from_7_to_21(opset, tmp_path):
    model = check_against_onnxruntime(narrow(opset), tmp_path, f"narrow, opset {opset}")
    assert model.config["variant"] == "custom"
    table = model.config["table"]
    assert [r["filters"] for r in table["convs"]] == list(NARROW_WIDTHS)
    assert table["convs"][4]["pool_padding"] == [0, 0, 1, 1]
    assert table["norm"] == {"size": 5, "alpha": 2e-5, "beta": 0.75, "k": 1.0, "groups": 1}


@pytest.mark.parametrize(
    "opset, form",
    [
        (9, "ratio"),
        (9, "mask"),
        (11, "default"),
        (12, "ratio"),
        (12, "mask"),
        (13, "training_false"),
        (13, "default"),
    ],
)
def test_dropout_forms(opset, form, tmp_path):
    model = check_against_onnxruntime(
        narrow(opset, dropout=form), tmp_path, f"dropout {form}, opset {opset}"
    )
    assert model.config["dropout"] == 0.5 and "drop6" in model.layers


@pytest.mark.parametrize("opset", [9, 13])
def test_matmul_plus_add(opset, tmp_path):
    check_against_onnxruntime(narrow(opset, fc="matmul"), tmp_path, f"MatMul+Add, opset {opset}")


@pytest.mark.parametrize("reshape", [(0, -1), (-1, 16 * 36), (1, 16 * 36)])
def test_reshape_forms(reshape, tmp_path):
    check_against_onnxruntime(narrow(12, reshape=reshape), tmp_path, f"Reshape to {reshape}")


def test_gemm_alpha_beta_and_untransposed_weight(tmp_path):
    def edit(nodes, inits):
        fc7 = next(n for n in nodes if n.name == "fc7_1")
        for attr in fc7.attribute:
            if attr.name == "transB":
                attr.i = 0
        fc7.attribute.extend(
            [helper.make_attribute("alpha", 0.5), helper.make_attribute("beta", 2.0)]
        )
        i = next(i for i, t in enumerate(inits) if t.name == "fc7_w_0")
        inits[i] = numpy_helper.from_array(numpy_helper.to_array(inits[i]).T.copy(), "fc7_w_0")

    check_against_onnxruntime(narrow(13, edit=edit), tmp_path, "Gemm alpha/beta/transB=0")


def test_ceil_mode_pooling_becomes_bottom_right_padding(tmp_path):
    def edit(nodes, inits):  # pool5 as Caffe wrote it: ceil mode instead of the pads
        pool5 = next(n for n in nodes if n.name == "pool5_1")
        del pool5.attribute[:]
        pool5.attribute.extend(
            [
                helper.make_attribute("kernel_shape", [3, 3]),
                helper.make_attribute("strides", [2, 2]),
                helper.make_attribute("ceil_mode", 1),
            ]
        )

    model = check_against_onnxruntime(narrow(13, edit=edit), tmp_path, "ceil_mode pool5")
    assert model.layers["pool5"].padding == (0, 0, 1, 1)


def test_a_loaded_network_trains_and_checkpoints(tmp_path):
    from minialexnet.layers import SoftmaxCrossEntropy

    model = load_onnx(save(narrow(12), tmp_path / "narrow.onnx"), rng=np.random.default_rng(0))
    clone = AlexNet.from_config(json.loads(json.dumps(model.config)))
    clone.load_state_dict(model.state_dict())
    x = image(seed=8, batch=2)
    np.testing.assert_array_equal(clone.forward(x), model.forward(x))
    loss = SoftmaxCrossEntropy()
    loss.forward(model.forward(x, train=True), np.array([1, 7]))
    model.backward(loss.backward())
    grads = {name: g for name, _, g in model.named_parameters()}
    assert all(g is not None and np.isfinite(g).all() for g in grads.values())
    assert np.abs(grads["conv1.W"]).max() > 0


# --------------------------------------------------------------------------------------------
# Clear errors
# --------------------------------------------------------------------------------------------


def _set(node_name, op=None, **attrs):
    def edit(nodes, inits):
        node = next(n for n in nodes if n.name == node_name)
        if op:
            node.op_type = op
        kept = [a for a in node.attribute if a.name not in attrs]
        del node.attribute[:]
        node.attribute.extend(kept + [helper.make_attribute(k, v) for k, v in attrs.items()])

    return edit


@pytest.mark.parametrize(
    "edit, message",
    [
        (_set("relu3_1", op="Elu"), r"node 'relu3_1' \(op Elu\): op 'Elu' .* is not supported"),
        (
            _set("conv2_1", dilations=[2, 2]),
            r"node 'conv2_1' \(op Conv\): attribute dilations=\[2, 2\] is not supported",
        ),
        (
            _set("pool1_1", auto_pad="SAME_UPPER"),
            r"node 'pool1_1' \(op MaxPool\): attribute auto_pad='SAME_UPPER' is not supported",
        ),
        (_set("norm1_1", size=4), r"node 'norm1_1' \(op LRN\): attribute size=4 is not supported"),
        (
            _set("conv1_1", foo=1),  # the ONNX checker already refuses it, naming the node
            r"Unrecognized attribute: foo for operator Conv \(node Name: conv1_1 OpType: Conv\)",
        ),
        (
            _set("pool2_1", storage_order=1),
            r"node 'pool2_1' \(op MaxPool\): attribute storage_order=1 is not supported",
        ),
    ],
)
def test_unsupported_ops_and_attributes_name_node_op_and_attribute(edit, message, tmp_path):
    path = save(narrow(13, edit=edit), tmp_path / "bad.onnx")
    with pytest.raises(ONNXFormatError, match=message):
        load_onnx(path)


def test_a_missing_layer_or_a_branch_is_refused(tmp_path):
    def drop_relu2(nodes, inits):
        i = next(i for i, n in enumerate(nodes) if n.name == "relu2_1")
        nodes[i + 1].input[0] = nodes[i].input[0]
        del nodes[i]

    with pytest.raises(
        ONNXFormatError,
        match=r"expected act after conv2 but found node "
        r"'norm2_1' \(op LRN\)",
    ):
        load_onnx(save(narrow(13, edit=drop_relu2), tmp_path / "a.onnx"))

    def branch(nodes, inits):
        nodes.append(helper.make_node("Relu", ["conv3_1"], ["extra"], name="extra"))

    with pytest.raises(ONNXFormatError, match="'conv3_1' is read by 2 nodes"):
        load_onnx(save(narrow(13, edit=branch), tmp_path / "b.onnx"))


def test_training_mode_dropout_is_refused(tmp_path):
    def edit(nodes, inits):
        inits.append(numpy_helper.from_array(np.array(True), "always_train"))
        drop = next(n for n in nodes if n.name == "fc6_3")
        drop.input.extend(["", "always_train"]) if len(drop.input) == 1 else None

    with pytest.raises(ONNXFormatError, match="training_mode=True is not supported"):
        load_onnx(save(narrow(13, edit=edit), tmp_path / "t.onnx"))


def test_bad_files_give_clear_errors(tmp_path):
    text = tmp_path / "notes.onnx"
    text.write_text("these are my notes, not a network\n" * 20)
    with pytest.raises(ONNXFormatError, match="not a readable ONNX model|holds no ONNX graph"):
        load_onnx(text)
    whole = save(narrow(13), tmp_path / "whole.onnx")
    with open(whole, "rb") as f:
        data = f.read()
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ONNXFormatError, match="truncated"):
        load_onnx(truncated)
    with pytest.raises(FileNotFoundError, match="no ONNX file at"):
        load_onnx(tmp_path / "missing.onnx")
    for dims, what in (
        ([1, 1, 224, 224], "shape \\[1, 1, 224, 224\\]"),
        ([1, 3, 224, 200], "fixed square size"),
    ):
        graph = narrow(13)
        graph.graph.input[0].CopyFrom(
            helper.make_tensor_value_info("data_0", TensorProto.FLOAT, dims)
        )
        with pytest.raises(ONNXFormatError, match=what):
            load_onnx(save(graph, tmp_path / "shape.onnx"))
    assert issubclass(ONNXFormatError, ValueError)


def test_save_onnx_wants_an_alexnet(tmp_path):
    with pytest.raises(TypeError, match="writes a minialexnet AlexNet"):
        save_onnx(object(), tmp_path / "x.onnx")
