"""The programs the MPI tests (tests/test_distributed.py) start under ``mpiexec``.

python tests/distributed_worker.py train OUT.npz BATCH   one epoch of the built-in data,
    "tiny" AlexNet; rank 0 writes the parameters and per-step losses to OUT.npz. Under
    mpiexec with N > 1 processes it trains data-parallel, otherwise with a plain CPUEngine.
python tests/distributed_worker.py fail                  rank 1 raises at step 3
python tests/distributed_worker.py nonfinite OUT.npz     rank 1's shard is NaN at step 2
python tests/distributed_worker.py validate              split validation == one process
python tests/distributed_worker.py cache FOLDER          rank 0 prepares, others wait
python tests/distributed_worker.py fit OUTPUT            two epochs through training.fit,
    "tiny" AlexNet, the run written to the folder OUTPUT (by rank 0 alone), the final
    parameters to OUTPUT/params.npz
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

from minialexnet.data.dataset import compute_stats
from minialexnet.data.loader import BatchLoader
from minialexnet.data.synthetic import make_synthetic
from minialexnet.distributed import (
    DataParallelEngine,
    check_batches,
    count_shard,
    evaluate_split,
    init_context,
    main_only,
    prepared_once,
    stop_all_on_failure,
)
from minialexnet.engine import CPUEngine
from minialexnet.model import AlexNet
from minialexnet.optim import SGD

SEED = 3


def _setup(context, n_per_class: int = 7):
    """The data, a fresh "tiny" network and its engine (data-parallel under MPI)."""
    train = make_synthetic(
        "train", num_classes=10, n_per_class=n_per_class, image_size=32, seed=SEED
    )
    stats = compute_stats(train)
    model = AlexNet(10, "tiny", rng=np.random.default_rng(SEED))
    engine = CPUEngine(model, SGD(model, lr=0.01, momentum=0.9, weight_decay=0.0005))
    if context.size > 1:
        engine = DataParallelEngine(engine, context)
    return train, stats, model, engine


def train(context, out: str, batch_size: int) -> None:
    """One epoch as the trainer runs it: the data generator is the model's (one seed)."""
    data, stats, model, engine = _setup(context)
    check_batches(len(data), batch_size, context.size)
    loader = BatchLoader(data, batch_size, model.input_size, stats, train=True, rng=model.rng)
    losses, counts = [], []
    for x, labels in loader:
        step = engine.train_step(x, labels)
        assert step.updated and step.batch == len(labels), step
        losses.append(step.loss)
        counts.append((step.top1_correct, step.top5_correct))
    if context.size > 1:
        engine.check_replicas()
    if context.is_main:
        np.savez(
            out,
            losses=np.array(losses),
            counts=np.array(counts),
            **{name: p for name, p, _ in model.named_parameters()},
        )


def fail(context) -> None:
    data, stats, model, engine = _setup(context, n_per_class=20)
    loader = BatchLoader(data, 8, model.input_size, stats, train=True, rng=model.rng)
    for step, (x, labels) in enumerate(loader):
        if step == 3 and context.rank == 1:
            raise RuntimeError("rank 1 fails on purpose at step 3")
        engine.train_step(x, labels)
    time.sleep(3600)  # only reached if the failure did not stop this rank


def nonfinite(context, out: str) -> None:
    data, stats, model, engine = _setup(context)
    loader = BatchLoader(data, 10, model.input_size, stats, train=True, rng=model.rng)
    updated = []
    for step, (x, labels) in enumerate(loader):
        if step == 2:
            before = [p.copy() for _, p, _ in model.named_parameters()]
            if context.rank == 1:  # only rank 1's shard turns NaN
                x = np.full_like(x, np.nan)
        result = engine.train_step(x, labels)
        updated.append(result.updated)
        if step == 2:
            unchanged = all(
                np.array_equal(b, p) for b, (_, p, _) in zip(before, model.named_parameters())
            )
            # a file per rank: mpiexec may interleave the processes' standard outputs
            with open(f"{out}.rank{context.rank}.txt", "w") as report:
                report.write(f"rank {context.rank}: step 2 unchanged={unchanged}")
    if context.is_main:
        np.savez(out, updated=np.array(updated))


class ProjectionEngine:
    """An engine whose logits are a fixed random projection of the image: its predictions
    vary from image to image (an untrained "tiny" AlexNet predicts one class for all)."""

    input_size, num_classes = 31, 10

    def __init__(self) -> None:
        self.projection = np.random.default_rng(SEED).standard_normal((3 * 31 * 31, 10))

    def forward(self, x, train=False):
        return (x.reshape(len(x), -1) @ self.projection).astype(np.float32)


def say(context, line: str) -> None:
    """Report a line: to this rank's file in $WORKER_REPORTS when the test gives one (mpiexec
    may cut and interleave the processes' standard outputs), else to standard output."""
    folder = os.environ.get("WORKER_REPORTS")
    if folder is None:
        print(line, flush=True)
        return
    with open(os.path.join(folder, f"rank{context.rank}.txt"), "a") as report:
        report.write(line + "\n")


def validate(context) -> None:
    """Split counts against one process's counts, with varied predictions."""
    data, stats, _, _ = _setup(context)
    engine = ProjectionEngine()
    log = main_only(lambda line: say(context, line), context)
    for crops in ("center", "ten"):
        split = evaluate_split(engine, data, stats, context, batch_size=16, crops=crops)
        whole = count_shard(engine, data, stats, batch_size=16, crops=crops)
        log(f"{crops}: split {tuple(split)} whole {tuple(whole)}")
    say(context, f"rank {context.rank} done")


def cache(context, folder: str) -> None:
    marker = os.path.join(folder, "built")

    def open_data():
        if not os.path.exists(marker):  # "build": slow, and only rank 0 may do it
            time.sleep(1.0)
            with open(os.path.join(folder, f"builder-{context.rank}"), "w"):
                pass
            with open(marker, "w"):
                pass
        return os.path.exists(marker)

    found = prepared_once(open_data, context)
    say(context, f"rank {context.rank} found={found}")


def fit_run(context, output: str) -> None:
    """What ``python -m minialexnet.train`` does under mpiexec: ``fit`` with the context."""
    from minialexnet.training import TrainConfig, fit

    data = make_synthetic("train", num_classes=10, n_per_class=6, image_size=32, seed=SEED)
    val = make_synthetic("val", num_classes=10, n_per_class=2, image_size=32, seed=SEED)
    model = AlexNet(10, "tiny", rng=np.random.default_rng(SEED))
    config = TrainConfig(epochs=2, batch_size=12, lr=0.01, schedule=None, print_freq=2)
    fit(
        model,
        data,
        val,
        config,
        output=output,
        context=context,
        log=lambda line: print(f"rank {context.rank}: {line}", flush=True),
    )
    if context.is_main:
        np.savez(os.path.join(output, "params.npz"), **model.state_dict())


def main(argv: list[str]) -> None:
    context = init_context()
    with stop_all_on_failure(context):
        command, args = argv[0], argv[1:]
        if command == "train":
            train(context, args[0], int(args[1]))
        elif command == "nonfinite":
            nonfinite(context, args[0])
        elif command == "validate":
            validate(context)
        elif command == "cache":
            cache(context, args[0])
        elif command == "fit":
            fit_run(context, args[0])
        elif command == "fail":
            fail(context)
        else:
            raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
