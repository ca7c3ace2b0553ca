"""Which rows of a global batch each process trains on, and how much its gradient weighs.

A global batch of ``B`` images is split into ``N`` contiguous shards, one per process, as
evenly as possible: the first ``B mod N`` shards get ``ceil(B / N)`` rows, the others
``floor(B / N)``. For example ``B = 128, N = 3`` gives 43, 43, 42.

Why uneven shards are still *exact*. The loss of a step is the mean over the global batch,
``L = (1/B) sum_i l_i``. Process ``r`` computes the gradient of its shard's mean,
``g_r = (1/n_r) sum_{i in r} dl_i/dw``, exactly what a single-process engine computes for a
batch of ``n_r`` images. Weighted by ``n_r / B`` and summed over the processes (the
Allreduce),

    sum_r (n_r / B) g_r = (1/B) sum_r sum_{i in r} dl_i/dw = dL/dw,

the gradient of the global mean, whatever ``B mod N`` is. (Simply averaging the ``g_r`` would
give the images of smaller shards more weight.) The same weights turn shard-mean losses into
the global-mean loss. A shard must not be empty: ``B >= N`` is required, also for an epoch's
last, smaller batch.
"""

from __future__ import annotations

from typing import NamedTuple


class Shard(NamedTuple):
    """Rows ``start:stop`` of a global batch of ``global_batch`` examples."""

    start: int
    stop: int
    global_batch: int

    @property
    def size(self) -> int:
        return self.stop - self.start

    @property
    def weight(self) -> float:
        """``n_r / B``: the factor that turns the shard's mean gradient into its share of the
        global mean gradient (see the module docstring)."""
        return self.size / self.global_batch


def shard_of(global_batch: int, size: int, rank: int) -> Shard:
    """Process ``rank``'s shard of a global batch split among ``size`` processes."""
    if not 0 <= rank < size:
        raise ValueError(f"rank {rank} is not in 0..{size - 1}")
    if global_batch < size:
        raise ValueError(
            f"a batch of {global_batch} images cannot be split among {size} "
            f"processes (every process needs at least one image): use a batch "
            f"size of at least {size}, start fewer processes, or drop an epoch's "
            f"last, smaller batch"
        )
    base, extra = divmod(global_batch, size)
    start = rank * base + min(rank, extra)
    return Shard(start, start + base + (rank < extra), global_batch)


def check_batches(num_images: int, batch_size: int, size: int) -> None:
    """Refuse, before training starts, an epoch whose batches cannot all be split among
    ``size`` processes: the batch size, or the epoch's last, smaller batch, below ``size``."""
    last = num_images % batch_size
    smallest = min(batch_size, num_images) if last == 0 else last
    if smallest < size:
        raise ValueError(
            f"{num_images} training images in batches of {batch_size} leave a "
            f"batch of {smallest} images, fewer than the {size} processes (each "
            f"needs at least one image): choose a batch size with "
            f"{num_images} mod batch size = 0 or >= {size}, or start fewer "
            f"processes"
        )
