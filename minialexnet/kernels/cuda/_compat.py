"""Two guarded fixes for numba-cuda in one place: NumPy's ``row_stack``, simulated shared memory.

Both are workarounds for the library, not part of AlexNet; each is applied only when it is
needed and can be removed once numba-cuda no longer needs it.

1. **NumPy 2.5 removed ``np.row_stack``** (an alias of ``np.vstack``, deprecated since 2.0).
   numba-cuda up to 0.30.4 registers an overload for it while ``numba.cuda`` is imported
   (``numba/cuda/np/arrayobj.py``: ``overload(np.row_stack)``), so the import fails with an
   ``AttributeError``. ``restore_row_stack()`` puts back a ``row_stack`` that calls
   ``np.vstack`` -- only when NumPy lacks it -- and must run *before* ``numba.cuda`` is first
   imported: ``minialexnet.kernels.cuda`` (this package) and ``minialexnet.gpu`` run it when they
   are imported, before any of their modules imports numba.cuda. Our kernels never call
   ``row_stack``; the function exists only so that numba-cuda's registration finds something.

2. **The CUDA simulator's shared arrays race.** The simulator runs the threads of a block as
   Python threads; ``cuda.shared.array`` finds the block's array in a dict keyed by the source
   line and creates it when absent (``FakeCUDAShared.array``: get, then ``np.empty``, then set).
   Two threads of the *first* block of a launch can both find it absent and each create its own
   array: they then no longer share memory, and a reduction or a GEMM tile of that block reads
   what its neighbours never wrote. It is rare (the window is a few microseconds, and
   ``sys.setswitchinterval(1e-4)``, which the tests use, makes it likelier), and it made a
   simulator test fail about one run in fifty with a wrong loss.
   ``fix_simulator_shared_arrays()`` replaces that method with one whose look-up and creation
   hold a lock (under the simulator only; a real GPU never runs this code);
   ``kernels/cuda/_launch.py`` applies it when imported, which every kernel file does before
   it launches anything.
"""

from __future__ import annotations

import sys
import threading

import numpy as np


def _row_stack(tup, *, dtype=None, casting="same_kind"):
    """``np.vstack`` under its pre-2.5 alias (see the module docstring)."""
    return np.vstack(tup, dtype=dtype, casting=casting)


def restore_row_stack(numpy_module=np) -> bool:
    """Give ``numpy_module`` a ``row_stack`` (calling ``vstack``) if it has none; True if it
    was missing. Call before the first ``import numba.cuda``."""
    if hasattr(numpy_module, "row_stack"):
        return False
    numpy_module.row_stack = _row_stack
    return True


_SHARED_LOCK = threading.Lock()


def fix_simulator_shared_arrays(shared_class=None) -> bool:
    """Make ``FakeCUDAShared.array`` of the CUDA simulator atomic (see the module docstring),
    so that every thread of a block gets the same shared array. ``shared_class`` defaults to
    numba-cuda's ``numba.cuda.simulator.kernelapi.FakeCUDAShared``. Returns True if it was
    patched now, False if it already was or numba-cuda no longer has that class.

    The replacement keeps the simulator's rule (one array per calling source line, created
    with ``np.empty``) and does its look-up and creation under one lock; dynamic shared memory
    (``shape == 0``) and the ``alignment`` error still go to the original method."""
    if shared_class is None:
        try:
            from numba.cuda.simulator.kernelapi import FakeCUDAShared as shared_class
        except ImportError:
            return False
    original = getattr(shared_class, "array", None)
    if original is None or getattr(original, "minialexnet_atomic", False):
        return False

    def array(self, shape, dtype, alignment=None):
        if alignment is not None or shape == 0:
            return original(self, shape, dtype, alignment)
        caller = sys._getframe(1)
        key = (caller.f_code.co_filename, caller.f_lineno)  # the simulator's own key
        with _SHARED_LOCK:
            found = self._allocations.get(key)
            if found is None:
                found = np.empty(shape, _as_numpy_dtype(dtype))
                self._allocations[key] = found
        return found

    array.minialexnet_atomic = True
    array.__doc__ = original.__doc__
    shared_class.array = array
    return True


def _as_numpy_dtype(dtype):
    """A NumPy dtype from a Numba type (``numba.float32``) or anything NumPy understands."""
    try:
        return np.dtype(dtype)
    except TypeError:
        from numba.cuda.np import numpy_support  # a Numba type: numba.float32, ...

        return numpy_support.as_dtype(dtype)
