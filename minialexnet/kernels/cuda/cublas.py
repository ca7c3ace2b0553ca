"""SGEMM on NVIDIA's cuBLAS, a drop-in for ``gemm.GemmPlan`` (optional: ``nvmath-python``).

``gemm.py`` is the readable SGEMM, and the one the tests, the simulator and notebook 10 run.
On a real GPU cuBLAS is about twice as fast (hand-tuned kernels per architecture), so the
engines use it when it is installed (the ``cuda12`` / ``cuda13`` extras bring it): ``gemm="auto"``
(the default) picks cuBLAS where it is available and never under the simulator,
``gemm="numba"`` keeps the hand-written kernel, ``gemm="cublas"`` insists (``choose_gemm``).

The binding is nvmath-python's low level one, ``nvmath.bindings.cublas``: plain functions over
raw device pointers, which numba.cuda arrays expose as ``__cuda_array_interface__["data"]``.
One handle per GPU and stream, created on first use and kept for the life of the process
(creating one costs milliseconds and allocates a workspace), bound to that stream, so
cuBLAS's kernels queue behind and before our own. A handle per stream, not per GPU: the two
towers of §3.2 on one GPU call from two host threads at once, and a shared handle's stream
would be whichever thread set it last.

**No TF32.** cuBLAS SGEMM multiplies in full float32 (compute type 32F) unless told otherwise;
the handle's math mode is set to ``DEFAULT_MATH`` explicitly, so a library default or an
earlier user of the handle cannot turn on TF32 tensor cores (10 mantissa bits: a different
network from the paper's float32 one, and from the CPU reference).

**Row-major arrays, column-major cuBLAS.** cuBLAS follows Fortran: a matrix is stored column
by column. Our arrays are C-contiguous (row by row). A row-major ``r x c`` matrix ``X`` with
rows of length ``ld = c`` is, byte for byte, the column-major ``c x r`` matrix ``X^T`` with
leading dimension ``ld``. So instead of ``C = op(A) @ op(B)`` (row-major, ``M x N``) we ask
cuBLAS for its transpose, ``C^T = op(B)^T @ op(A)^T`` (``N x M``, column-major), which *is*
``C`` in row-major memory. No copy and no transposition kernel: the operands swap places,
``m`` and ``n`` swap, and each operand's ``op`` flag says whether cuBLAS sees the stored
matrix or its transpose:

================  =============================  =====================  ====================
row-major call    stored (row-major)             cuBLAS sees (col-maj)  flag, leading dim
================  =============================  =====================  ====================
first: B          (K, N), or (N, K) if trans_b   B^T (N x K) / (K x N)  N, ld N / T, ld K
second: A         (M, K), or (K, M) if trans_a   A^T (K x M) / (M x K)  N, ld K / T, ld M
result: C         (M, N)                         C^T (N x M)            ldc = N
================  =============================  =====================  ====================

i.e. ``sgemm_strided_batched(handle, op_b, op_a, N, M, K, 1, B, ldb, sB, A, lda, sA, 0, C,
N, M*N, batch)``, with ``ldb`` / ``lda`` the length of a stored row of B / A. Batches (the
groups of a convolution, §3.2) are consecutive matrices: strides ``M*K``, ``K*N``, ``M*N``.

``CublasGemmPlan.arguments`` computes this mapping without touching a GPU; the tests check it
by running the recorded call on host memory with NumPy, for every transpose combination,
with the library absent.
"""

from __future__ import annotations

import threading

import numpy as np

from minialexnet.kernels.cuda import is_available
from minialexnet.kernels.cuda._launch import SIMULATOR, check_device_array
from minialexnet.kernels.cuda.gemm import GemmPlan, _dims

GEMM_CHOICES = ("auto", "numba", "cublas")
OP_N, OP_T = 0, 1  # cublasOperation_t: CUBLAS_OP_N, CUBLAS_OP_T

_handles: dict = {}  # (GPU id, stream) -> cuBLAS handle (kept for the process)
_handles_lock = threading.Lock()


def load_cublas():
    """``nvmath.bindings.cublas``, or None when nvmath-python (or its cuBLAS library) is not
    installed. Never raises; needs no GPU (asking the library's version loads libcublas)."""
    try:
        from nvmath.bindings import cublas

        cublas.get_property(0)  # MAJOR_VERSION: fails if libcublas cannot be loaded
        return cublas
    except Exception:  # noqa: BLE001 - a missing or broken install means "not available"
        return None


def cublas_unavailable_reason(library=None) -> str | None:
    """Why cuBLAS cannot run the GEMMs here (None when it can): the simulator, no
    nvmath-python, or no GPU. ``library``: the binding (default ``load_cublas()``)."""
    if SIMULATOR:
        return "the CUDA simulator runs only numba kernels (cuBLAS needs a real GPU)"
    library = load_cublas() if library is None else library
    if library is None:
        return (
            "nvmath-python with the cuBLAS library is not installed (pip install "
            "'minialexnet[cuda12]', or [cuda13] with a CUDA 13 driver)"
        )
    if not is_available():
        return "no usable NVIDIA GPU"
    return None


