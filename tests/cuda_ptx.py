"""Compile every CUDA kernel to PTX for sm_90 without a GPU, and list float64 instructions.

The CUDA simulator runs kernels as plain Python: it does not type them, so a kernel can pass
every simulated test and still fail to compile for a real GPU, or silently compute in float64
(a ``0.5`` literal promotes float32 arithmetic to double, 64x slower on most GPUs). This
script compiles each kernel with NVVM, the compiler numba-cuda uses on a real machine, at
the argument types the wrappers pass, and reports the PTX lines that touch ``.f64``.

Run as ``python tests/cuda_ptx.py`` (never with NUMBA_ENABLE_CUDASIM=1). Prints one JSON
object ``{kernel: {"error": str | null, "f64": [lines], "div64": [lines]}}`` ("div64": the
64-bit integer divisions and remainders, a long subroutine each on a GPU); exits with
status 3 and a reason when NVVM / libdevice is not installed (no CUDA toolkit), so the
caller can skip.

Without a driver, numba-cuda would ask it for the device's compute capability (for device
functions) and ask NVRTC for its library path; neither matters for NVVM's PTX, so both
questions are answered here with a fixed compute capability 9.0 (H100).
"""

from __future__ import annotations

import json
import os
import sys
import types

CC = (9, 0)


def _patch_for_no_driver() -> None:
    os.environ.setdefault("NUMBA_FORCE_CUDA_CC", "9.0")
    from numba.cuda import cuda_paths, dispatcher

    try:
        cuda_paths._get_nvrtc_path()
    except Exception:  # noqa: BLE001 - NVRTC missing: only its path was wanted
        cuda_paths._get_nvrtc_path = lambda: cuda_paths._env_path_tuple("absent", None)
    dispatcher.get_current_device = lambda: types.SimpleNamespace(compute_capability=CC)


def kernels_and_signatures():
    """(name, kernel, argument types) for every kernel, as the wrappers launch them."""
    from numba import types as T

    from minialexnet.kernels.cuda import (
        bias,
        columns,
        divergence,
        dropout,
        gemm,
        im2col,
        layout,
        lrn,
        maxpool,
        relu,
        sgd,
        softmax_cross_entropy,
        tanh,
    )

    f32, i64, u64 = T.float32, T.int64, T.uint64

    def a(ndim, dtype=T.float32):
        return T.Array(dtype, ndim, "C")

    sce = softmax_cross_entropy
    table = [
        ("im2col", im2col._im2col_kernel, (a(4), i64, i64, i64, i64, i64, i64, a(2))),
        ("col2im", im2col._col2im_kernel, (a(2), i64, i64, i64, i64, i64, i64, a(4))),
        ("lrn_forward", lrn._lrn_forward_kernel, (a(3), i64, f32, f32, f32, i64, a(3), a(3))),
        (
            "lrn_backward",
            lrn._lrn_backward_kernel,
            (a(3), a(3), a(3), a(3), i64, f32, f32, i64, a(3)),
        ),
        (
            "maxpool_forward",
            maxpool._maxpool_forward_kernel,
            (a(3), i64, i64, i64, i64, a(3), a(3, T.int64)),
        ),
        (
            "maxpool_backward",
            maxpool._maxpool_backward_kernel,
            (a(3), a(3, T.int64), i64, i64, i64, i64, a(3)),
        ),
        ("add_bias", bias._add_bias_kernel, (a(3), a(1))),
        ("bias_grad", bias._bias_grad_kernel, (a(3), i64, a(2))),
        ("swap_outer_axes", layout._swap_outer_axes_kernel, (a(3), a(3))),
        ("relu_forward", relu._relu_forward_kernel, (a(1), a(1))),
        ("relu_backward", relu._relu_backward_kernel, (a(1), a(1), a(1))),
        ("tanh_forward", tanh._tanh_forward_kernel, (a(1), a(1))),
        ("tanh_backward", tanh._tanh_backward_kernel, (a(1), a(1), a(1))),
        ("dropout", dropout._dropout_kernel, (a(1), u64, u64, f32, a(1))),
        ("softmax_rows", sce._row_kernel, (a(2), a(1, T.int64), a(1), a(2))),
        ("softmax_totals", sce._totals_kernel, (a(2), a(1))),
        ("softmax_gradient", sce._gradient_kernel, (a(2), a(1, T.int64), a(1), f32, a(2))),
        ("sgd", sgd._sgd_kernel, (a(1), a(1), a(1), f32, f32, f32)),
        ("sgd_unless", sgd._sgd_unless_kernel, (a(1), a(1), a(1), f32, f32, f32, a(1, T.int32))),
        ("mark_divergence", divergence._mark_kernel, (a(1), a(1, T.int32))),
        ("gemm_sum_slices", gemm._sum_slices_kernel, (a(2), a(1))),
        ("place_columns", columns._place_columns_kernel, (a(3), a(3), i64)),
        ("add_columns", columns._add_columns_kernel, (a(3), i64, a(3), T.boolean)),
    ]
    for tile in gemm.TILES:
        for trans_a in (False, True):
            for trans_b in (False, True):
                name = (
                    f"gemm_{tile.block_m}x{tile.block_n}_"
                    f"{'T' if trans_a else 'N'}{'T' if trans_b else 'N'}"
                )
                table.append(
                    (name, gemm._gemm_kernel(trans_a, trans_b, tile), (a(3), a(3), a(4), i64))
                )
    return table


def main() -> int:
    # Run as a script, Python puts tests/ first on the path: import this checkout's package.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        print("run without NUMBA_ENABLE_CUDASIM: the simulator does not compile", file=sys.stderr)
        return 2
    try:
        _patch_for_no_driver()
        from numba.cuda.cudadrv import libs, nvvm

        nvvm.NVVM()  # loads libNVVM
        if libs.get_libdevice() is None:
            raise RuntimeError("libdevice not found")
    except Exception as err:  # noqa: BLE001 - no toolkit: nothing to compile with
        print(f"NVVM / libdevice unavailable ({type(err).__name__}: {err})", file=sys.stderr)
        return 3
    from numba import cuda

    report = {}
    for name, kernel, signature in kernels_and_signatures():
        try:
            ptx, _ = cuda.compile_ptx(kernel.py_func, signature, cc=CC)
        except Exception as err:  # noqa: BLE001 - reported per kernel
            report[name] = {"error": f"{type(err).__name__}: {err}"[:3000], "f64": [], "div64": []}
            continue
        lines = [line.strip() for line in ptx.splitlines()]
        report[name] = {
            "error": None,
            "f64": [line for line in lines if ".f64" in line],
            "div64": [
                line
                for line in lines
                if line.startswith(("div.s64", "div.u64", "rem.s64", "rem.u64"))
            ],
        }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
