"""Export an ``AlexNet`` to ONNX with standard operators (opset 13).

One ONNX node per layer, in forward order, named like the layer (``conv1``, ``norm1``, ...):

=====================  =============================================================
layer                  ONNX
=====================  =============================================================
Conv2D                 ``Conv`` (pads ``[p, p, p, p]``, ``group``)
ReLU, Tanh             ``Relu``, ``Tanh``
LocalResponseNorm      ``LRN`` with ``alpha * size`` (ONNX divides alpha by the window
                       size, §3.3 does not) and ``bias = k``; with ``groups=2`` (§3.2)
                       ``Split`` into the halves, one ``LRN`` each, ``Concat``
MaxPool2D              ``MaxPool`` (pads ``[top, left, bottom, right]``)
Flatten                ``Flatten`` (axis 1)
Linear                 ``Gemm`` with ``transB=1`` (our ``W`` is (out, in), like PyTorch's)
Dropout                ``Dropout`` with its ratio; the identity at inference
=====================  =============================================================

The input ``input`` is float32 ``(N, 3, S, S)`` with a free batch size ``N``; the output
``logits`` is ``(N, num_classes)`` (no softmax, like ``AlexNet.forward``). The model's
``config`` (including its preprocessing and class names) goes into ``metadata_props``, so
``load_onnx`` gives back exactly the same network; preprocessing and class names also get
keys of their own for other tools.
"""

from __future__ import annotations

import json
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from minialexnet.layers import (
    Conv2D,
    Dropout,
    Flatten,
    Linear,
    LocalResponseNorm,
    MaxPool2D,
    ReLU,
    Tanh,
)

EXPORT_OPSET = 13
CONFIG_KEY = "minialexnet.config"
PREPROCESSING_KEY = "minialexnet.preprocessing"
CLASS_NAMES_KEY = "minialexnet.class_names"


def save_onnx(model, path) -> None:
    """Write ``model`` (an ``AlexNet``) to the ONNX file ``path`` (see the module docstring).

    A two-tower network (``TwoTowerAlexNet``) is exported as the single-device network it
    computes: pass ``towers.to_model()``.
    """
    if (
        not hasattr(model, "layers")
        or not hasattr(model, "config")
        or type(model).__name__ != "AlexNet"
    ):
        raise TypeError(
            f"save_onnx writes a minialexnet AlexNet, got {type(model).__name__}; "
            f"for a two-tower network pass model.to_model()"
        )
    nodes, weights = [], []
    x = "input"
    for name, layer in model.layers.items():
        x = _emit(name, layer, x, nodes, weights)
    size = model.input_size
    graph = helper.make_graph(
        nodes,
        "minialexnet_alexnet",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["N", model.num_classes])],
        weights,
    )
    proto = helper.make_model(
        graph, producer_name="minialexnet", opset_imports=[helper.make_opsetid("", EXPORT_OPSET)]
    )
    helper.set_model_props(
        proto,
        {
            CONFIG_KEY: json.dumps(model.config),
            PREPROCESSING_KEY: json.dumps(model.config["preprocessing"]),
            CLASS_NAMES_KEY: json.dumps(model.config["class_names"]),
        },
    )
    onnx.checker.check_model(proto)
    path = os.fspath(path)
    partial = f"{path}.partial"
    onnx.save(proto, partial)
    os.replace(partial, path)  # a crash never leaves a half-written file at ``path``


def _emit(name: str, layer, x: str, nodes: list, weights: list) -> str:
    """Append the node(s) of one layer reading tensor ``x``; return its output's name."""
    out = "logits" if name == "fc8" else name
    if isinstance(layer, Conv2D):
        weights += [
            _tensor(f"{name}.W", layer.params["W"]),
            _tensor(f"{name}.b", layer.params["b"]),
        ]
        p = layer.padding
        nodes.append(
            helper.make_node(
                "Conv",
                [x, f"{name}.W", f"{name}.b"],
                [out],
                name=name,
                kernel_shape=[layer.kernel_h, layer.kernel_w],
                strides=[layer.stride] * 2,
                pads=[p, p, p, p],
                group=layer.groups,
            )
        )
    elif isinstance(layer, (ReLU, Tanh)):
        nodes.append(
            helper.make_node("Relu" if isinstance(layer, ReLU) else "Tanh", [x], [out], name=name)
        )
    elif isinstance(layer, LocalResponseNorm):
        _emit_lrn(name, layer, x, out, nodes)
    elif isinstance(layer, MaxPool2D):
        nodes.append(
            helper.make_node(
                "MaxPool",
                [x],
                [out],
                name=name,
                kernel_shape=[layer.kernel_size] * 2,
                strides=[layer.stride] * 2,
                pads=list(layer.padding),
            )
        )
    elif isinstance(layer, Flatten):
        nodes.append(helper.make_node("Flatten", [x], [out], name=name, axis=1))
    elif isinstance(layer, Linear):
        weights += [
            _tensor(f"{name}.W", layer.params["W"]),
            _tensor(f"{name}.b", layer.params["b"]),
        ]
        nodes.append(
            helper.make_node("Gemm", [x, f"{name}.W", f"{name}.b"], [out], name=name, transB=1)
        )
    elif isinstance(layer, Dropout):
        weights.append(
            numpy_helper.from_array(np.array(layer.p, dtype=np.float32), f"{name}.ratio")
        )
        nodes.append(helper.make_node("Dropout", [x, f"{name}.ratio"], [out], name=name))
    else:
        raise TypeError(
            f"save_onnx does not know how to write layer {name} ({type(layer).__name__})"
        )
    return out


def _emit_lrn(name: str, layer, x: str, out: str, nodes: list) -> None:
    """``LRN`` in ONNX's convention; grouped (§3.2) as Split -> one LRN per group -> Concat."""
    constants = {
        "size": layer.size,
        "alpha": layer.alpha * layer.size,
        "beta": layer.beta,
        "bias": layer.k,
    }
    if layer.groups == 1:
        nodes.append(helper.make_node("LRN", [x], [out], name=name, **constants))
        return
    parts = [f"{name}.group{g}" for g in range(layer.groups)]
    nodes.append(helper.make_node("Split", [x], parts, name=f"{name}.split", axis=1))
    for part in parts:
        nodes.append(
            helper.make_node("LRN", [part], [f"{part}.lrn"], name=f"{part}.lrn", **constants)
        )
    nodes.append(helper.make_node("Concat", [f"{p}.lrn" for p in parts], [out], name=name, axis=1))


def _tensor(name: str, array: np.ndarray):
    """An initializer holding ``array`` as float32 (the network's own dtype)."""
    return numpy_helper.from_array(np.ascontiguousarray(array, dtype=np.float32), name)
