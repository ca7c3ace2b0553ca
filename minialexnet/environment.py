"""Environment variables that a library reads once, when it starts, set for that moment only.

Two thread pools in the process read their idle-worker policy from the environment when they
start: OpenBLAS's (``OPENBLAS_THREAD_TIMEOUT``, when NumPy loads it or when it reads its
environment again; ``minialexnet/__init__.py``, ``minialexnet/threads.py``) and the OpenMP
runtime of Numba's (``OMP_WAIT_POLICY``). minialexnet sets each only around that start and
then puts the environment back, so that a library loaded later in the same process (another
OpenMP runtime, PyTorch's for instance) keeps its own default. This module imports nothing
but the standard library: ``minialexnet/__init__.py`` needs it before NumPy is loaded.
"""

from __future__ import annotations

import contextlib
import os

#: OPENBLAS_THREAD_TIMEOUT for OpenBLAS workers that sleep as soon as a product is done: log2
#: of the processor cycles they spin first (4, OpenBLAS's minimum, against its default 28).
OPENBLAS_SLEEP_AT_ONCE = ("OPENBLAS_THREAD_TIMEOUT", "4")


@contextlib.contextmanager
def default_for_a_moment(name: str, value: str):
    """Environment variable ``name`` set to ``value`` inside the block, unless the user set
    it (their value is kept); afterwards the environment is as it was."""
    previous = os.environ.get(name)
    os.environ.setdefault(name, value)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
