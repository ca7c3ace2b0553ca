"""Was this process started by an MPI launcher, with how many processes, and which is it?

``mpiexec -n 4 python -m minialexnet.train`` (or ``mpirun``, or ``srun`` on a Slurm cluster)
starts four copies of the same program. Each learns from its environment that it is one of
several; this module reads that environment *without* importing ``mpi4py``, so a plain
``python -m minialexnet.train`` never loads MPI (the optional dependency) at all.

The variables, by launcher:

=====================  ==========================  ================================
launcher               world size                  local rank (process on this host)
=====================  ==========================  ================================
MPICH, Intel MPI       ``PMI_SIZE``                ``MPI_LOCALRANKID``
Open MPI               ``OMPI_COMM_WORLD_SIZE``    ``OMPI_COMM_WORLD_LOCAL_RANK``
MVAPICH                ``MV2_COMM_WORLD_SIZE``     ``MV2_COMM_WORLD_LOCAL_RANK``
Slurm ``srun`` + PMIx  ``SLURM_NTASKS`` (note 1)   ``SLURM_LOCALID``
other PMIx launchers   ``PMIX_RANK`` (note 2)      ``PMIX_LOCAL_RANK``
=====================  ==========================  ================================

Note 1: only together with ``SLURM_STEP_ID`` and a ``PMI_*``/``PMIX_*`` variable (an ``srun``
step wired to MPI), because ``SLURM_NTASKS`` is also set inside a plain ``sbatch`` script.
Note 2: ``PMIX_RANK`` names no size; it counts as "more than one, ask MPI", and
``init_context`` then takes the size from ``mpi4py`` (a size of 1 runs as one process).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
_LOCAL_RANK_VARIABLES = (
    "MPI_LOCALRANKID",
    "OMPI_COMM_WORLD_LOCAL_RANK",
    "MV2_COMM_WORLD_LOCAL_RANK",
    "SLURM_LOCALID",
    "PMIX_LOCAL_RANK",
)


def _int(environ: Mapping[str, str], name: str) -> int | None:
    try:
        return int(environ[name])
    except (KeyError, ValueError):
        return None


def launched_world_size(environ: Mapping[str, str] | None = None) -> int:
    """How many processes the MPI launcher started (1 when there is no MPI launcher).

    An MPI launch that names no size (``PMIX_RANK`` only) counts as 2 ("more than one, ask
    MPI"; see the module docstring).
    """
    environ = os.environ if environ is None else environ
    for name in _SIZE_VARIABLES:
        size = _int(environ, name)
        if size is not None:
            return max(size, 1)
    if "SLURM_STEP_ID" in environ and any(k.startswith(("PMI_", "PMIX_")) for k in environ):
        return max(_int(environ, "SLURM_NTASKS") or 1, 1)
    if "PMIX_RANK" in environ:
        return 2
    return 1


def launched_by_mpi(environ: Mapping[str, str] | None = None) -> bool:
    """True when an MPI launcher started this process as one of more than one: then (and
    only then) training runs data-parallel and imports ``mpi4py``."""
    return launched_world_size(environ) > 1


def local_rank_from_environment(environ: Mapping[str, str] | None = None) -> int | None:
    """This process's index among the launcher's processes on this machine (the GPU it
    takes), or ``None`` if the launcher does not say (MPI's shared-memory split then does)."""
    environ = os.environ if environ is None else environ
    for name in _LOCAL_RANK_VARIABLES:
        rank = _int(environ, name)
        if rank is not None:
            return rank
    return None
