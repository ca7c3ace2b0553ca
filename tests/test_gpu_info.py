"""``python -m minialexnet.gpu_info``: a report that answers on any machine, in fresh interpreters.

This machine may or may not have a GPU: without one the report must say "no GPU" and exit 1;
under the simulator it must say so; the formatting of a machine with GPUs is checked on a
hand-written report (the numbers of an H200 as numba-cuda would give them).
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from helpers import REPO

pytest.importorskip("numba_cuda", reason="numba-cuda is not installed")


def gpu_info(**env_changes):
    import os

    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    env.update(env_changes)
    return subprocess.run(
        [sys.executable, "-m", "minialexnet.gpu_info"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_without_a_gpu_it_says_no_gpu_and_exits_1():
    done = gpu_info()
    assert "Traceback" not in done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("versions: minialexnet ") and "numba-cuda" in lines[0]
    assert lines[1].startswith("NVIDIA driver: ") and lines[2].startswith("CUDA runtime: ")
    assert lines[-1].startswith("GEMM (gemm='auto'): ")
    if done.returncode == 0:
        pytest.skip("this machine has a GPU: " + "; ".join(lines[3:]))
    assert done.returncode == 1
    assert any(line.startswith("GPU: no GPU") and "minialexnet[cuda12]" in line for line in lines)
    assert lines[-1].startswith("GEMM (gemm='auto'): numba -- the hand-written numba SGEMM")


def test_under_the_simulator_it_says_so():
    done = gpu_info(NUMBA_ENABLE_CUDASIM="1")
    assert done.returncode == 1, done.stderr
    assert "NVIDIA driver: none (the CUDA simulator)" in done.stdout
    assert "GPU: none -- this is the CUDA simulator" in done.stdout
    assert "cuda:0: the CUDA simulator, compute capability" in done.stdout
    assert "cuBLAS is not used: the CUDA simulator" in done.stdout


def test_a_machine_with_gpus_is_reported_line_by_line():
    from minialexnet.gpu_info import format_report

    info = {
        "versions": {"minialexnet": "0.1.0", "numpy": "2.4.6"},
        "simulator": False,
        "gpu": True,
        "driver": "12.8",
        "runtime": "12.9",
        "devices": [
            {
                "index": 0,
                "name": "NVIDIA H200",
                "compute_capability": "9.0",
                "free_gib": 139.25,
                "total_gib": 139.8,
            }
        ],
        "gemm": ("cublas", "cuBLAS through nvmath-python, float32 (no TF32)"),
    }
    assert format_report(info).splitlines() == [
        "versions: minialexnet 0.1.0, numpy 2.4.6",
        "NVIDIA driver: 12.8",
        "CUDA runtime: 12.9",
        "cuda:0: NVIDIA H200, compute capability 9.0, 139.2 of 139.8 GiB free",
        "GEMM (gemm='auto'): cublas -- cuBLAS through nvmath-python, float32 (no TF32)",
    ]
