"""Readable NumPy reference kernels: the specification the Numba and CUDA twins are tested
against."""

from minialexnet.kernels.numpy.im2col import col2im, im2col
from minialexnet.kernels.numpy.lrn import lrn_backward, lrn_forward
from minialexnet.kernels.numpy.maxpool import maxpool_backward, maxpool_forward
from minialexnet.kernels.numpy.relu import relu_backward, relu_forward
from minialexnet.kernels.numpy.sgd import sgd_update
from minialexnet.kernels.numpy.winograd import (
    winograd_input,
    winograd_input_backward,
    winograd_output,
    winograd_output_backward,
)

__all__ = [
    "im2col",
    "col2im",
    "lrn_forward",
    "lrn_backward",
    "maxpool_forward",
    "maxpool_backward",
    "relu_forward",
    "relu_backward",
    "sgd_update",
    "winograd_input",
    "winograd_input_backward",
    "winograd_output",
    "winograd_output_backward",
]
