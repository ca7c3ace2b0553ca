"""Read an AlexNet-shaped ONNX graph into an ordinary ``AlexNet``.

The graph must be a single chain in AlexNet's order (Figure 2)::

    5 x  Conv, Relu|Tanh, [LRN | Split -> LRN per group -> Concat], [MaxPool]
         Flatten | Reshape to (N, features)
    3 x  Gemm | MatMul [+ Add], then for fc6 and fc7: Relu|Tanh, [Dropout]
         [Softmax]

with any channel counts, kernels, strides, paddings, groups and LRN constants, and opsets 7
to 21 (each op's attributes and inputs as that opset defines them). Every attribute is
checked; anything the network could not reproduce exactly (a dilation, an auto_pad, a
branch, an unknown op) raises ``ONNXFormatError`` naming the node, the op and the attribute,
never a silently different network. The final Softmax is dropped: ``AlexNet.forward``
returns logits, as fc8 does.

The file's layout becomes a table (``minialexnet.model.Variant``). If it is one of
``VARIANTS`` (possibly with the ``lrn=False``, ``overlapping_pool=False`` or ``dropout=0``
switches) the network is that variant; BVLC's files give ``"bvlc"``. Otherwise it is a
``"custom"`` network whose config holds the table. Conversions at the boundary: ONNX's
(Caffe's) LRN alpha is over the window, ours over the plain sum (``alpha / size``); ONNX's
``pads`` are ``[top, left, bottom, right]`` as ours; a ``ceil_mode`` pooling becomes the
extra bottom/right padding that floor mode needs for the same output; ``Gemm``'s
``alpha``, ``beta`` and ``transB`` are folded into the weights.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import replace

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import helper, numpy_helper

from minialexnet.data.subsets import imagenet1000
from minialexnet.model import (
    CUSTOM,
    FC,
    LRN,
    VARIANTS,
    AlexNet,
    Conv,
    Variant,
    variant_from_dict,
    variant_to_dict,
)
from minialexnet.onnx_io.errors import ONNXFormatError
from minialexnet.onnx_io.writer import CLASS_NAMES_KEY, CONFIG_KEY, PREPROCESSING_KEY
from minialexnet.preprocessing import BVLC_PREPROCESSING
from minialexnet.shapes import conv_output_size

OPSETS = range(7, 22)  # the default-domain opsets this reader knows: 7 .. 21
LAYOUT = (
    "5 x (Conv, Relu|Tanh, [LRN], [MaxPool]), Flatten|Reshape, 3 x (Gemm|MatMul+Add, "
    "Relu|Tanh, [Dropout]) without an activation after the last, [Softmax]"
)


def load_onnx(
    path,
    *,
    preprocessing: dict | None = None,
    class_names: list | None = None,
    rng: np.random.Generator | None = None,
) -> AlexNet:
    """The ``AlexNet`` of the ONNX file ``path`` (see the module docstring).

    ``preprocessing`` and ``class_names`` override what the file says; without them they
    come from the file's metadata (files written by ``save_onnx``), else BVLC's for a
    ``"bvlc"`` network (BGR minus (104, 117, 123); the 1000 ILSVRC-2012 wnids), else the
    defaults (RGB minus the training mean image; no names). ``rng`` becomes the dropout
    generator. Raises ``ONNXFormatError`` (a ``ValueError``) for a file that is not ONNX, is
    damaged, or holds a network that is not AlexNet-shaped.
    """
    proto = _read(path)
    graph = _Graph(proto, os.fspath(path))
    steps = _walk(graph)
    table, options, num_classes, weights = _layout(steps, graph)
    config = _config(table, options, num_classes, _metadata(proto), preprocessing, class_names)
    model = AlexNet.from_config(config, rng=rng)
    model.load_state_dict(weights)
    return model


# -- the file ---------------------------------------------------------------------------------


def _read(path) -> onnx.ModelProto:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no ONNX file at {path}")
    try:
        proto = onnx.load(path)
    except (DecodeError, RuntimeError, ValueError, UnicodeDecodeError) as err:
        raise ONNXFormatError(
            f"{path} is not a readable ONNX model (truncated, or not ONNX at all): {err}"
        ) from None
    if not proto.graph.node or proto.ir_version <= 0:
        raise ONNXFormatError(
            f"{path} holds no ONNX graph (is it an ONNX file? it parsed to an empty model)"
        )
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as err:
        # The checker's first line says what is wrong, its "Context" line names the node.
        lines = [line for line in str(err).splitlines() if line.strip()]
        where = [
            line.split("Bad node spec for node.")[-1].strip()
            for line in lines
            if "Bad node spec" in line
        ]
        raise ONNXFormatError(
            f"{path} is not a valid ONNX model: {lines[0]}"
            + (f" (node {where[0]})" if where else "")
        ) from None
    return proto


def _metadata(proto) -> dict:
    """The ``minialexnet.*`` metadata entries, decoded from JSON."""
    found = {}
    for prop in proto.metadata_props:
        if prop.key in (CONFIG_KEY, PREPROCESSING_KEY, CLASS_NAMES_KEY):
            try:
                found[prop.key] = json.loads(prop.value)
            except ValueError:
                raise ONNXFormatError(
                    f"metadata entry {prop.key} is not JSON: {prop.value[:200]!r}"
                ) from None
    return found


class _Graph:
    """The graph's constants, who reads each tensor, its one image input and its opset."""

    def __init__(self, proto, path: str) -> None:
        self.path, graph = path, proto.graph
        opsets = {o.domain: o.version for o in proto.opset_import}
        self.opset = opsets.get("", opsets.get("ai.onnx"))
        if self.opset not in OPSETS:
            raise ONNXFormatError(
                f"{path} uses opset {self.opset} of the default domain; "
                f"load_onnx reads opsets {OPSETS[0]} to {OPSETS[-1]}"
            )
        self.constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        self.nodes = [n for n in graph.node if n.op_type != "Constant"]
        for node in graph.node:
            if node.op_type == "Constant":
                self.constants[node.output[0]] = _constant_value(node)
        self.readers: dict[str, list] = {}
        for node in self.nodes:
            for name in node.input:
                self.readers.setdefault(name, []).append(node)
        self.outputs = [o.name for o in graph.output]
        self.input, self.input_size = _image_input(graph, self.constants, path)


