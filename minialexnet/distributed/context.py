"""Who am I among the training processes: rank, size, local rank, and the few collectives.

Data parallelism needs four things from MPI, and nothing else: an in-place sum of one buffer
across all processes (``allreduce_sum``), a copy of rank 0's array to all (``broadcast``), a
wait for all (``barrier``) and a way to stop everyone at once (``abort``). Two classes offer
them with the same members:

- ``SingleProcess``: one process, as without MPI; every collective is a no-op. It never
  imports ``mpi4py``.
- ``MPIProcesses``: ``size`` processes of an MPI launch (``mpi4py``'s ``COMM_WORLD``).

``init_context()`` picks one from the environment (``launch.launched_by_mpi``).

Ranks: ``rank`` 0..size-1 is the process's index in the whole job; rank 0 is the *main*
process, the only one that prints and writes files (``is_main``). ``local_rank`` is its index
among the processes on the same machine: with ``--backend cuda`` process ``local_rank`` takes
GPU ``local_rank``, so four processes on a four-GPU node use one GPU each.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from minialexnet.distributed.launch import launched_by_mpi, local_rank_from_environment

_POLL_SECONDS = 0.01
#: How long ``abort`` waits between flushing this process's output and ``MPI_Abort``. The
#: launcher forwards each rank's standard error asynchronously (MPICH's hydra reads the
#: rank's pipe and passes it on); an abort that reaches it first can end the job before the
#: error message is printed, leaving a user with a non-zero exit status and no explanation
#: (seen once in CI: an empty standard error). A second costs nothing in a job that is
#: failing anyway.
_FORWARD_GRACE_SECONDS = 1.0


class SingleProcess:
    """The context of an ordinary, single-process run: rank 0 of 1, collectives do nothing."""

    rank, size, local_rank, cuda_aware = 0, 1, 0, False

    @property
    def is_main(self) -> bool:
        return True

    def allreduce_sum(self, buffer) -> None:
        """The sum over one process is the buffer itself."""

    def broadcast(self, array: np.ndarray) -> None:
        """Rank 0's array is already everyone's."""

    def barrier(self) -> None:
        """Nobody to wait for."""

    def abort(self, code: int = 1) -> None:
        raise SystemExit(code)

    def __repr__(self) -> str:
        return "SingleProcess()"


class MPIProcesses:
    """Rank ``rank`` of the ``size`` processes of ``comm`` (default ``MPI.COMM_WORLD``).

    ``cuda_aware``: whether this MPI accepts GPU buffers (``MPIX_Query_cuda_support``, which
    ``mpi4py`` exposes as ``MPI.Query_cuda_support`` where the library has it; ``False``
    otherwise, and then GPU gradients travel through host memory).
    """

    def __init__(self, comm=None) -> None:
        from mpi4py import MPI

        self._MPI = MPI
        self.comm = MPI.COMM_WORLD if comm is None else comm
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        local = local_rank_from_environment()
        if local is None:  # the launcher did not say: count the processes sharing memory
            node = self.comm.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)
            local = node.Get_rank()
            node.Free()
        self.local_rank = local
        query = getattr(MPI, "Query_cuda_support", None)
        self.cuda_aware = bool(query()) if query is not None else False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def allreduce_sum(self, buffer) -> None:
        """Replace ``buffer`` (a contiguous float32/float64/int64 array, host or, with a
        CUDA-aware MPI, device) by its element-wise sum over all processes; one MPI call."""
        self.comm.Allreduce(self._MPI.IN_PLACE, buffer, op=self._MPI.SUM)

    def broadcast(self, array: np.ndarray) -> None:
        """Overwrite ``array`` (contiguous, the same shape everywhere) with rank 0's."""
        self.comm.Bcast(array, root=0)

    def barrier(self) -> None:
        """Wait until every process got here. Polls a non-blocking barrier with short sleeps
        instead of MPI's busy wait, so a process waiting for rank 0 (e.g. while it decodes
        the image cache) leaves the CPU cores to it."""
        request = self.comm.Ibarrier()
        while not request.Test():
            time.sleep(_POLL_SECONDS)

    def abort(self, code: int = 1) -> None:
        """Stop every process of the job now (``MPI_Abort``): the way out of a failure on
        one rank while the others wait in a collective that would never complete."""
        sys.stdout.flush()
        sys.stderr.flush()
        time.sleep(_FORWARD_GRACE_SECONDS)  # let the launcher print what was written
        self.comm.Abort(code)

    def __repr__(self) -> str:
        return f"MPIProcesses(rank={self.rank}, size={self.size}, local_rank={self.local_rank})"


def init_context(use_mpi: bool | None = None) -> SingleProcess | MPIProcesses:
    """The context of this process: ``MPIProcesses`` when an MPI launcher started more than
    one process (or ``use_mpi=True``: MPI even for one process, a "singleton" MPI run),
    ``SingleProcess`` otherwise (``mpi4py`` is then not imported)."""
    if use_mpi is None:
        use_mpi = launched_by_mpi()
    if not use_mpi:
        return SingleProcess()
    try:
        import mpi4py  # noqa: F401  (only to give a clear message when it is missing)
    except ImportError:
        raise RuntimeError(
            "this process was started by an MPI launcher (mpiexec, mpirun, "
            'srun) but mpi4py is not installed: pip install -e ".[mpi]", or '
            "on a cluster build mpi4py against the site's MPI (see "
            "docs/distributed.md)"
        ) from None
    return MPIProcesses()
