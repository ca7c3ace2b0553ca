"""How the host drives the towers of the split (§3.2): ``TowerRunner``.

A ``TowerRunner`` runs one task per tower (a stage of forward or backward, wrapped in the
tower's ``Device.run``), either concurrently on a persistent pool of worker threads
(``"threads"``) or one after another in the calling thread (``"sequential"``, for teaching
and debugging: same results, readable tracebacks, a debugger that stops where you expect).

**Numba's "workqueue" threading layer** aborts the whole process ("Numba workqueue threading
layer is terminating: Concurrent access has been detected") when two threads launch
``parallel=True`` kernels at the same time; the "omp" and "tbb" layers are thread-safe.
Numba picks a layer at its first parallel launch (``numba.threading_layer()``; this
project's machines get "omp"), so the runner in ``"threads"`` mode runs its first round of
tasks one after another, then looks: under "workqueue" it keeps running the towers one after
another for good and says so with a ``RuntimeWarning`` (set ``NUMBA_THREADING_LAYER=omp`` or
install ``tbb`` to get concurrency).
"""

from __future__ import annotations

import sys
import threading
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait

from minialexnet.backend import get_backend

#: How the host drives the towers (see ``TowerRunner``).
MODES = ("threads", "sequential")


def _numba_threading_layer() -> str | None:
    """Numba's threading layer, or None while no parallel kernel has run (or no Numba)."""
    numba = sys.modules.get("numba")
    if numba is None:
        return None
    try:
        return numba.threading_layer()
    except ValueError:  # "Threading layer is not initialized"
        return None


class TowerRunner:
    """Runs one task per tower and returns their results in tower order.

    ``mode="threads"``: a persistent ``ThreadPoolExecutor`` with one worker per tower; the
    tasks of one round run at the same time, and ``map`` returns when all have finished (the
    next gather needs every tower's output). ``mode="sequential"``: the tasks run one after
    another in the calling thread. Both give identical results: the towers share no state
    and every reduction adds in tower order.

    ``guard_numba`` (set when the towers run on CPU devices): keep towers from launching
    Numba parallel kernels concurrently until Numba's threading layer is known to be
    thread-safe (see the module docstring); ``self.serialized`` is True once it is known not
    to be ("workqueue"), and ``self.threading_layer`` holds the layer's name once known.
    """

    def __init__(self, mode: str = "threads", workers: int = 2, guard_numba: bool = True):
        if mode not in MODES:
            raise ValueError(
                f"unknown tower mode {mode!r}; choose 'threads' (towers at the "
                f"same time) or 'sequential' (one after another, for debugging)"
            )
        self.mode = mode
        self.workers = int(workers)
        self.guard_numba = bool(guard_numba)
        self.serialized = False
        self.threading_layer: str | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def map(self, tasks: Sequence[Callable]) -> list:
        """``[task() for task in tasks]``, concurrently in ``"threads"`` mode."""
        if self.mode == "sequential" or len(tasks) == 1 or not self._safe_to_overlap():
            return [task() for task in tasks]
        futures = [self._executor().submit(task) for task in tasks]
        wait(futures)  # every tower finishes before an error propagates
        return [f.result() for f in futures]

    def _safe_to_overlap(self) -> bool:
        """May two towers launch Numba parallel kernels at the same time now?"""
        if not self.guard_numba:
            return True
        if self.serialized:
            return False
        if self.threading_layer is None:
            self.threading_layer = _numba_threading_layer()
            if self.threading_layer is None:
                # Unknown until a first parallel kernel has run: run this round one tower
                # after another (its kernels initialise the layer), unless no Numba kernel
                # can run at all (the readable NumPy backend).
                return get_backend() == "numpy"
            if self.threading_layer == "workqueue":
                self.serialized = True
                warnings.warn(
                    "Numba's threading layer is 'workqueue', which aborts the process when two "
                    "threads launch parallel kernels at once: the two towers will run one after "
                    "another (same results, no overlap). For concurrent towers set "
                    "NUMBA_THREADING_LAYER=omp (or install tbb) before starting Python.",
                    RuntimeWarning,
                    stacklevel=4,
                )
                return False
        return True

    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    max_workers=self.workers, thread_name_prefix="minialexnet-tower"
                )
            return self._pool

    def close(self) -> None:
        """Stop the worker threads (a later ``map`` starts new ones)."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)

    # A copy (copy.deepcopy in gradcheck.check_model) gets its own pool when it needs one.
    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_pool"] = None
        del state["_pool_lock"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._pool_lock = threading.Lock()

    def __del__(self) -> None:
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=False)

    def __repr__(self) -> str:
        extra = " (serialized: Numba workqueue)" if self.serialized else ""
        return f"TowerRunner(mode={self.mode!r}, workers={self.workers}){extra}"
