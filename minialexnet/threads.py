"""How many CPU threads minialexnet uses: Numba's kernels and NumPy's BLAS, set together.

A training step alternates Numba kernels (im2col, LRN, pooling, Winograd transforms) with
OpenBLAS matrix products, each spread over its own pool of threads. Giving the two pools
different sizes leaves cores idle in one half of the step, so ``set_threads(n)`` sets both.

NumPy's BLAS is reached, in order of preference, through ``threadpoolctl`` (if installed; not
a dependency) or through the thread-count function of the OpenBLAS library that NumPy's
wheels bundle (``scipy_openblas_set_num_threads64_`` and its older spellings), found beside
NumPy and called with ctypes. Where neither works (a NumPy built on another BLAS), the BLAS
keeps its own setting and ``set_threads`` says so in its return value; the environment
variables ``OPENBLAS_NUM_THREADS`` / ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` then do it,
set before Python starts.

``start_numba_threads()`` starts Numba's OpenMP workers with ``OMP_WAIT_POLICY=PASSIVE``
(idle workers sleep instead of spinning on the cores BLAS needs next; see the package
docstring) and then restores the environment, so that another library's OpenMP runtime
loaded later in the same process (PyTorch's, for instance) keeps its own default.
"""

from __future__ import annotations

import ctypes
import glob
import os

import numba
import numpy as np
from numba.np.ufunc import parallel as numba_parallel  # owns Numba's thread pool

from minialexnet.checks import check_positive_int
from minialexnet.environment import OPENBLAS_SLEEP_AT_ONCE, default_for_a_moment

# The thread-count setters that OpenBLAS builds export: NumPy >= 2 wheels (scipy-openblas,
# 64-bit integers), older wheels, and a plain system OpenBLAS.
_SETTERS = (
    "scipy_openblas_set_num_threads64_",
    "scipy_openblas_set_num_threads",
    "openblas_set_num_threads64_",
    "openblas_set_num_threads",
)
_GETTERS = (
    "scipy_openblas_get_num_threads64_",
    "scipy_openblas_get_num_threads",
    "openblas_get_num_threads64_",
    "openblas_get_num_threads",
)
_CORENAMES = (
    "scipy_openblas_get_corename64_",
    "scipy_openblas_get_corename",
    "openblas_get_corename64_",
    "openblas_get_corename",
)


def set_threads(n: int) -> dict[str, int | None]:
    """Use ``n`` threads in Numba's kernels and in NumPy's BLAS; returns what each now uses.

    Numba cannot go above the ``NUMBA_NUM_THREADS`` it started with (default: every core),
    so ``n`` is capped there. ``{"numba": k, "blas": m}``; ``"blas"`` is None where the BLAS
    could not be reached (see the module docstring for the environment variables).
    """
    n = check_positive_int(n, "threads")
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    try:
        import threadpoolctl  # optional: not a dependency of minialexnet

        threadpoolctl.threadpool_limits(n, user_api="blas")
    except ImportError:
        _call_openblas(_SETTERS, n)
    return {"numba": numba.get_num_threads(), "blas": blas_threads()}


def blas_threads() -> int | None:
    """The number of threads NumPy's OpenBLAS uses, or None if it cannot be asked."""
    result = _call_openblas(_GETTERS)
    return None if result is None else int(result)


def blas_core() -> str | None:
    """The OpenBLAS kernel NumPy runs (e.g. "SkylakeX", "Haswell"), or None if unknown."""
    lib, name = _openblas_function(_CORENAMES)
    if lib is None:
        return None
    function = getattr(lib, name)
    function.restype = ctypes.c_char_p
    return function().decode()


def start_numba_threads() -> None:
    """Start Numba's thread pool with sleeping idle workers, then restore the environment.

    The OpenMP runtime reads ``OMP_WAIT_POLICY`` once, when it starts; afterwards the
    variable is put back as it was, so it does not reach other libraries' runtimes. A value
    the user set is kept as it is.
    """
    with default_for_a_moment("OMP_WAIT_POLICY", "PASSIVE"):
        numba_parallel._launch_threads()


def let_idle_blas_workers_sleep() -> bool:
    """Make an OpenBLAS that NumPy has already started put its idle workers to sleep at once.

    ``import minialexnet`` loads NumPy with ``OPENBLAS_THREAD_TIMEOUT=4`` so that OpenBLAS's
    workers do not spin for 0.1 s after every matrix product on the cores the next Numba
    kernel needs (``minialexnet/__init__.py``). Where NumPy came first, OpenBLAS read its
    environment at that moment, without the variable: a paper training step at batch 32 on
    the 2-core machine then took 629-734 ms instead of 497-628 ms. This sets the variable
    for a moment (a value the user set is kept), has OpenBLAS read its environment again
    (``openblas_read_env``) and stops its workers (``blas_thread_shutdown_``, what OpenBLAS
    itself does in a forked child); the next product starts them again, now with the short
    timeout. Both functions are exported by the OpenBLAS that NumPy's wheels ship but are
    not documented API: where either is missing (another BLAS, another build), nothing is
    done and False is returned. Call it while no other thread is inside a BLAS call (as
    ``import minialexnet`` does).
    """
    for lib in _openblas_libraries():
        if hasattr(lib, "openblas_read_env") and hasattr(lib, "blas_thread_shutdown_"):
            break
    else:
        return False
    with default_for_a_moment(*OPENBLAS_SLEEP_AT_ONCE):
        lib.openblas_read_env()
    lib.blas_thread_shutdown_()
    return True


def _openblas_function(names):
    """(library, symbol) of the first of ``names`` that NumPy's OpenBLAS exports."""
    for lib in _openblas_libraries():
        for name in names:
            if hasattr(lib, name):
                return lib, name
    return None, None


def _call_openblas(names, *args):
    lib, name = _openblas_function(names)
    return None if lib is None else getattr(lib, name)(*args)


def _openblas_libraries():
    """The OpenBLAS shared libraries shipped with NumPy (already loaded: CDLL reuses them)."""
    root = os.path.dirname(os.path.dirname(np.__file__))
    patterns = [
        os.path.join(root, "numpy.libs", "*openblas*"),  # Linux wheels
        os.path.join(os.path.dirname(np.__file__), ".dylibs", "*openblas*"),  # macOS
        os.path.join(root, "numpy.libs", "*openblas*.dll"),
    ]  # Windows wheels
    for path in sorted({p for pattern in patterns for p in glob.glob(pattern)}):
        try:
            yield ctypes.CDLL(path)
        except OSError:
            continue
