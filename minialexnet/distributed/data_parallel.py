"""``DataParallelEngine``: the engine protocol over N processes, one shard of each batch each.

Every process holds a full replica of the network (the same initial parameters: rank 0's,
broadcast at construction) and is handed the same global batch. One training step:

    shard       rows n_r of the B images, by rank (``shards.shard_of``)
    forward_backward   the local engine on the shard; dropout masks as in the global batch
    weigh       g_r <- (n_r / B) g_r                    (exact for any B, ``shards.py``)
    allreduce   g <- sum_r g_r, ONE call on ONE flat buffer (``allreduce.py``);
                now every process holds dL/dw of the global batch's mean loss
    apply_update   the same SGD step on every process, so the replicas stay equal

So N processes train the same network as one process with the same seed and batch, up to
float32 rounding of the sums (docs/distributed.md). The trainer does not know: it calls
``submit_step(x, labels)`` with the global batch and gets the global batch's ``StepResult``
(at once: the Allreduce has already waited for every process, so nothing is left to overlap).
"""

from __future__ import annotations

import hashlib
import math

import numpy as np

from minialexnet.distributed.allreduce import GradientAllreduce
from minialexnet.distributed.dropout_shards import dropout_layers, sharded_dropout
from minialexnet.distributed.shards import Shard, shard_of
from minialexnet.engine import CPUEngine, FinishedStep, StepResult, run_step