def _constant_value(node) -> np.ndarray:
    for attr in node.attribute:
        if attr.name in ("value", "value_float", "value_floats", "value_int", "value_ints"):
            value = helper.get_attribute_value(attr)
            return numpy_helper.to_array(value) if attr.name == "value" else np.array(value)
    raise ONNXFormatError(
        f"{_describe(node)}: only Constant nodes with a numeric value "
        f"(value, value_float(s), value_int(s)) are supported"
    )


def _image_input(graph, constants: dict, path: str) -> tuple[str, int]:
    """The one non-constant input: float32 (N, 3, S, S) with a fixed S."""
    inputs = [i for i in graph.input if i.name not in constants]
    if len(inputs) != 1:
        raise ONNXFormatError(
            f"{path} has {len(inputs)} data inputs "
            f"({[i.name for i in inputs]}); AlexNet reads one image batch"
        )
    tensor = inputs[0].type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in tensor.shape.dim]
    ok = (
        tensor.elem_type == onnx.TensorProto.FLOAT
        and len(dims) == 4
        and dims[1] == 3
        and isinstance(dims[2], int)
        and dims[2] > 0
        and dims[2] == dims[3]
    )
    if not ok:
        raise ONNXFormatError(
            f"{path}: input {inputs[0].name!r} has shape {dims} and type "
            f"{onnx.TensorProto.DataType.Name(tensor.elem_type)}; AlexNet "
            f"reads float images (N, 3, S, S) with a fixed square size S"
        )
    return inputs[0].name, dims[2]


# -- the chain of nodes ---------------------------------------------------------------------


def _describe(node) -> str:
    if node.name:
        return f"node {node.name!r} (op {node.op_type})"
    return f"the {node.op_type} node writing {node.output[0]!r}"


def _fail(node, message: str):
    raise ONNXFormatError(f"{_describe(node)}: {message}")


def _attrs(node, defaults: dict) -> dict:
    """The node's attributes over ``defaults``; any attribute not in ``defaults`` fails."""
    values = dict(defaults)
    for attr in node.attribute:
        if attr.name not in defaults:
            _fail(
                node,
                f"attribute {attr.name!r} is not supported (load_onnx understands "
                f"{sorted(defaults) or 'no attributes'} for {node.op_type})",
            )
        value = helper.get_attribute_value(attr)
        values[attr.name] = value.decode() if isinstance(value, bytes) else value
    return values


