"""The image cache prepared once for all processes, then memory-mapped by each.

Decoding ImageNet into the cache (``minialexnet.data.cache``) takes hours; N processes must
not decode it N times, nor write the same files at once. ``prepared_once(open_data, context)``
runs ``open_data()`` (open the cache, building it first if it is missing or stale) on rank 0
while the others wait at a barrier (sleeping, so rank 0's decoding workers get the cores);
then the others run ``open_data()`` too, which finds the finished cache and memory-maps it.
The cache folder must be one that every process sees (a shared file system on a cluster).

A failure of rank 0 while building does not leave the others waiting forever: run the whole
program under ``failures.stop_all_on_failure``, which ends every process (``MPI_Abort``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def prepared_once(open_data: Callable[[], T], context) -> T:
    """``open_data()`` on rank 0 first, then, after a barrier, on every other rank."""
    if context.is_main:
        result = open_data()
        context.barrier()
        return result
    context.barrier()
    return open_data()
