"""One voice, no hangs: only rank 0 speaks, and a failure on any rank stops all of them.

*One voice.* N processes printing the same progress line N times, or writing the same
checkpoint at once, is noise at best and a corrupt file at worst. ``main_only(log, context)``
returns a log function that prints on rank 0 and is silent elsewhere; the trainer is given
it, and writes files only ``if context.is_main``.

*No hangs.* Data-parallel processes meet in an Allreduce at every step. If one of them fails
(an exception, a non-finite loss it raises on, Ctrl-C) and simply exits, the others wait in
that Allreduce forever. ``stop_all_on_failure(context)`` wraps the whole program: on any
exception it prints ``[rank r/N] <the error>`` and its traceback to standard error, then calls
``MPI_Abort``, which makes the launcher (``mpiexec``, ``srun``) kill every process of the job
within seconds and exit non-zero. In a single process it does nothing: the exception goes on
as usual. (``SystemExit(0)``, a normal end, is not a failure.)
"""

from __future__ import annotations

import contextlib
import sys
import traceback
from collections.abc import Callable


def main_only(log: Callable[[str], None], context) -> Callable[[str], None]:
    """``log`` on the main process (rank 0), a function that does nothing on the others."""
    if context.is_main:
        return log

    def silent(line: str) -> None:
        """Not rank 0: stay quiet."""

    return silent


@contextlib.contextmanager
def stop_all_on_failure(context, exit_code: int = 1):
    """Run the block; if it raises on this rank, report it and abort every rank."""
    try:
        yield
    except SystemExit as done:
        if context.size > 1 and done.code not in (None, 0):
            _report(context, f"exited with status {done.code}")
            context.abort(done.code if isinstance(done.code, int) else exit_code)
        raise
    except BaseException as error:  # KeyboardInterrupt (Ctrl-C) included
        if context.size == 1:
            raise
        _report(context, f"{type(error).__name__}: {error}", traceback.format_exc())
        context.abort(exit_code)


def _report(context, message: str, details: str = "") -> None:
    prefix = f"[rank {context.rank}/{context.size}]"
    if details:
        sys.stderr.write("".join(f"{prefix} {line}\n" for line in details.splitlines()))
    sys.stderr.write(f"{prefix} failed, stopping all {context.size} processes: {message}\n")
    sys.stderr.flush()