def _require(node, ok: bool, attribute: str, value, why: str) -> None:
    if not ok:
        _fail(node, f"attribute {attribute}={value!r} is not supported: {why}")


def _walk(graph: _Graph) -> list[dict]:
    """Follow the chain from the image input to the graph's output: one step per layer."""
    steps, tensor = [], graph.input
    shape = (3, graph.input_size, graph.input_size)  # one example, no batch axis
    used = set()
    while tensor not in graph.outputs or graph.readers.get(tensor):
        readers = graph.readers.get(tensor, [])
        if len(readers) != 1:
            names = [_describe(n) for n in readers]
            raise ONNXFormatError(
                f"{graph.path}: tensor {tensor!r} is read by {len(readers)} nodes {names}; "
                f"load_onnx reads a single chain of layers ({LAYOUT})"
            )
        node = readers[0]
        reader = _READERS.get(node.op_type)
        if reader is None or node.domain not in ("", "ai.onnx"):
            _fail(
                node,
                f"op {node.op_type!r} (domain {node.domain or 'ai.onnx'!r}) is not "
                f"supported; load_onnx reads {LAYOUT}",
            )
        step, shape, tensor, consumed = reader(graph, node, shape)
        used.update(id(n) for n in consumed)
        if step is not None:
            steps.append(step)
    if graph.outputs != [tensor]:
        raise ONNXFormatError(
            f"{graph.path}: the graph's outputs are {graph.outputs}; "
            f"load_onnx reads graphs whose one output is the chain's end"
        )
    for node in graph.nodes:
        if id(node) not in used:
            _fail(
                node,
                "is not on the chain from the image input to the output; load_onnx "
                "reads a single chain of layers",
            )
    return steps


def _constant(graph: _Graph, node, name: str, what: str) -> np.ndarray:
    if name not in graph.constants:
        _fail(
            node,
            f"its {what} ({name!r}) must be a constant (an initializer or a "
            f"Constant node), not computed by the graph",
        )
    return graph.constants[name]


def _only_output(graph: _Graph, node, index: int = 0) -> None:
    """Extra outputs (Dropout's mask, MaxPool's indices) must be unused."""
    for extra in node.output[index + 1 :]:
        if extra and (graph.readers.get(extra) or extra in graph.outputs):
            _fail(node, f"its output {extra!r} is used; load_onnx supports only its first output")


def _float(value) -> float:
    """The shortest decimal that is this float32 (1e-4 stays 1e-4, not 9.99999974e-05)."""
    return float(str(np.float32(value)))


def _conv(graph, node, shape):
    a = _attrs(
        node,
        {
            "kernel_shape": None,
            "strides": [1, 1],
            "pads": [0, 0, 0, 0],
            "group": 1,
            "dilations": [1, 1],
            "auto_pad": "NOTSET",
        },
    )
    w = _constant(graph, node, node.input[1], "weight")
    _require(
        node, a["auto_pad"] in ("NOTSET", "VALID"), "auto_pad", a["auto_pad"], "give explicit pads"
    )
    _require(
        node,
        list(a["dilations"]) == [1, 1],
        "dilations",
        a["dilations"],
        "AlexNet's convolutions are not dilated",
    )
    _require(
        node,
        w.ndim == 4 and w.shape[2] == w.shape[3],
        "kernel_shape",
        w.shape[2:],
        "square 2-D kernels only",
    )
    _require(
        node,
        a["kernel_shape"] in (None, list(w.shape[2:])),
        "kernel_shape",
        a["kernel_shape"],
        f"the weight has {w.shape[2:]} kernels",
    )
    _require(
        node, len(set(a["strides"])) == 1, "strides", a["strides"], "the same stride on both axes"
    )
    _require(
        node, len(set(a["pads"])) == 1, "pads", a["pads"], "the same padding on all four sides"
    )
    c, h, width = shape
    _require(
        node,
        w.shape[1] * a["group"] == c,
        "group",
        a["group"],
        f"the weight {w.shape} does not fit {c} input channels in {a['group']} groups",
    )
    b = (
        _constant(graph, node, node.input[2], "bias")
        if len(node.input) > 2 and node.input[2]
        else np.zeros(w.shape[0], np.float32)
    )
    stride, pad = a["strides"][0], a["pads"][0]
    out_h, out_w = (conv_output_size(n, w.shape[2], stride, pad) for n in (h, width))
    step = {
        "kind": "conv",
        "node": node,
        "W": w,
        "b": b.reshape(-1),
        "kernel": w.shape[2],
        "stride": stride,
        "padding": pad,
        "groups": a["group"],
    }
    return step, (w.shape[0], out_h, out_w), node.output[0], [node]


