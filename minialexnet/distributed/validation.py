"""Validation split among the processes: each evaluates a contiguous part, counts are summed.

Process ``r`` of ``N`` evaluates images ``shard_of(len(dataset), N, r)`` (the same balanced
split as a training batch) with its own replica (all replicas are equal), counts its top-1 and
top-5 correct answers, and one small integer Allreduce sums the counts. The error rates are
those of one process evaluating everything: counting is exact and there is no dropout at test
time. (An image's logits can differ in the last float32 bit when it sits in another batch,
as BLAS may sum in another order; only an exact tie between two classes could notice.)
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from minialexnet.data.dataset import ImageDataset
from minialexnet.distributed.shards import shard_of
from minialexnet.engine import count_correct
from minialexnet.metrics import softmax


class Counts(NamedTuple):
    """Correct answers over ``total`` images; ``top1_error`` / ``top5_error`` as fractions."""

    top1_correct: int
    top5_correct: int
    total: int

    @property
    def top1_error(self) -> float:
        return 1.0 - self.top1_correct / self.total

    @property
    def top5_error(self) -> float:
        return 1.0 - self.top5_correct / self.total


def dataset_shard(dataset: ImageDataset, context) -> ImageDataset:
    """This process's contiguous part of ``dataset`` (a view: a memmap stays on disk)."""
    shard = shard_of(len(dataset), context.size, context.rank)
    rows = slice(shard.start, shard.stop)
    return ImageDataset(dataset.images[rows], dataset.labels[rows], dataset.class_names)


def count_shard(
    engine, dataset: ImageDataset, stats, batch_size: int = 128, crops: str = "center"
) -> Counts:
    """Top-1 / top-5 correct counts of ``engine`` on all of ``dataset`` (one process).

    ``crops="center"``: one centre crop; ``"ten"``: the softmax averaged over the ten crops
    of §4.1. ``engine.forward(x, train=False)``: any engine of the protocol.
    """
    from minialexnet.data.loader import BatchLoader

    loader = BatchLoader(dataset, batch_size, engine.input_size, stats, train=False, crops=crops)
    top1 = top5 = 0
    for x, labels in loader:
        if crops == "ten":  # x: (B, 10, 3, S, S)
            b = x.shape[0]
            scores = softmax(engine.forward(x.reshape(b * 10, *x.shape[2:]), train=False))
            scores = scores.reshape(b, 10, -1).mean(axis=1)
        else:
            scores = engine.forward(x, train=False)
        correct = count_correct(scores, labels)
        top1, top5 = top1 + correct[0], top5 + correct[1]
    return Counts(top1, top5, len(dataset))


def evaluate_split(
    engine, dataset: ImageDataset, stats, context, batch_size: int = 128, crops: str = "center"
) -> Counts:
    """Counts over the whole ``dataset``, each process evaluating its part (every process
    gets the same totals). ``len(dataset) >= context.size`` is required."""
    part = count_shard(engine, dataset_shard(dataset, context), stats, batch_size, crops)
    totals = np.array(part, dtype=np.int64)
    context.allreduce_sum(totals)
    return Counts(*(int(t) for t in totals))
