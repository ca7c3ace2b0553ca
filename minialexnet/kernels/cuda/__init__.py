"""numba.cuda kernels: the GPU twins of ``kernels/cpu/`` plus the pieces the CPU does in NumPy.

=========================  ====================================================  =========
file                       functions                                             CPU twin
=========================  ====================================================  =========
im2col.py                  im2col, col2im                                        cpu/im2col.py
lrn.py                     lrn_forward, lrn_backward                             cpu/lrn.py
maxpool.py                 maxpool_forward, maxpool_backward                     cpu/maxpool.py
gemm.py                    gemm, GemmPlan                                        (NumPy matmul)
cublas.py                  CublasGemmPlan, choose_gemm (cuBLAS, optional)        (NumPy matmul)
layout.py                  to_image_major, to_channel_major                      (NumPy transpose)
bias.py                    add_bias, bias_grad                                   (NumPy)
relu.py, tanh.py           relu_/tanh_forward, relu_/tanh_backward               (NumPy)
dropout.py                 dropout_forward, dropout_backward, keep_mask          (NumPy rng)
softmax_cross_entropy.py   softmax_cross_entropy_forward / _backward             (NumPy)
sgd.py                     sgd_update                                            cpu/sgd.py
divergence.py              mark_divergence (a submitted step's NaN guard)        (math.isfinite)
columns.py                 place_columns, add_columns (§3.2 gather, reduce)      (np.concatenate)
=========================  ====================================================  =========

Every function takes float32 device arrays (``numba.cuda.to_device``), optional
preallocated outputs and an optional CUDA ``stream``, and launches one thread per output
element (reductions: one block per output). Importing this package never initialises CUDA,
so it is safe on a machine without a GPU; ``is_available()`` tells whether the kernels can
run (a GPU, or the CUDA simulator with ``NUMBA_ENABLE_CUDASIM=1`` set before Numba is
imported) and ``require_cuda()`` raises a clear error when they cannot.

Two files share their name with their main function (``im2col``, ``gemm``): once the file
has been imported (the network imports them all), the package attribute is the *module*, as
in ``kernels/cpu/``. Import those functions from their file:
``from minialexnet.kernels.cuda.gemm import gemm``.
"""

import importlib

from minialexnet.kernels.cuda._compat import restore_row_stack

# Before any numba.cuda import: numba-cuda <= 0.30.4 needs np.row_stack, which NumPy 2.5
# removed (see _compat.py; nothing happens with a NumPy that still has it).
restore_row_stack()

_WHERE = {
    "im2col": "im2col",
    "col2im": "im2col",
    "lrn_forward": "lrn",
    "lrn_backward": "lrn",
    "maxpool_forward": "maxpool",
    "maxpool_backward": "maxpool",
    "gemm": "gemm",
    "GemmPlan": "gemm",
    "to_image_major": "layout",
    "to_channel_major": "layout",
    "add_bias": "bias",
    "bias_grad": "bias",
    "relu_forward": "relu",
    "relu_backward": "relu",
    "tanh_forward": "tanh",
    "tanh_backward": "tanh",
    "dropout_forward": "dropout",
    "dropout_backward": "dropout",
    "keep_mask": "dropout",
    "softmax_cross_entropy_forward": "softmax_cross_entropy",
    "softmax_cross_entropy_backward": "softmax_cross_entropy",
    "sgd_update": "sgd",
    "mark_divergence": "divergence",
    "place_columns": "columns",
    "add_columns": "columns",
}
__all__ = [*_WHERE, "is_available", "require_cuda"]


def is_available() -> bool:
    """True when numba.cuda can run kernels here: a usable GPU, or the CUDA simulator.

    Asked lazily (importing numba.cuda and probing the driver only on the first call), and
    never raises: no numba-cuda, no driver or no device all answer False.
    """
    try:
        from numba import cuda

        return bool(cuda.is_available())
    except Exception:  # noqa: BLE001 - any failure to load CUDA means "not available"
        return False


def require_cuda(who: str = "the CUDA backend") -> None:
    """Raise ``RuntimeError`` with what to do when no GPU (or simulator) is usable."""
    if not is_available():
        raise RuntimeError(
            f"{who} needs an NVIDIA GPU with a working CUDA driver and numba-cuda "
            f"(pip install 'minialexnet[cuda]'); none was found. Use the CPU backend instead, "
            f"or set NUMBA_ENABLE_CUDASIM=1 before starting Python to run the (very slow) "
            f"CUDA simulator on tiny inputs."
        )


def __getattr__(name):  # import each kernel file on first use
    if name in _WHERE:
        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