def _activation(graph, node, shape):
    _attrs(node, {})
    step = {"kind": "act", "node": node, "name": node.op_type.lower()}
    return step, shape, node.output[0], [node]


def _lrn_constants(node) -> dict:
    a = _attrs(node, {"size": None, "alpha": 1e-4, "beta": 0.75, "bias": 1.0})
    _require(
        node,
        a["size"] % 2 == 1,
        "size",
        a["size"],
        "an even window is not centred on its channel; only odd sizes",
    )
    # ONNX (Caffe, PyTorch) multiplies alpha / size by the sum of squares; §3.3 alpha alone.
    return {
        "size": a["size"],
        "alpha": _float(a["alpha"]) / a["size"],
        "beta": _float(a["beta"]),
        "k": _float(a["bias"]),
    }


def _lrn(graph, node, shape):
    step = dict(kind="lrn", node=node, groups=1, **_lrn_constants(node))
    return step, shape, node.output[0], [node]


def _split_lrn(graph, node, shape):
    """Split along channels -> one LRN per part -> Concat: LRN within groups (§3.2)."""
    a = _attrs(node, {"axis": 0, "split": None, "num_outputs": None})
    _require(
        node,
        a["axis"] == 1,
        "axis",
        a["axis"],
        "only a split of the channels (axis 1) feeding one LRN per part, as grouped LRN",
    )
    parts = list(node.output)
    sizes = (
        a["split"]
        if a["split"] is not None
        else (
            _constant(graph, node, node.input[1], "split").tolist()
            if len(node.input) > 1 and node.input[1]
            else None
        )
    )
    _require(
        node,
        sizes is None or len(set(sizes)) == 1,
        "split",
        sizes,
        "equal parts only (grouped LRN)",
    )
    lrns = [graph.readers.get(p, [None])[0] for p in parts]
    if any(
        n is None or n.op_type != "LRN" or len(graph.readers[p]) != 1 for n, p in zip(lrns, parts)
    ):
        _fail(node, "a Split is supported only as grouped LRN: each part read by one LRN")
    concat = [graph.readers.get(n.output[0], [None]) for n in lrns]
    first = concat[0][0]
    if (
        first is None
        or first.op_type != "Concat"
        or any(len(c) != 1 or c[0] is not first for c in concat)
        or list(first.input) != [n.output[0] for n in lrns]
    ):
        _fail(
            node,
            "a Split is supported only as grouped LRN: the LRNs' outputs must be "
            "concatenated back in order by one Concat",
        )
    _require(first, _attrs(first, {"axis": None})["axis"] == 1, "axis", "", "channels only")
    constants = [_lrn_constants(n) for n in lrns]
    if any(c != constants[0] for c in constants):
        _fail(node, f"the groups' LRNs have different constants {constants}")
    _require(
        node,
        shape[0] % len(parts) == 0,
        "split",
        len(parts),
        f"{shape[0]} channels do not divide into {len(parts)} equal groups",
    )
    step = dict(kind="lrn", node=node, groups=len(parts), **constants[0])
    return step, shape, first.output[0], [node, *lrns, first]


def _maxpool(graph, node, shape):
    a = _attrs(
        node,
        {
            "kernel_shape": None,
            "strides": None,
            "pads": [0, 0, 0, 0],
            "auto_pad": "NOTSET",
            "ceil_mode": 0,
            "storage_order": 0,
            "dilations": [1, 1],
        },
    )
    k, strides = a["kernel_shape"], a["strides"] or [1, 1]
    _require(
        node,
        k is not None and len(k) == 2 and k[0] == k[1],
        "kernel_shape",
        k,
        "square 2-D windows only",
    )
    _require(node, strides[0] == strides[1], "strides", strides, "the same on both axes")
    _require(
        node, a["auto_pad"] in ("NOTSET", "VALID"), "auto_pad", a["auto_pad"], "give explicit pads"
    )
    _require(
        node,
        list(a["dilations"]) == [1, 1],
        "dilations",
        a["dilations"],
        "AlexNet's pooling is not dilated",
    )
    _require(
        node,
        a["storage_order"] == 0,
        "storage_order",
        a["storage_order"],
        "only the default (row-major indices)",
    )
    _only_output(graph, node)
    c, h, w = shape
    top, left, bottom, right = a["pads"]
    if a["ceil_mode"]:
        bottom = _ceil_padding(node, h, k[0], strides[0], top, bottom)
        right = _ceil_padding(node, w, k[0], strides[0], left, right)
    pads = (top, left, bottom, right)
    _require(
        node,
        max(pads) < k[0],
        "pads",
        list(pads),
        f"each pad must be smaller than the {k[0]}-wide window",
    )
    out_h = conv_output_size(h, k[0], strides[0], (top, bottom))
    out_w = conv_output_size(w, k[0], strides[0], (left, right))
    step = {"kind": "pool", "node": node, "kernel": k[0], "stride": strides[0], "padding": pads}
    return step, (c, out_h, out_w), node.output[0], [node]


