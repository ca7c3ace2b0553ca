"""Numba CPU kernels: compiled twins of ``kernels/numpy/``, same file and function names.

Imported eagerly, so ``kernels.cpu.im2col`` is the function (not its file of the same name).
Compilation is lazy and cached on disk (``cache=True``): the first call in a fresh install
compiles, later processes load the machine code.

Importing this package starts Numba's thread pool with *sleeping* idle workers
(``minialexnet.threads.start_numba_threads``, 8 ms). A training step alternates these kernels
with OpenBLAS matrix products; by default GNU OpenMP's idle workers keep spinning after every
parallel loop, on the very cores the BLAS threads need next. Measured on 2 cores, one step of
the "mini" network at batch 32 took 128 ms with spinning workers and 36 ms with sleeping ones.
The OpenMP runtime reads ``OMP_WAIT_POLICY`` once, when it starts, so the variable is set only
for that moment and then put back: other libraries' OpenMP runtimes in the same process (a
PyTorch benchmarked beside us) keep their own default. A value the user set is used as it is.
"""

from minialexnet.kernels.cpu.im2col import col2im, im2col
from minialexnet.kernels.cpu.lrn import lrn_backward, lrn_forward
from minialexnet.kernels.cpu.maxpool import maxpool_backward, maxpool_forward
from minialexnet.kernels.cpu.relu import relu_backward, relu_forward
from minialexnet.kernels.cpu.sgd import sgd_update
from minialexnet.kernels.cpu.winograd import (
    winograd_input,
    winograd_input_backward,
    winograd_output,
    winograd_output_backward,
)
from minialexnet.threads import start_numba_threads

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

start_numba_threads()
