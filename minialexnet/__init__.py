"""minialexnet: AlexNet (Krizhevsky, Sutskever & Hinton, NIPS 2012), readable and trainable.

Every layer is a NumPy class with an explicit backward pass (``minialexnet.layers``); the hot
loops have a readable NumPy version (``minialexnet.kernels.numpy``), a Numba version for the
CPU (``minialexnet.kernels.cpu``) and a numba.cuda version for the GPU
(``minialexnet.kernels.cuda``), with the same file and function names in each folder.

Choose the CPU kernels with ``minialexnet.set_backend("numpy" | "numba")`` or the environment
variable ``MINIALEXNET_BACKEND`` (default ``"numba"``).
"""

import os as _os
import sys as _sys
import tempfile as _tempfile


def _ensure_numba_cache_dir() -> None:
    """Point Numba's on-disk cache somewhere writable before Numba is imported.

    Kernels are compiled with ``cache=True`` so that a warm process does not pay the compile
    time again. Numba writes the cache beside the source; a read-only install (site-packages
    owned by root, a container image) would otherwise fail at import with "no locator
    available" (see docs/numba.md, CPU).
    """
    if _os.environ.get("NUMBA_CACHE_DIR"):
        return
    if _os.access(_os.path.dirname(_os.path.abspath(__file__)), _os.W_OK):
        return
    base = _os.environ.get("XDG_CACHE_HOME") or _os.path.join(_os.path.expanduser("~"), ".cache")
    if not _os.access(_os.path.dirname(base) or ".", _os.W_OK) and not _os.access(base, _os.W_OK):
        base = _tempfile.gettempdir()
    _os.environ["NUMBA_CACHE_DIR"] = _os.path.join(base, "minialexnet", "numba")


_ensure_numba_cache_dir()


def _import_numpy_with_sleeping_blas_workers() -> None:
    """Import NumPy with OpenBLAS's idle workers told to sleep at once, then restore the
    environment.

    After every matrix product OpenBLAS's worker threads keep spinning (calling
    ``sched_yield``) for 2**28 processor cycles, about 0.1 s, before they sleep. A training
    step runs a Numba kernel (im2col, LRN, pooling, ReLU) right after each product, on the
    same cores, and those spinning workers took half of them: in a paper step on 2 cores,
    pool1's forward took 77 ms instead of 39 ms alone (docs/numba.md, CPU). OpenBLAS reads
    ``OPENBLAS_THREAD_TIMEOUT`` (log2 of the cycles; 4 is its minimum) once, when NumPy
    loads it, so it is set for that moment only, like ``OMP_WAIT_POLICY`` for Numba's
    threads (``minialexnet.threads``). A value the user set is kept. If NumPy was imported
    before minialexnet (every notebook and most scripts do that), OpenBLAS is running
    already: ``minialexnet.threads.let_idle_blas_workers_sleep`` then has it read the value
    again and restart its workers with it.
    """
    if "numpy" in _sys.modules:
        from minialexnet.threads import let_idle_blas_workers_sleep

        let_idle_blas_workers_sleep()
        return
    from minialexnet.environment import OPENBLAS_SLEEP_AT_ONCE, default_for_a_moment

    with default_for_a_moment(*OPENBLAS_SLEEP_AT_ONCE):
        import numpy  # noqa: F401


_import_numpy_with_sleeping_blas_workers()

from minialexnet.backend import get_backend, set_backend, use_backend  # noqa: E402

__version__ = "0.1.0"
__all__ = ["get_backend", "set_backend", "use_backend", "load_onnx", "save_onnx", "__version__"]


def _onnx_io():
    """``minialexnet.onnx_io``, imported on first use: ``onnx`` is an optional dependency."""
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise ImportError(
            "reading and writing ONNX files needs the onnx package: "
            'pip install "minialexnet[onnx]"'
        ) from None
    import minialexnet.onnx_io

    return minialexnet.onnx_io


def load_onnx(path, **options):
    """The ``AlexNet`` of an ONNX file (e.g. the model zoo's ``bvlcalexnet-12.onnx``); see
    ``minialexnet.onnx_io.reader.load_onnx`` for ``options`` (preprocessing, class_names,
    rng)."""
    return _onnx_io().load_onnx(path, **options)


def save_onnx(model, path) -> None:
    """Write an ``AlexNet`` to an ONNX file, preprocessing and class names included; see
    ``minialexnet.onnx_io.writer``."""
    _onnx_io().save_onnx(model, path)