def _ceil_padding(node, size: int, k: int, s: int, before: int, after: int) -> int:
    """The ``after`` padding that gives floor mode the output of ceil mode."""
    span = size + before + after - k
    extra = -span % s  # rows missing to fill the last, partial window
    last_start = (span + extra) // s * s - before
    _require(
        node,
        extra == 0 or last_start < size,
        "ceil_mode",
        1,
        "its last window would start in the padding, where frameworks disagree",
    )
    return after + extra


def _flatten(graph, node, shape):
    a = _attrs(node, {"axis": 1})
    _require(node, a["axis"] == 1, "axis", a["axis"], "only (N, features) from axis 1")
    return {"kind": "flatten", "node": node}, (math.prod(shape),), node.output[0], [node]


def _reshape(graph, node, shape):
    _attrs(node, {"allowzero": 0})
    target = _constant(graph, node, node.input[1], "shape").tolist()
    features = math.prod(shape)
    ok = len(target) == 2 and (target[1] == features or (target[1] == -1 and target[0] != -1))
    _require(
        node,
        ok and target[0] in (0, 1, -1),
        "shape",
        target,
        f"only a flattening to (N, {features})",
    )
    return {"kind": "flatten", "node": node}, (features,), node.output[0], [node]


def _gemm(graph, node, shape):
    a = _attrs(node, {"alpha": 1.0, "beta": 1.0, "transA": 0, "transB": 0, "broadcast": 1})
    _require(
        node,
        a["transA"] == 0,
        "transA",
        a["transA"],
        "the activations must be the left operand, (N, features)",
    )
    b = _constant(graph, node, node.input[1], "weight")
    w = b if a["transB"] else b.T  # ours is (out, in), like PyTorch's
    _require(
        node,
        w.ndim == 2 and w.shape[1] == shape[0],
        "transB",
        a["transB"],
        f"the weight {b.shape} does not take {shape[0]} features",
    )
    bias = (
        _constant(graph, node, node.input[2], "bias")
        if len(node.input) > 2 and node.input[2]
        else np.zeros(w.shape[0], np.float32)
    )
    _require(
        node,
        bias.size == w.shape[0],
        "beta",
        a["beta"],
        f"the bias {bias.shape} does not match {w.shape[0]} outputs",
    )
    w = w if a["alpha"] == 1 else w * np.float32(a["alpha"])
    bias = bias.reshape(-1) if a["beta"] == 1 else bias.reshape(-1) * np.float32(a["beta"])
    step = {"kind": "fc", "node": node, "W": w, "b": bias}
    return step, (w.shape[0],), node.output[0], [node]


def _matmul(graph, node, shape):
    """MatMul by a constant (in, out) matrix, optionally followed by Add of a bias."""
    _attrs(node, {})
    b = _constant(graph, node, node.input[1], "weight")
    if b.ndim != 2 or b.shape[0] != shape[0]:
        _fail(node, f"the weight {b.shape} does not take {shape[0]} features")
    out, consumed = node.output[0], [node]
    bias = np.zeros(b.shape[1], np.float32)
    readers = graph.readers.get(out, [])
    if len(readers) == 1 and readers[0].op_type == "Add":
        add = readers[0]
        _attrs(add, {"axis": None, "broadcast": 0})
        other = [n for n in add.input if n != out]
        bias = _constant(graph, add, other[0], "bias") if len(other) == 1 else None
        if bias is None or bias.size != b.shape[1]:
            _fail(add, f"only the addition of a constant bias of {b.shape[1]} values")
        out, consumed = add.output[0], [node, add]
    step = {"kind": "fc", "node": node, "W": b.T, "b": bias.reshape(-1)}
    return step, (b.shape[1],), out, consumed


