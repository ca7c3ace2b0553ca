"""Numba CPU kernels: compiled twins of ``kernels/numpy/``, same file and function names.

Imported eagerly, so ``kernels.cpu.im2col`` is the function (not its file of the same name).
Compilation is lazy and cached on disk (``cache=True``): the first call in a fresh install
compiles, later processes load the machine code.
"""
from minialexnet.kernels.cpu.im2col import col2im, im2col
from minialexnet.kernels.cpu.lrn import lrn_backward, lrn_forward
from minialexnet.kernels.cpu.maxpool import maxpool_backward, maxpool_forward
from minialexnet.kernels.cpu.winograd import (winograd_input, winograd_input_backward,
                                             winograd_output, winograd_output_backward)

__all__ = ["im2col", "col2im", "lrn_forward", "lrn_backward", "maxpool_forward",
           "maxpool_backward", "winograd_input", "winograd_input_backward",
           "winograd_output", "winograd_output_backward"]
