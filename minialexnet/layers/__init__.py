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

from minialexnet.layers.base import Layer
from minialexnet.layers.conv import Conv2D
from minialexnet.layers.dropout import Dropout
from minialexnet.layers.flatten import Flatten
from minialexnet.layers.linear import Linear
from minialexnet.layers.lrn import LocalResponseNorm
from minialexnet.layers.maxpool import MaxPool2D
from minialexnet.layers.relu import ReLU
from minialexnet.layers.softmax_cross_entropy import SoftmaxCrossEntropy
from minialexnet.layers.tanh import Tanh

__all__ = [
    "Layer",
    "Conv2D",
    "ReLU",
    "Tanh",
    "LocalResponseNorm",
    "MaxPool2D",
    "Dropout",
    "Linear",
    "Flatten",
    "SoftmaxCrossEntropy",
]