def _dropout(graph, node, shape):
    if graph.opset < 12:
        ratio = _attrs(node, {"ratio": 0.5, "is_test": 1})["ratio"]
    else:
        _attrs(node, {"seed": 0})
        ratio = (
            _constant(graph, node, node.input[1], "ratio").item()
            if len(node.input) > 1 and node.input[1]
            else 0.5
        )
        if len(node.input) > 2 and node.input[2]:
            training = _constant(graph, node, node.input[2], "training_mode")
            _require(
                node,
                not bool(training),
                "training_mode",
                bool(training),
                "a file that drops units at inference is not a fixed network",
            )
    _only_output(graph, node)
    step = {"kind": "dropout", "node": node, "ratio": _float(ratio)}
    return step, shape, node.output[0], [node]


def _softmax(graph, node, shape):
    a = _attrs(node, {"axis": 1 if graph.opset < 13 else -1})
    _require(node, a["axis"] in (1, -1), "axis", a["axis"], "only over the classes")
    if node.output[0] not in graph.outputs or graph.readers.get(node.output[0]):
        _fail(node, "a Softmax is supported only as the graph's last node")
    return None, shape, node.output[0], [node]  # AlexNet.forward returns the logits


_READERS = {
    "Conv": _conv,
    "Relu": _activation,
    "Tanh": _activation,
    "LRN": _lrn,
    "Split": _split_lrn,
    "MaxPool": _maxpool,
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Gemm": _gemm,
    "MatMul": _matmul,
    "Dropout": _dropout,
    "Softmax": _softmax,
}


# -- steps -> AlexNet's table -----------------------------------------------------------------


class _Steps:
    """The steps in order, taken one by one with a clear error when the layout differs."""

    def __init__(self, steps: list, path: str) -> None:
        self.steps, self.at, self.path = steps, 0, path

    def take(self, kind: str, optional: bool = False, after: str = ""):
        step = self.steps[self.at] if self.at < len(self.steps) else None
        if step is not None and step["kind"] == kind:
            self.at += 1
            return step
        if optional:
            return None
        found = _describe(step["node"]) if step else "the end of the graph"
        raise ONNXFormatError(
            f"{self.path}: expected {kind} {after}but found {found}; "
            f"load_onnx reads AlexNet-shaped graphs: {LAYOUT}"
        )


def _layout(steps: list, graph: _Graph):
    """``(table, options, num_classes, weights)`` of the chain's steps."""
    take = _Steps(steps, graph.path)
    convs, fcs, weights, acts, norms, pools, drops = [], [], {}, [], [], [], []
    for i in range(1, 6):
        conv = take.take("conv", after=f"(conv{i}) ")
        acts.append(take.take("act", after=f"after conv{i} ")["name"])
        norm, pool = take.take("lrn", optional=True), take.take("pool", optional=True)
        norms += [norm] if norm else []
        pools += [pool] if pool else []
        convs.append(
            Conv(
                f"conv{i}",
                conv["W"].shape[0],
                conv["kernel"],
                conv["stride"],
                conv["padding"],
                conv["groups"],
                0.01,
                0.0,
                norm is not None,
                pool is not None,
                pool["padding"] if pool else (0, 0, 0, 0),
            )
        )
        weights[f"conv{i}.W"], weights[f"conv{i}.b"] = conv["W"], conv["b"]
    take.take("flatten", after="after conv5 ")
    for i in (6, 7, 8):
        fc = take.take("fc", after=f"(fc{i}) ")
        if i < 8:
            acts.append(take.take("act", after=f"after fc{i} ")["name"])
            drop = take.take("dropout", optional=True)
            drops += [drop] if drop else []
        fcs.append(
            FC(
                f"fc{i}",
                fc["W"].shape[0] if i < 8 else None,
                0.01,
                0.0,
                i < 8 and drop is not None,
            )
        )
        weights[f"fc{i}.W"], weights[f"fc{i}.b"] = fc["W"], fc["b"]
    if take.at != len(steps):
        take.take("nothing")
    norm, (pool_k, pool_s), ratio = _shared(norms, pools, drops, acts, graph.path)
    table = Variant(graph.input_size, tuple(convs), tuple(fcs), norm, pool_k, pool_s)
    options = {"activation": acts[0], "lrn": True, "overlapping_pool": True, "dropout": ratio}
    return table, options, weights["fc8.W"].shape[0], weights


