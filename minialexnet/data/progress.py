"""Long jobs in chunks: a plain-text progress line and a pool of worker processes.

``run_chunks`` runs one function over many independent chunks of work (the cache decodes
images this way), in worker processes or in this one, and reports each finished chunk as it
comes. ``Progress`` prints ``what: done/total (pct), rate img/s, time left`` through the
caller's ``log`` function.

Workers never outlive the process that started them: killed with ``kill -9``, a crashed or
terminated parent takes its workers with it (``_die_with_parent``), so no orphan keeps
working, or keeps a lock the parent held, after the run is gone.
"""
from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

import numpy as np

#: ``prctl`` option of Linux: "send me this signal when my parent dies" (linux/prctl.h).
PR_SET_PDEATHSIG = 1

#: Seconds between two looks at the parent where ``prctl`` is not available.
PARENT_CHECK_SECONDS = 0.5


class Progress:
    """Logs ``what: done/total (pct), rate img/s, time left`` at most every ``every`` seconds."""

    def __init__(self, total: int, what: str, log, every: float = 5.0, done: int = 0):
        self.total, self.what, self.log, self.every = total, what, log, every
        self.done = done
        self.start_done = done
        self.start = self.last = time.monotonic()

    @property
    def rate(self) -> float:
        """Images per second since this run started (resumed work not counted)."""
        return (self.done - self.start_done) / max(time.monotonic() - self.start, 1e-9)

    def update(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
        if now - self.last >= self.every or self.done >= self.total:
            self.last = now
            left = (self.total - self.done) / self.rate if self.rate > 0 else float("nan")
            eta = f", about {_duration(left)} left" if self.done < self.total else ""
            self.log(f"  {self.what}: {self.done}/{self.total} images "
                     f"({100.0 * self.done / max(self.total, 1):.0f}%), "
                     f"{self.rate:.0f} img/s{eta}")


def _duration(seconds: float) -> str:
    if not np.isfinite(seconds):
        return "?"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


@dataclass(frozen=True)
class Chunk:
    """One unit of work: ``work(*args)`` for the chunk ``index``, which holds ``count`` items
    (images, for the progress line)."""
    index: int
    count: int
    args: tuple


def _pool_context():
    """How worker processes start: "fork" on Linux, "spawn" elsewhere.

    Fork needs no re-import of the caller's ``__main__``, so a script without an
    ``if __name__ == "__main__":`` guard, code piped through stdin or a notebook all work (with
    "spawn" each worker would re-run an unguarded script). Forking a process whose BLAS or
    Numba threads hold locks is only unsafe if the child uses them; the workers only run
    Pillow and write to a memmap. On macOS and Windows, "spawn" is the safe choice, and a
    script that prepares data there needs the ``__main__`` guard.
    """
    return multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")


def _set_parent_death_signal() -> bool:
    """Ask Linux to SIGKILL this process when its parent dies; ``False`` where it cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent(parent_pid: int) -> None:
    """Exit as soon as the parent is gone (an orphan is adopted by another process)."""
    while os.getppid() == parent_pid:
        time.sleep(PARENT_CHECK_SECONDS)
    os._exit(1)


def _die_with_parent(parent_pid: int, inherited_fds: tuple) -> None:
    """Worker initializer: never outlive ``parent_pid``, never hold its locks.

    A forked worker shares the parent's open files, a lock file among them: an ``flock`` lock
    is released only when every copy of its file descriptor is closed, so an orphaned worker
    would keep the cache locked for ever. The descriptors in ``inherited_fds`` are pointed at
    ``/dev/null`` here (closing them could let a later ``close`` of the same number hit an
    unrelated file; unlocking would release the parent's lock). Then the worker arranges to
    be killed with its parent: ``prctl(PR_SET_PDEATHSIG)`` on Linux, else a thread that polls
    the parent's pid. A parent that died before this point is noticed by the pid check.
    """
    if inherited_fds:
        null = os.open(os.devnull, os.O_RDONLY)
        for fd in inherited_fds:
            with contextlib.suppress(OSError):
                os.dup2(null, fd)
        os.close(null)
    watched_by_kernel = _set_parent_death_signal()
    if os.getppid() != parent_pid:
        os._exit(1)
    if not watched_by_kernel:
        threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()


def _run_in_pool(work, chunks: list, workers: int, on_done, progress: Progress,
                 inherited_fds: tuple, finished: set) -> None:
    """Run ``chunks`` on ``workers`` processes, adding each finished chunk's index to
    ``finished`` (which tells the caller what is left if the pool breaks)."""
    context = _pool_context()
    if context.get_start_method() != "fork":
        inherited_fds = ()                # a spawned worker inherits no descriptors
    pool = ProcessPoolExecutor(min(workers, len(chunks)), mp_context=context,
                               initializer=_die_with_parent,
                               initargs=(os.getpid(), tuple(inherited_fds)))
    try:
        with warnings.catch_warnings():   # Python >= 3.12 warns about any fork (see above)
            warnings.filterwarnings("ignore", message=".*fork", category=DeprecationWarning)
            futures = {pool.submit(work, *chunk.args): chunk for chunk in chunks}
        for future in as_completed(futures):
            chunk = futures[future]
            on_done(chunk.index, future.result())
            finished.add(chunk.index)
            progress.update(chunk.count)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def run_chunks(work, chunks: list[Chunk], *, workers: int, progress: Progress, on_done, log,
               inherited_fds: tuple = ()) -> None:
    """Run ``work(*chunk.args)`` for every chunk (in this process when ``workers <= 1``),
    calling ``on_done(chunk.index, result)`` as each finishes, in whatever order they finish.

    ``work`` must be a module-level function (worker processes receive it by name).
    ``inherited_fds``: descriptors the workers must not keep open, e.g. the lock the caller
    holds (see ``_die_with_parent``). Worker processes that cannot start (e.g. a script fed
    through stdin, which "spawn" cannot re-import) make the pool "broken"; the remaining
    chunks then run in this process, so the work never hangs or fails for that reason.
    """
    finished = set()
    if workers > 1 and len(chunks) > 1:
        try:
            _run_in_pool(work, chunks, workers, on_done, progress, inherited_fds, finished)
        except BrokenProcessPool as err:
            log(f"  worker processes failed ({err}); decoding in this process instead")
    for chunk in chunks:
        if chunk.index not in finished:
            on_done(chunk.index, work(*chunk.args))
            progress.update(chunk.count)

