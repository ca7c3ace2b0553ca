"""Where the CUDA tests run: on a GPU in this process, else under the CUDA simulator in a child.

Numba chooses between the real CUDA driver and its simulator once, when ``numba.cuda`` is
first imported, from ``NUMBA_ENABLE_CUDASIM``. In a normal ``pytest`` run other test
modules import Numba first (the CPU kernels must stay compiled, not simulated), so this
process cannot switch to the simulator any more. Each CUDA test module therefore:

- runs its tests here when this process can execute CUDA kernels (a GPU is present, or the
  whole run was started with ``NUMBA_ENABLE_CUDASIM=1``);
- otherwise does not collect them here and runs the same file again in a child ``pytest``
  with ``NUMBA_ENABLE_CUDASIM=1``, from its ``test_under_cuda_simulator`` test, which passes
  or fails with the child (and skips, with the reason, where numba-cuda is missing).

Usage in a test module::

    from cuda_sim import cuda_gate, drop_device_tests, run_in_simulator
    _gate = cuda_gate("test_under_cuda_simulator", host_tests=("test_needs_no_gpu",))

    def test_under_cuda_simulator():
        run_in_simulator(__file__)

    ...                                       # device tests and host tests

    drop_device_tests(globals(), keep=("test_under_cuda_simulator", "test_needs_no_gpu"))
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from dataclasses import dataclass

import pytest

CHILD_TIMEOUT_S = 900
# Set in the child's environment, so that tests which need no CUDA run once, in the parent.
CHILD_FLAG = "MINIALEXNET_CUDA_SIM_CHILD"
IN_CHILD = os.environ.get(CHILD_FLAG) == "1"


@dataclass(frozen=True)
class CudaMode:
    """``installed``: numba-cuda is importable; ``here``: this process runs CUDA kernels
    (``simulator`` tells which kind); ``delegate``: run the file in a simulator child;
    ``reason``: why, for skip messages."""

    installed: bool
    here: bool
    simulator: bool
    delegate: bool
    reason: str


def _probe() -> CudaMode:
    if importlib.util.find_spec("numba_cuda") is None:
        return CudaMode(
            False,
            False,
            False,
            False,
            "numba-cuda is not installed (pip install 'minialexnet[cuda]')",
        )
    import numba

    if numba.config.ENABLE_CUDASIM:
        return CudaMode(True, True, True, False, "running under the CUDA simulator")
    try:
        from numba import cuda

        has_gpu = bool(cuda.is_available())
    except Exception:  # noqa: BLE001 - a broken driver counts as no GPU
        has_gpu = False
    if has_gpu:
        return CudaMode(True, True, False, False, "running on the GPU")
    return CudaMode(
        True,
        False,
        False,
        True,
        "no GPU in this process: these tests run in a "
        "child process under the CUDA simulator "
        "(test_under_cuda_simulator)",
    )


CUDA = _probe()

if CUDA.simulator:
    # The simulator runs every GPU thread as a Python thread; switching between them more
    # often makes the many short barriers (syncthreads) 2-5x faster.
    sys.setswitchinterval(1e-4)


def cuda_gate(delegate_test: str, host_tests: tuple = ()):
    """An autouse fixture for the tests that stay in every process: ``delegate_test`` runs
    only where a simulator child is needed, ``host_tests`` (which need numba-cuda but no GPU)
    only outside that child, so each runs once."""

    @pytest.fixture(autouse=True)
    def _gate(request):
        name = request.node.originalname
        if name == delegate_test and not CUDA.delegate:
            pytest.skip(
                "the CUDA tests of this file run directly in this process"
                if CUDA.here
                else CUDA.reason
            )
        if name in host_tests:
            if IN_CHILD:
                pytest.skip("runs in the parent process")
            if not CUDA.installed:
                pytest.skip(CUDA.reason)

    return _gate


def drop_device_tests(namespace: dict, keep: tuple) -> None:
    """Where this process cannot run CUDA kernels, remove a module's device tests (every
    ``test_*`` / ``Test*`` not in ``keep``) before pytest collects them: the simulator child
    started by the delegate test runs them instead, and the parent's report stays short.
    Call it at the end of the module with ``globals()``."""
    if CUDA.here:
        return
    for name in [n for n in namespace if n.startswith(("test_", "Test")) and n not in keep]:
        del namespace[name]


def run_in_simulator(test_file: str) -> None:
    """Run ``test_file`` in a child pytest with the CUDA simulator; fail with its output if
    it fails, skip if it tested nothing."""
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", **{CHILD_FLAG: "1"})
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfEs", test_file]
    try:
        done = subprocess.run(
            command,
            env=env,
            capture_output=True,
            text=True,
            timeout=CHILD_TIMEOUT_S,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(test_file))),
        )
    except subprocess.TimeoutExpired as err:
        pytest.fail(
            f"the simulated CUDA tests of {test_file} ran past {CHILD_TIMEOUT_S} s:\n"
            f"{(err.stdout or '')[-6000:]}"
        )
    output = done.stdout + done.stderr
    if done.returncode != 0:
        pytest.fail(
            f"CUDA simulator run of {os.path.basename(test_file)} failed "
            f"(exit {done.returncode}):\n{output[-12000:]}",
            pytrace=False,
        )
    if " passed" not in output:
        pytest.skip(f"the simulator run tested nothing:\n{output[-2000:]}")
    print(output.strip().splitlines()[-1])  # e.g. "25 passed in 80.1s" (with -s / -rA)
