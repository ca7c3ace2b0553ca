"""Give every image of a shard the dropout mask it would get in the whole global batch.

One process draws the masks of a batch with ``rng.random((B, units))`` (``layers/dropout.py``):
row ``i`` is image ``i``'s mask. If process ``r`` drew ``rng.random((n_r, units))`` for its
shard instead, its images would get other masks than in a single-process run, and all
processes, sharing one seed, would give their first rows the *same* masks. So while a
data-parallel engine runs a shard, each ``Dropout`` layer draws the global batch's mask and
keeps its rows (``Dropout.shard``): the same masks per image as one process, and the model's
generator advances exactly as in one process, on every rank.

Costs ``B / n_r`` times the random numbers of a plain shard: 2 x 4096 x B doubles per step
for the paper's fc6/fc7, negligible beside the step.
"""

from __future__ import annotations

import contextlib

from minialexnet.distributed.shards import Shard
from minialexnet.layers import Dropout


def dropout_layers(model) -> list:
    """Every ``Dropout`` layer of ``model``: an ``AlexNet``'s ``layers`` and, for the two-tower
    network (§3.2), those of each of its ``towers``."""
    layers = list(getattr(model, "layers", {}).values())
    for tower in getattr(model, "towers", ()):
        layers.extend(tower.layers.values())
    return [layer for layer in layers if isinstance(layer, Dropout)]


@contextlib.contextmanager
def sharded_dropout(model, shard: Shard):
    """Within the block, ``model``'s dropout layers draw the masks of rows
    ``shard.start:shard.stop`` of a global batch of ``shard.global_batch`` images."""
    layers = dropout_layers(model)
    for layer in layers:
        layer.shard = tuple(shard)
    try:
        yield
    finally:
        for layer in layers:
            layer.shard = None
