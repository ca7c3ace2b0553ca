"""Data-parallel training speed for 1 and N processes, and what the Allreduce costs.

    python benchmarks/scaling.py [--arch paper] [--batch 32] [--steps 3] [--warmup 1]
                                 [--processes 1,2]

For each process count k this starts ``mpiexec -n k`` (the one beside this Python; k = 1 runs
plainly, without MPI) of this script in worker mode. Each worker trains ``--steps`` timed
steps (after ``--warmup`` untimed ones) of the network on random images with the global batch
``--batch`` split among the processes (``DataParallelEngine`` over a ``CPUEngine``), and
reports:

- images/s of the whole job (global batch / median step time);
- the time the step spends in the gradient Allreduce (including waiting for the slowest
  process) and its share of the step;
- the time of one bare Allreduce of all the gradients (the paper net: 60,965,224 float32,
  244 MB), measured after a barrier, so without the waiting.

The CPU threads are split among the processes (``cores // k`` Numba/OpenMP/BLAS threads
each), so k processes on one machine use the same cores as one. On one machine no speed-up is
expected: the point is the overhead. The table ends with the load average
(``os.getloadavg``) because on a shared machine the other processes' load moves the numbers.
See docs/distributed.md for the model of many machines.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, REPO)


def worker(args) -> None:
    from minialexnet.distributed import DataParallelEngine, init_context
    from minialexnet.engine import CPUEngine
    from minialexnet.model import AlexNet
    from minialexnet.optim import SGD

    context = init_context()
    model = AlexNet(1000 if args.arch == "paper" else 10, args.arch, rng=np.random.default_rng(0))
    engine = CPUEngine(model, SGD(model, lr=1e-4))
    in_allreduce = [0.0]
    if context.size > 1:
        engine = DataParallelEngine(engine, context)
        plain_sum = context.allreduce_sum

        def timed_sum(buffer):
            start = time.perf_counter()
            plain_sum(buffer)
            in_allreduce[0] += time.perf_counter() - start

        context.allreduce_sum = timed_sum
    rng = np.random.default_rng(1)
    size = model.input_size
    x = rng.standard_normal((args.batch, 3, size, size), dtype=np.float32) * 50
    labels = rng.integers(0, model.num_classes, args.batch)
    steps, shares = [], []
    for i in range(args.warmup + args.steps):
        context.barrier()
        in_allreduce[0] = 0.0
        start = time.perf_counter()
        engine.train_step(x, labels)
        seconds = time.perf_counter() - start
        if i >= args.warmup:
            steps.append(seconds)
            shares.append(in_allreduce[0])
    bare = float("nan")
    if context.size > 1:
        buffer = np.ones(sum(p.size for _, p, _ in model.named_parameters()), np.float32)
        times = []
        for _ in range(3):
            context.barrier()
            start = time.perf_counter()
            plain_sum(buffer)
            times.append(time.perf_counter() - start)
        bare = statistics.median(times)
    if context.is_main:
        step = statistics.median(steps)
        print(
            json.dumps(
                {
                    "processes": context.size,
                    "step_s": step,
                    "images_per_s": args.batch / step,
                    "allreduce_in_step_s": statistics.median(shares),
                    "bare_allreduce_s": bare,
                    "megabytes": 4 * sum(p.size for _, p, _ in model.named_parameters()) / 1e6,
                }
            ),
            flush=True,
        )


def run(args) -> None:
    cores = os.cpu_count() or 1
    rows = []
    for k in args.processes:
        threads = str(max(1, cores // k))
        env = dict(
            os.environ,
            NUMBA_NUM_THREADS=threads,
            OMP_NUM_THREADS=threads,
            OPENBLAS_NUM_THREADS=threads,
            MKL_NUM_THREADS=threads,
        )
        command = [
            sys.executable,
            os.path.abspath(__file__),
            "--worker",
            "--arch",
            args.arch,
            "--batch",
            str(args.batch),
            "--steps",
            str(args.steps),
            "--warmup",
            str(args.warmup),
        ]
        if k > 1:
            mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
            command = [mpiexec, "-n", str(k), *command]
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            sys.exit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(
        f"{args.arch} AlexNet, global batch {args.batch}, {cores} cores, median of "
        f"{args.steps} steps; gradients {rows[0]['megabytes']:.0f} MB"
    )
    print(
        f"{'processes':>9}  {'step s':>7}  {'images/s':>8}  {'Allreduce in step s':>19}  "
        f"{'share':>6}  {'bare Allreduce s':>16}"
    )
    for row in rows:
        share = row["allreduce_in_step_s"] / row["step_s"]
        print(
            f"{row['processes']:>9}  {row['step_s']:>7.2f}  {row['images_per_s']:>8.1f}  "
            f"{row['allreduce_in_step_s']:>19.3f}  {100 * share:>5.1f}%  "
            f"{row['bare_allreduce_s']:>16.3f}"
        )
    print("load average (1, 5, 15 min): " + ", ".join(f"{v:.2f}" for v in os.getloadavg()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="paper", choices=("paper", "mini"))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument(
        "--processes", default="1,2", type=lambda text: [int(k) for k in text.split(",")]
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    worker(args) if args.worker else run(args)


if __name__ == "__main__":
    main()