def choose_gemm(requested: str = "auto", library=None) -> str:
    """``"numba"`` or ``"cublas"``: what ``requested`` (``"auto"``, ``"numba"``, ``"cublas"``)
    means here. ``"auto"`` is cuBLAS when it can run, else the numba kernel; ``"cublas"``
    where it cannot raises ``RuntimeError`` saying why and what to do."""
    if requested not in GEMM_CHOICES:
        raise ValueError(f"gemm must be one of {GEMM_CHOICES}, got {requested!r}")
    if requested == "numba":
        return "numba"
    reason = cublas_unavailable_reason(library)
    if reason is None:
        return "cublas"
    if requested == "cublas":
        raise RuntimeError(
            f"gemm='cublas' cannot run here: {reason}. Use gemm='numba' "
            f"(--gemm numba), the hand-written SGEMM, or 'auto'"
        )
    return "numba"


def handle_for(device_id: int, stream: int, library):
    """The cuBLAS handle of GPU ``device_id`` and stream ``stream`` (a ``cudaStream_t`` as an
    integer), created on first use with that GPU current, in ``DEFAULT_MATH`` mode: float32
    products, no TF32."""
    key = (device_id, stream)
    with _handles_lock:
        if key not in _handles:
            handle = library.create()
            library.set_math_mode(handle, int(library.Math.DEFAULT_MATH))
            library.set_stream(handle, stream)
            _handles[key] = handle
        return _handles[key]


def stream_pointer(stream) -> int:
    """The ``cudaStream_t`` of a numba.cuda stream as an integer (0: the default stream)."""
    if stream is None or (isinstance(stream, int) and stream == 0):
        return 0
    return int(stream)  # numba-cuda's Stream converts to its handle


def device_pointer(array) -> int:
    """The device address of a numba.cuda array's first element."""
    return int(array.__cuda_array_interface__["data"][0])


class CublasGemmPlan:
    """``c[g] = op(a[g]) @ op(b[g])`` by cuBLAS; the interface of ``gemm.GemmPlan`` (same
    shapes, ``out_shape``, ``flops``, ``plan(a, b, c, stream)``), so a layer can hold either.

    ``library``: the binding (default ``load_cublas()``); tests pass a stand-in that records.
    """

    def __init__(
        self, a_shape, b_shape, trans_a: bool = False, trans_b: bool = False, library=None
    ) -> None:
        self.a_shape, self.b_shape = tuple(a_shape), tuple(b_shape)
        self.trans_a, self.trans_b = bool(trans_a), bool(trans_b)
        ba, m, ka = _dims(self.a_shape, self.trans_a, "a")
        bb, kb, n = _dims(self.b_shape, self.trans_b, "b")
        if ka != kb or len(self.a_shape) != len(self.b_shape) or ba != bb:
            raise ValueError(
                f"gemm: op(a) of {self.a_shape} (trans_a={self.trans_a}) and "
                f"op(b) of {self.b_shape} (trans_b={self.trans_b}) do not "
                f"multiply: inner dimensions {ka} and {kb}, batches {ba} and {bb}"
            )
        self.batch, self.m, self.n, self.k = ba, m, n, ka
        self.out_shape = (m, n) if len(self.a_shape) == 2 else (ba, m, n)
        self.library = load_cublas() if library is None else library
        if self.library is None:
            raise RuntimeError(cublas_unavailable_reason(None))
        self._one = np.ones(1, dtype=np.float32)  # alpha, beta: host scalars
        self._zero = np.zeros(1, dtype=np.float32)

    @property
    def flops(self) -> int:
        return 2 * self.batch * self.m * self.n * self.k

    def arguments(self, a_ptr: int, b_ptr: int, c_ptr: int) -> tuple:
        """The arguments of ``sgemm_strided_batched`` after the handle (module docstring)."""
        m, n, k = self.m, self.n, self.k
        lda, ldb = self.a_shape[-1], self.b_shape[-1]  # stored row lengths
        return (
            OP_T if self.trans_b else OP_N,
            OP_T if self.trans_a else OP_N,
            n,
            m,
            k,
            self._one.ctypes.data,
            b_ptr,
            ldb,
            k * n,
            a_ptr,
            lda,
            m * k,
            self._zero.ctypes.data,
            c_ptr,
            n,
            m * n,
            self.batch,
        )

    def __call__(self, a, b, c, stream=0):
        """Run on float32 device arrays of the planned shapes, on ``stream``; returns ``c``."""
        check_device_array(a, "gemm", "a", shape=self.a_shape)
        check_device_array(b, "gemm", "b", shape=self.b_shape)
        check_device_array(c, "gemm", "c", shape=self.out_shape)
        handle = handle_for(_device_id(c), stream_pointer(stream), self.library)
        self.library.sgemm_strided_batched(
            handle, *self.arguments(device_pointer(a), device_pointer(b), device_pointer(c))
        )
        return c

    def __repr__(self) -> str:
        return (
            f"CublasGemmPlan(batch={self.batch}, op(a)={self.m}x{self.k}, "
            f"op(b)={self.k}x{self.n}, trans_a={self.trans_a}, trans_b={self.trans_b})"
        )


def _device_id(array) -> int:
    return int(array.gpu_data.context.device.id)


def gemm_plan_class(gemm: str):
    """The plan class of a resolved choice (``choose_gemm``): ``GemmPlan`` or
    ``CublasGemmPlan``."""
    if gemm == "cublas":
        return CublasGemmPlan
    if gemm == "numba":
        return GemmPlan
    raise ValueError(f"gemm must be 'numba' or 'cublas' once chosen, got {gemm!r}")
