"""The cuBLAS GEMM plan (``minialexnet/kernels/cuda/cublas.py``) with the library absent.

cuBLAS is column-major and our arrays are row-major, so ``CublasGemmPlan`` asks cuBLAS for
``C^T = op(B)^T op(A)^T`` with swapped operands and flags. Whether that mapping is right does
not need a GPU: a stand-in for ``nvmath.bindings.cublas`` records the call, and ``run_sgemm``
below executes it as the cuBLAS documentation defines ``cublasSgemmStridedBatched`` -- on host
memory, at the addresses it was given -- and the result must be NumPy's ``op(a) @ op(b)``.
The real library is used only by the engines on a GPU (``benchmarks/gpu_check.py`` checks it
there); under the simulator it is never chosen.
"""

from __future__ import annotations

import ctypes
from types import SimpleNamespace

import numpy as np
import pytest
from helpers import run_python

pytest.importorskip("numba_cuda", reason="numba-cuda is not installed")

FLOAT = ctypes.sizeof(ctypes.c_float)


def column_major(address: int, rows: int, cols: int, ld: int) -> np.ndarray:
    """The column-major ``rows x cols`` float32 matrix at ``address`` with leading dimension
    ``ld`` (element (i, j) at ``address + 4 (i + j ld)``), as a writable NumPy view."""
    flat = np.ctypeslib.as_array(
        ctypes.cast(address, ctypes.POINTER(ctypes.c_float)), shape=(ld * (cols - 1) + rows,)
    )
    return np.lib.stride_tricks.as_strided(flat, (rows, cols), (FLOAT, FLOAT * ld))


def scalar(address: int) -> float:
    return float(ctypes.cast(address, ctypes.POINTER(ctypes.c_float))[0])


def run_sgemm(
    transa,
    transb,
    m,
    n,
    k,
    alpha,
    a,
    lda,
    stride_a,
    b,
    ldb,
    stride_b,
    beta,
    c,
    ldc,
    stride_c,
    batch,
) -> None:
    """``cublasSgemmStridedBatched`` by its definition: for every g,
    ``C_g = alpha op(A_g) op(B_g) + beta C_g`` with C_g m x n, op(A_g) m x k, op(B_g) k x n,
    column-major, A_g at ``a + 4 g stride_a`` (T: A_g stored k x m), likewise B and C; C is
    not read when beta is 0."""
    for g in range(batch):
        a_g = column_major(a + FLOAT * g * stride_a, *((m, k) if transa == 0 else (k, m)), lda)
        b_g = column_major(b + FLOAT * g * stride_b, *((k, n) if transb == 0 else (n, k)), ldb)
        c_g = column_major(c + FLOAT * g * stride_c, m, n, ldc)
        op_a = a_g if transa == 0 else a_g.T
        op_b = b_g if transb == 0 else b_g.T
        assert lda >= a_g.shape[0] and ldb >= b_g.shape[0] and ldc >= m
        product = scalar(alpha) * (op_a @ op_b)
        # cuBLAS does not read C when beta == 0 (C may hold anything, NaN included).
        c_g[...] = product if scalar(beta) == 0 else product + scalar(beta) * c_g


class FakeCublas:
    """Stands in for ``nvmath.bindings.cublas``: records every call, runs SGEMMs on the host."""

    Math = SimpleNamespace(DEFAULT_MATH=0, TF32_TENSOR_OP_MATH=3)

    def __init__(self) -> None:
        self.calls = []

    def get_version(self, handle):
        return 120000

    def create(self):
        self.calls.append(("create",))
        return 1234

    def set_math_mode(self, handle, mode):
        self.calls.append(("set_math_mode", handle, mode))

    def set_stream(self, handle, stream):
        self.calls.append(("set_stream", handle, stream))

    def sgemm_strided_batched(self, handle, *args):
        self.calls.append(("sgemm_strided_batched", handle, *args))
        run_sgemm(*args)