class DataParallelEngine:
    """Wrap a local ``engine`` (``CPUEngine``, ``CudaAlexNet``, ...) for data parallelism over
    the processes of ``context`` (``init_context()``).

    The local engine must give each image of a shard its global-batch dropout mask: host
    engines do (``Dropout.shard``); a GPU engine must declare ``follows_dropout_shard = True``
    (its counter-based masks offset by the shard's first row) or have no dropout.
    ``broadcast=True`` copies rank 0's parameters and momentum to every process first, so
    replicas start equal even if they were built differently (e.g. another seed).
    Members: the engine protocol of ``minialexnet.engine``, plus ``context``, ``engine`` (the
    local one), ``last_shard`` (the rows of the last step) and ``check_replicas()``.
    """

    def __init__(self, engine, context, broadcast: bool = True) -> None:
        _check_dropout_follows_shards(engine)
        self.engine, self.context = engine, context
        self.input_size, self.num_classes = engine.input_size, engine.num_classes
        self.last_shard: Shard | None = None
        self._allreduce: GradientAllreduce | None = None
        self._diverged = False  # a submitted step's global loss was not finite (submit_step)
        if broadcast:
            self.broadcast_parameters()

    @property
    def model(self):
        return self.engine.model

    @property
    def optimizer(self):
        return self.engine.optimizer

    def forward_backward(self, x: np.ndarray, labels: np.ndarray) -> StepResult:
        """This process's shard of the global batch ``(x, labels)`` forward and backward, then
        the weighted Allreduce: afterwards ``gradient_arrays()`` hold the global batch's mean
        gradient on every process, and the result is the global batch's (loss, counts)."""
        shard = shard_of(len(labels), self.context.size, self.context.rank)
        self.last_shard = shard
        rows = slice(shard.start, shard.stop)
        with sharded_dropout(self.model, shard):
            local = self.engine.forward_backward(x[rows], labels[rows])
        stats = np.array([shard.weight * local.loss, local.top1_correct, local.top5_correct])
        loss, top1, top5 = self._sum(shard.weight, stats)
        return StepResult(
            float(loss), round(top1), round(top5), shard.global_batch, math.isfinite(loss)
        )

    def _sum(self, weight: float, stats: np.ndarray) -> np.ndarray:
        gradients = self.engine.gradient_arrays()
        if any(g is None for g in gradients):  # no backward yet (a non-finite first loss)
            gradients = [
                np.zeros(p.shape, dtype=np.float32) for _, p, _ in self.model.named_parameters()
            ]
        if self._allreduce is None:
            self._allreduce = GradientAllreduce(gradients, self.context)
        return self._allreduce(gradients, weight, stats)

    def apply_update(self) -> None:
        self.engine.apply_update()

    def train_step(self, x: np.ndarray, labels: np.ndarray) -> StepResult:
        """``forward_backward`` then, if the *global* loss is finite, ``apply_update``. A
        non-finite loss on any process is non-finite in the sum, so all skip the update."""
        return run_step(self, x, labels)

    def submit_step(self, x: np.ndarray, labels: np.ndarray) -> FinishedStep:
        """``train_step`` at once, except that after a submitted step whose global loss was
        not finite no process updates until ``load_from_host()`` (``minialexnet.engine``);
        every process sees the same global loss, so all stop together."""
        step = run_step(self, x, labels, halted=self._diverged)
        self._diverged = not step.updated
        return FinishedStep(step)

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        """The local replica's logits of ``x`` (no communication; see ``validation.py`` for
        an evaluation split among the processes)."""
        return self.engine.forward(x, train=train)

    def gradient_arrays(self) -> list:
        return self.engine.gradient_arrays()

    def sync_to_host(self) -> None:
        self.engine.sync_to_host()

    def load_from_host(self) -> None:
        """The local engine's ``load_from_host``; clears a divergence of ``submit_step``."""
        self._diverged = False
        self.engine.load_from_host()

    def close(self) -> None:
        self.engine.close()

    def __enter__(self) -> DataParallelEngine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def broadcast_parameters(self) -> None:
        """Overwrite every process's parameters and momentum with rank 0's."""
        self.engine.sync_to_host()
        for array in _replica_arrays(self.engine):
            self.context.broadcast(array)
        self.engine.load_from_host()

    def check_replicas(self) -> None:
        """Raise ``RuntimeError`` on every process unless all hold bit-identical parameters,
        momentum and generator states (cheap enough once per epoch: one hash each)."""
        self.engine.sync_to_host()
        digest = hashlib.sha256()
        for array in _replica_arrays(self.engine):
            digest.update(np.ascontiguousarray(array).tobytes())
        digest.update(repr(self.model.rng.bit_generator.state).encode())
        mine = np.frombuffer(digest.digest(), dtype=np.uint8).astype(np.int64)
        main = mine.copy()
        self.context.broadcast(main)
        differ = np.array([int(np.any(mine != main))], dtype=np.int64)
        self.context.allreduce_sum(differ)
        if differ[0]:
            raise RuntimeError(
                f"the replicas of {int(differ[0])} of {self.context.size} "
                f"processes differ from rank 0's (parameters, momentum or "
                f"generator): did every process start from the same seed and "
                f"checkpoint?"
            )

    def __repr__(self) -> str:
        return f"DataParallelEngine({self.engine!r}, {self.context!r})"


def _check_dropout_follows_shards(engine) -> None:
    if (
        isinstance(engine, CPUEngine)
        or getattr(engine, "follows_dropout_shard", False)
        or not dropout_layers(engine.model)
    ):
        return
    raise ValueError(
        f"{type(engine).__name__} draws its dropout masks on its own, so in "
        f"data-parallel training every process would give the first images of "
        f"its shard the same masks: train with --dropout 0, or give the engine "
        f"shard-aware masks (offset by the shard's first row) and "
        f"follows_dropout_shard = True"
    )


def _replica_arrays(engine) -> list:
    """The host arrays that make a replica: parameters, then momentum buffers (if any)."""
    arrays = [p for _, p, _ in engine.model.named_parameters()]
    if engine.optimizer is not None:
        arrays += [
            engine.optimizer.velocity[name] for name, _, _ in engine.model.named_parameters()
        ]
    for array in arrays:
        if not array.flags.c_contiguous:
            raise ValueError("data-parallel training needs C-contiguous parameter arrays")
    return arrays
