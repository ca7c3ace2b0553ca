"""The two numba-cuda workarounds of ``minialexnet/kernels/cuda/_compat.py``, in fresh processes.

- NumPy 2.5 removed ``np.row_stack``, which numba-cuda <= 0.30.4 registers an overload for when
  it compiles its first kernel. This machine has an older NumPy, so the removal is simulated by
  deleting the attribute in the child before anything else is imported.
- The CUDA simulator's ``FakeCUDAShared.array`` creates a block's shared array on first use
  without a lock; two threads could get two arrays. The race is made certain by slowing down
  ``np.empty`` (the step between the look-up and the store), first on the simulator's own method
  (to show the check would catch it), then on the fixed one.
"""

from __future__ import annotations

import importlib.util

import pytest
from helpers import run_python

needs_numba_cuda = pytest.mark.skipif(
    importlib.util.find_spec("numba_cuda") is None, reason="numba-cuda is not installed"
)


def test_restore_row_stack_only_when_missing():
    from types import SimpleNamespace

    import numpy as np

    from minialexnet.kernels.cuda._compat import restore_row_stack

    present = SimpleNamespace(row_stack="numpy's own")
    assert restore_row_stack(present) is False and present.row_stack == "numpy's own"
    missing = SimpleNamespace()
    assert restore_row_stack(missing) is True
    parts = (np.array([1.0, 2.0]), np.array([[3.0, 4.0]]))
    np.testing.assert_array_equal(missing.row_stack(parts), np.vstack(parts))


WITHOUT_ROW_STACK = (
    "import numpy as np\n"
    "del np.row_stack            # NumPy 2.5\n"
    "{before}\n"
    "from numba import cuda\n"
    "try:\n"
    "    import numba.cuda.np.arrayobj   # what numba-cuda imports for its first kernel\n"
    "    print('imported')\n"
    "except AttributeError as err:\n"
    "    print('failed:', err)\n"
    "print('has row_stack', hasattr(np, 'row_stack'))\n"
)


@needs_numba_cuda
def test_numba_cuda_needs_row_stack_and_the_shim_restores_it():
    """Without the shim numba-cuda's array support fails on a NumPy without ``row_stack``;
    importing ``minialexnet.kernels.cuda`` first (as every GPU module does) makes it import."""
    bare = run_python(WITHOUT_ROW_STACK.format(before=""), unset_env=("NUMBA_ENABLE_CUDASIM",))
    if "imported" in bare:
        pytest.skip("this numba-cuda no longer needs np.row_stack: the shim can go")
    assert "failed:" in bare and "row_stack" in bare
    shimmed = run_python(
        WITHOUT_ROW_STACK.format(before="import minialexnet.gpu"),
        unset_env=("NUMBA_ENABLE_CUDASIM",),
    )
    assert "imported" in shimmed and "has row_stack True" in shimmed


@needs_numba_cuda
def test_a_kernel_runs_in_the_simulator_on_a_numpy_without_row_stack():
    code = (
        "import numpy as np\n"
        "del np.row_stack\n"
        "from minialexnet.kernels.cuda.relu import relu_forward\n"
        "from numba import cuda\n"
        "x = cuda.to_device(np.array([-1.0, 2.0], dtype=np.float32))\n"
        "print(relu_forward(x).copy_to_host().tolist())\n"
    )
    assert run_python(code, set_env={"NUMBA_ENABLE_CUDASIM": "1"}).strip() == "[0.0, 2.0]"


SHARED_RACE = """
import sys, threading, time
import numpy as np
from numba.cuda.simulator.kernelapi import FakeCUDAShared

slow_empty = np.empty
def empty(*args, **kwargs):          # widen the window between the look-up and the store
    time.sleep(0.02)
    return slow_empty(*args, **kwargs)

def arrays_seen_by_eight_threads():
    shared, seen = FakeCUDAShared(0), []
    start = threading.Barrier(8)
    def thread():
        start.wait()
        seen.append(id(shared.array(4, np.float32)))   # one source line, as in a kernel
    threads = [threading.Thread(target=thread) for _ in range(8)]
    for t in threads: t.start()
    for t in threads: t.join()
    return len(set(seen))

np.empty = empty
print('original', arrays_seen_by_eight_threads())
from minialexnet.kernels.cuda import _launch    # applies the fix under the simulator
print('fixed', arrays_seen_by_eight_threads())
from minialexnet.kernels.cuda._compat import fix_simulator_shared_arrays
print('again', fix_simulator_shared_arrays())
"""


@needs_numba_cuda
def test_every_thread_of_a_simulated_block_gets_the_same_shared_array():
    out = run_python(SHARED_RACE, set_env={"NUMBA_ENABLE_CUDASIM": "1"}).split("\n")
    original = int(out[0].split()[1])
    if original == 1:
        pytest.skip("this numba-cuda's simulator no longer races: the fix can go")
    assert out[1:3] == ["fixed 1", "again False"]


@needs_numba_cuda
def test_the_fixed_simulator_keeps_one_array_per_source_line():
    """Two shared arrays on two lines stay two arrays (a GEMM's A and B slabs)."""
    code = (
        "import numpy as np\n"
        "from numba import cuda\n"
        "import minialexnet.kernels.cuda._launch\n"
        "@cuda.jit\n"
        "def k(out):\n"
        "    a = cuda.shared.array(2, np.float32)\n"
        "    b = cuda.shared.array(2, np.float32)\n"
        "    i = cuda.threadIdx.x\n"
        "    a[i] = np.float32(1.0)\n"
        "    b[i] = np.float32(10.0)\n"
        "    cuda.syncthreads()\n"
        "    out[i] = a[1 - i] + b[1 - i]\n"
        "out = cuda.device_array(2, np.float32)\n"
        "k[1, 2](out)\n"
        "print(out.copy_to_host().tolist())\n"
    )
    assert run_python(code, set_env={"NUMBA_ENABLE_CUDASIM": "1"}).strip() == "[11.0, 11.0]"
