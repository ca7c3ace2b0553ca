"""The specification: one readable NumPy class per operation, each with an explicit backward.

=====================  =====================================  ==============
class                  operation                              paper section
=====================  =====================================  ==============
Conv2D                 convolution (im2col + GEMM), groups    §3.5, §3.2
ReLU, Tanh             non-linearities                        §3.1
LocalResponseNorm      local response normalization           §3.3
MaxPool2D              overlapping max pooling                §3.4
Dropout                inverted dropout                       §4.2
Linear, Flatten        fully connected layers                 §3.5
SoftmaxCrossEntropy    softmax + multinomial logistic loss    §3.5
=====================  =====================================  ==============
"""
import importlib

from minialexnet.layers.base import Layer

_WHERE = {
    "Conv2D": "conv", "Linear": "linear", "Flatten": "flatten",
    "ReLU": "relu", "Tanh": "tanh", "LocalResponseNorm": "lrn",
    "MaxPool2D": "maxpool", "Dropout": "dropout", "SoftmaxCrossEntropy": "softmax_cross_entropy",
}
__all__ = ["Layer", *_WHERE]


def __getattr__(name):  # PEP 562: import each layer's module on first use
    if name in _WHERE:
        return getattr(importlib.import_module(f"minialexnet.layers.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'minialexnet.layers' has no attribute {name!r}")
