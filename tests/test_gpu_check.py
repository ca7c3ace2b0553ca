"""benchmarks/gpu_check.sh and its driver, checked without a GPU so that a typo does not cost a
GPU session: the whole script under the CUDA simulator on the tiny network (its numbers mean
nothing, but every section runs and the engines' logits must agree with the CPU network),
the refusal without a GPU, and the shell wrapper's plumbing.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from helpers import REPO

pytest.importorskip("numba_cuda", reason="numba-cuda is not installed")
SCRIPT = os.path.join(REPO, "benchmarks", "gpu_check.py")


def run(args, env_changes=None, timeout=900):
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    env.update(env_changes or {})
    return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def test_the_whole_check_runs_under_the_simulator(tmp_path):
    report = tmp_path / "report.txt"
    done = run([sys.executable, SCRIPT, "--simulator", "--report", str(report)])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    text = report.read_text()
    for title in ("1. versions", "3. GEMMs", "4. training step", "5. same function"):
        assert title in text, title
    assert "SIMULATOR" in text and "cuBLAS columns left out: the CUDA simulator" in text
    gemms = text.split("3. GEMMs")[1].split("4. training step")[0]
    gemm_rows = [line for line in gemms.splitlines() if " numba " in line and "e-" in line]
    assert len(gemm_rows) == 4  # --max-gemms 4 in simulator mode
    for line in gemm_rows:  # each product agrees with NumPy
        assert float(line.rsplit(" ", 1)[1]) < 1e-5, line
    engines = [
        line
        for line in text.split("5. same function")[1].splitlines()
        if line.startswith(("CudaAlexNet", "two towers"))
    ]
    assert [line.split()[0] for line in engines] == ["CudaAlexNet,", "two"]
    for line in engines:  # the logits agree with the CPU network
        assert float(line.split()[-1]) < 1e-4, line
    assert "img/s" in text.split("4. training step")[1]


def test_without_a_gpu_it_stops_after_the_versions(tmp_path):
    report = tmp_path / "report.txt"
    done = run([sys.executable, SCRIPT, "--no-torch", "--no-tests", "--report", str(report)])
    if done.returncode == 0:
        pytest.skip("this machine has a GPU")
    assert done.returncode == 2, done.stderr[-3000:]
    text = report.read_text()
    assert "1. versions" in text and "no GPU: nothing to check" in text
    assert "numba-cuda" in text


def test_the_shell_wrapper_passes_report_and_arguments_on(tmp_path):
    done = run(
        [
            "bash",
            os.path.join(REPO, "benchmarks", "gpu_check.sh"),
            str(tmp_path / "r.txt"),
            "--help",
        ],
        {"PYTHON": sys.executable},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "--simulator" in done.stdout and "--budget" in done.stdout
