"""Which implementation of the hot loops the CPU layers call: readable NumPy or Numba.

``"numpy"`` runs the reference loops in ``minialexnet/kernels/numpy/`` that a student can step
through in a debugger; ``"numba"`` (the default) runs the compiled twins in
``minialexnet/kernels/cpu/``. Both folders export the same function names, and the tests
prove they agree. Select with ``set_backend``, the ``use_backend`` context manager, or the
environment variable ``MINIALEXNET_BACKEND``.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from types import ModuleType

BACKENDS = ("numba", "numpy")
_MODULES = {"numba": "minialexnet.kernels.cpu", "numpy": "minialexnet.kernels.numpy"}


def _validated(name: str, source: str) -> str:
    name = str(name).strip().lower()
    if name not in BACKENDS:
        raise ValueError(
            f"unknown CPU backend {name!r} (from {source}); choose one of {', '.join(BACKENDS)}"
        )
    return name


_current = _validated(
    os.environ.get("MINIALEXNET_BACKEND", "numba"), "the environment variable MINIALEXNET_BACKEND"
)


def get_backend() -> str:
    """The CPU backend in use: ``"numba"`` or ``"numpy"``."""
    return _current


def set_backend(name: str) -> None:
    """Switch every layer to the ``"numba"`` or ``"numpy"`` kernels from now on."""
    global _current
    _current = _validated(name, "set_backend")


@contextlib.contextmanager
def use_backend(name: str):
    """``with use_backend("numpy"): ...`` runs the block on that backend, then restores."""
    global _current
    previous = _current
    set_backend(name)
    try:
        yield
    finally:
        _current = previous


def kernels(name: str | None = None) -> ModuleType:
    """The kernel module of a backend (default: the current one).

    Imported lazily so that the NumPy backend never pays Numba's compile time.
    """
    return importlib.import_module(_MODULES[_validated(name or _current, "kernels()")])