def _shared(norms, pools, drops, acts, path):
    """What AlexNet's table and options hold once for all layers must agree across them."""

    def one(values, what):
        if len(set(values)) > 1:
            raise ONNXFormatError(
                f"{path}: the {what} differ between layers ({values}); an "
                f"AlexNet table holds one for the whole network"
            )
        return values[0] if values else None

    constants = one(
        [(n["size"], n["alpha"], n["beta"], n["k"], n["groups"]) for n in norms],
        "LRN constants (size, alpha, beta, k, groups)",
    )
    window = one([(p["kernel"], p["stride"]) for p in pools], "pooling windows")
    ratio = one([d["ratio"] for d in drops], "dropout ratios")
    one(acts, "activations")
    norm = LRN(*constants) if constants else LRN()
    return norm, window or (3, 2), ratio if ratio is not None else 0.0


# -- table -> config --------------------------------------------------------------------------


def _effective(table: Variant, lrn: bool, overlapping: bool, dropout: float) -> Variant:
    """What a table builds with these switches, without its initialization columns."""
    convs = tuple(replace(r, init=0.01, bias=0.0, lrn=r.lrn and lrn) for r in table.convs)
    fcs = tuple(
        replace(r, init=0.01, bias=0.0, dropout=r.dropout and dropout > 0) for r in table.fcs
    )
    k, s = (table.pool_kernel, table.pool_stride) if overlapping else (2, 2)
    norm = table.norm if any(r.lrn for r in convs) else LRN()
    return Variant(table.input_size, convs, fcs, norm, k, s)


def _same(a: Variant, b: Variant) -> bool:
    """Equal layouts; LRN constants equal to float32 precision (they went through a file)."""
    close = all(
        math.isclose(getattr(a.norm, f), getattr(b.norm, f), rel_tol=1e-6)
        for f in ("alpha", "beta", "k")
    )
    return close and replace(a, norm=b.norm) == b


def _named(table: Variant, options: dict):
    """``(name, switches)`` of the built-in variant that builds exactly this, or ``None``."""
    found = _effective(table, True, True, options["dropout"])
    for name, variant in VARIANTS.items():
        for lrn in (True, False):
            for overlapping in (True, False):
                if _same(_effective(variant, lrn, overlapping, options["dropout"]), found):
                    return name, {"lrn": lrn, "overlapping_pool": overlapping}
    return None


def _from_metadata(meta: dict, table: Variant, options: dict, num_classes: int):
    """The config stored by ``save_onnx``, if it builds exactly the graph's network."""
    config = meta.get(CONFIG_KEY)
    if not isinstance(config, dict):
        return None
    try:
        name = config["variant"]
        stored_table = VARIANTS[name] if name != CUSTOM else variant_from_dict(config["table"])
        stored = _effective(
            stored_table, config["lrn"], config["overlapping_pool"], config["dropout"]
        )
    except (KeyError, TypeError, ValueError):
        return None
    found = _effective(table, True, True, options["dropout"])
    same = (
        _same(stored, found)
        and config.get("num_classes") == num_classes
        and config.get("activation") == options["activation"]
        and math.isclose(config["dropout"], options["dropout"], rel_tol=1e-6)
    )
    return dict(config) if same else None


def _config(table, options, num_classes, meta, preprocessing, class_names) -> dict:
    config = _from_metadata(meta, table, options, num_classes)
    if config is None:
        named = _named(table, options)
        config = {"num_classes": num_classes, **options}
        if named:
            config.update(variant=named[0], **named[1])
        else:
            config.update(variant=CUSTOM, table=variant_to_dict(table))
        if config["variant"] == "bvlc":
            config["preprocessing"] = BVLC_PREPROCESSING
            config["class_names"] = imagenet1000() if num_classes == 1000 else None
    for key, meta_key, given in (
        ("preprocessing", PREPROCESSING_KEY, preprocessing),
        ("class_names", CLASS_NAMES_KEY, class_names),
    ):
        if given is not None:
            config[key] = given
        elif meta_key in meta:
            config[key] = meta[meta_key]
    return config
