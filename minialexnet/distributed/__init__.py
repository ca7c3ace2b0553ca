"""Data-parallel training over MPI processes (``mpiexec -n N python -m minialexnet.train``).

One concept per module:

- ``launch``: was this process started by an MPI launcher, as one of how many (from the
  environment, without importing ``mpi4py``)
- ``context``: ``init_context()`` -> ``SingleProcess`` or ``MPIProcesses`` (rank, size,
  local rank for the GPU choice, the collectives)
- ``shards``: which rows of a global batch each process takes, and their weight ``n_r / B``
- ``dropout_shards``: dropout masks per image as in the global batch
- ``allreduce``: every gradient summed by one Allreduce of one flat float32 buffer
- ``data_parallel``: ``DataParallelEngine``, the engine protocol over the processes
- ``validation``: the validation set split among the processes, counts summed
- ``cache``: the image cache prepared by rank 0 while the others wait, then opened by all
- ``failures``: only rank 0 logs; a failure on any rank stops every rank

Nothing here imports ``mpi4py`` until ``init_context`` finds an MPI launch (see
docs/distributed.md for launching, exactness and the cost model).
"""

from minialexnet.distributed.allreduce import GradientAllreduce
from minialexnet.distributed.cache import prepared_once
from minialexnet.distributed.context import MPIProcesses, SingleProcess, init_context
from minialexnet.distributed.data_parallel import DataParallelEngine
from minialexnet.distributed.dropout_shards import dropout_layers, sharded_dropout
from minialexnet.distributed.failures import main_only, stop_all_on_failure
from minialexnet.distributed.launch import (
    launched_by_mpi,
    launched_world_size,
    local_rank_from_environment,
)
from minialexnet.distributed.shards import Shard, check_batches, shard_of
from minialexnet.distributed.validation import Counts, count_shard, evaluate_split

__all__ = [
    "Counts",
    "DataParallelEngine",
    "GradientAllreduce",
    "MPIProcesses",
    "Shard",
    "SingleProcess",
    "check_batches",
    "count_shard",
    "dropout_layers",
    "evaluate_split",
    "init_context",
    "launched_by_mpi",
    "launched_world_size",
    "local_rank_from_environment",
    "main_only",
    "prepared_once",
    "shard_of",
    "sharded_dropout",
    "stop_all_on_failure",
]