class HostDeviceArray:
    """A NumPy array dressed as a numba.cuda device array on GPU 0 (its host address stands
    for the device pointer), enough for ``check_device_array`` and ``CublasGemmPlan``."""

    __cuda_ndarray__ = True

    def __init__(self, host: np.ndarray) -> None:
        self.host = host
        self.shape, self.dtype, self.ndim, self.size = host.shape, host.dtype, host.ndim, host.size
        self.gpu_data = SimpleNamespace(context=SimpleNamespace(device=SimpleNamespace(id=0)))

    @property
    def __cuda_array_interface__(self):
        return {
            "data": (self.host.ctypes.data, False),
            "shape": self.shape,
            "typestr": self.dtype.str,
            "strides": None,
            "version": 3,
        }

    def is_c_contiguous(self) -> bool:
        return self.host.flags.c_contiguous


def operands(a_shape, b_shape, seed):
    rng = np.random.default_rng(seed)
    return (
        rng.standard_normal(a_shape).astype(np.float32),
        rng.standard_normal(b_shape).astype(np.float32),
    )


def op(x, transposed):
    return np.swapaxes(x, -1, -2) if transposed else x


# Each orientation the layers use (gpu/layers.py), and the fourth for completeness; 2-D
# (fully connected) and batched (a grouped convolution's groups, §3.2); odd sizes.
CASES = [
    ((5, 7), (7, 3), False, False),
    ((7, 5), (7, 3), True, False),
    ((5, 7), (3, 7), False, True),
    ((7, 5), (3, 7), True, True),
    ((2, 4, 6), (2, 6, 9), False, False),
    ((2, 6, 4), (2, 6, 9), True, False),
    ((2, 4, 6), (2, 9, 6), False, True),
]


@pytest.mark.parametrize("a_shape, b_shape, trans_a, trans_b", CASES)
def test_the_column_major_call_computes_the_row_major_product(a_shape, b_shape, trans_a, trans_b):
    from minialexnet.kernels.cuda.cublas import CublasGemmPlan

    a, b = operands(a_shape, b_shape, seed=len(a_shape) + 2 * trans_a + trans_b)
    plan = CublasGemmPlan(a_shape, b_shape, trans_a, trans_b, library=FakeCublas())
    c = np.full(plan.out_shape, np.nan, dtype=np.float32)  # beta = 0 must ignore it
    run_sgemm(*plan.arguments(a.ctypes.data, b.ctypes.data, c.ctypes.data))
    want = op(a, trans_a) @ op(b, trans_b)
    assert c.shape == want.shape
    np.testing.assert_allclose(c, want, rtol=1e-5, atol=1e-5)
    assert plan.flops == 2 * want.size * (a_shape[-2] if trans_a else a_shape[-1])


def test_one_handle_per_stream_bound_to_it_with_tf32_off():
    from minialexnet.kernels.cuda import cublas

    library = FakeCublas()
    cublas._handles.clear()
    a, b = operands((3, 4), (5, 4), seed=1)
    c = np.zeros((3, 5), dtype=np.float32)
    plan = cublas.CublasGemmPlan(a.shape, b.shape, trans_b=True, library=library)
    stream = type("Stream", (), {"__int__": lambda self: 77})()
    for _ in range(2):
        plan(HostDeviceArray(a), HostDeviceArray(b), HostDeviceArray(c), stream=stream)
    np.testing.assert_allclose(c, a @ b.T, rtol=1e-5, atol=1e-5)
    names = [call[0] for call in library.calls]
    assert names == [
        "create",
        "set_math_mode",
        "set_stream",
        "sgemm_strided_batched",
        "sgemm_strided_batched",
    ]
    assert library.calls[1] == ("set_math_mode", 1234, FakeCublas.Math.DEFAULT_MATH)
    assert library.calls[2] == ("set_stream", 1234, 77)
    plan(HostDeviceArray(a), HostDeviceArray(b), HostDeviceArray(c))  # default stream
    assert [call[0] for call in library.calls[5:]] == [
        "create",
        "set_math_mode",
        "set_stream",
        "sgemm_strided_batched",
    ]
    assert library.calls[7] == ("set_stream", 1234, 0)
    assert set(cublas._handles) == {(0, 77), (0, 0)}
    with pytest.raises(ValueError, match="shape"):
        plan(HostDeviceArray(b), HostDeviceArray(a), HostDeviceArray(c))
    cublas._handles.clear()


def test_mismatched_shapes_are_refused():
    from minialexnet.kernels.cuda.cublas import CublasGemmPlan

    with pytest.raises(ValueError, match="do not multiply"):
        CublasGemmPlan((3, 4), (5, 6), library=FakeCublas())


def test_choose_gemm(monkeypatch):
    from minialexnet.kernels.cuda import cublas

    monkeypatch.setattr(cublas, "SIMULATOR", False)
    monkeypatch.setattr(cublas, "load_cublas", lambda: None)  # nvmath-python absent
    assert cublas.choose_gemm("numba") == "numba"
    assert cublas.choose_gemm("auto") == "numba"
    with pytest.raises(RuntimeError, match=r"not installed .*minialexnet\[cuda12\].*--gemm numba"):
        cublas.choose_gemm("cublas")
    with pytest.raises(ValueError, match="gemm must be one of"):
        cublas.choose_gemm("cudnn")
    monkeypatch.setattr(cublas, "is_available", lambda: False)  # installed, no GPU
    assert cublas.choose_gemm("auto", library=FakeCublas()) == "numba"
    with pytest.raises(RuntimeError, match="no usable NVIDIA GPU"):
        cublas.choose_gemm("cublas", library=FakeCublas())
    monkeypatch.setattr(cublas, "is_available", lambda: True)  # installed, a GPU
    assert cublas.choose_gemm("auto", library=FakeCublas()) == "cublas"
    assert cublas.gemm_plan_class("cublas") is cublas.CublasGemmPlan
    assert cublas.gemm_plan_class("numba") is cublas.GemmPlan


def test_the_simulator_never_chooses_cublas():
    """Even with a cuBLAS binding at hand, under the simulator 'auto' is the numba kernel and
    'cublas' is refused; the engines build numba plans."""
    code = (
        "import numpy as np\n"
        "from types import SimpleNamespace\n"
        "from minialexnet.kernels.cuda import cublas\n"
        "from minialexnet.gpu import CudaAlexNet\n"
        "from minialexnet.model import AlexNet\n"
        "fake = SimpleNamespace(get_version=lambda h: 1)\n"
        "print(cublas.choose_gemm('auto', library=fake))\n"
        "try:\n"
        "    cublas.choose_gemm('cublas', library=fake)\n"
        "except RuntimeError as err:\n"
        "    print('refused:', err)\n"
        "net = CudaAlexNet(AlexNet(4, 'tiny', rng=np.random.default_rng(0)), batch_size=1)\n"
        "plans = net.layers['fc8'].gemm_plans(1)\n"
        "print(net.gemm, sorted(type(p).__name__ for p in plans.values()))\n"
        "try:\n"
        "    CudaAlexNet(AlexNet(4, 'tiny', rng=np.random.default_rng(0)), gemm='cublas')\n"
        "except RuntimeError as err:\n"
        "    print('engine refused:', err)\n"
    )
    out = run_python(code, set_env={"NUMBA_ENABLE_CUDASIM": "1"}).splitlines()
    assert out[0] == "numba"
    assert out[1].startswith("refused:") and "simulator" in out[1]
    assert out[2] == "numba ['GemmPlan', 'GemmPlan', 'GemmPlan']"
    assert out[3].startswith("engine refused:") and "--gemm numba" in out[3]


def test_train_config_and_the_command_lines_take_gemm():
    from minialexnet.training import TrainConfig

    assert TrainConfig().gemm == "auto"
    assert TrainConfig(gemm="numba").gemm == "numba"
    with pytest.raises(ValueError, match="gemm must be one of"):
        TrainConfig(gemm="cudnn")
    out = run_python(
        "from minialexnet.train import build_parser\n"
        "print(build_parser().parse_args(['--gemm', 'numba']).gemm)\n"
        "from minialexnet.evaluate import build_parser as ev\n"
        "print(ev().parse_args(['x.npz', '--gemm', 'cublas']).gemm)\n"
    )
    assert out.split() == ["numba", "cublas"]
