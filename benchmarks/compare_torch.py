"""A fair CPU comparison of minialexnet and PyTorch: fresh processes, alternating, medians.

    python benchmarks/compare_torch.py [--batch 32] [--rounds 3] [--steps 3] [--threads N]
        [--torch-python PATH] [--memory-batches 32,128,256] [--im2col] [--no-torch]

Every measurement runs in its own fresh interpreter (``--worker``), so neither library
sees the other: ``import minialexnet`` sets ``OMP_WAIT_POLICY=PASSIVE`` for its own OpenMP
threads, and in a shared process that slowed PyTorch's OpenMP threads too. Each side runs
with its own defaults unless ``--threads N`` sets both (printed). The two sides take turns,
``--rounds`` processes each, and the tables show medians over the rounds of each process's
median step.

One step of the paper network (227x227, 1000 classes, dropout on): forward, softmax
cross-entropy, backward (without conv1's dx, which no training step needs, on both sides:
``need_dx=False`` here, an input without ``requires_grad`` there), and SGD with momentum
0.9 and weight decay 5e-4. Reported:

- per layer: forward and backward ms, GFLOP/s, and share of the step, ours next to PyTorch's
  (PyTorch's backward per layer is timed with gradient hooks on every layer's output);
- the step: ms, GFLOP/s (3 x 2 x MACs per image: forward, dW, dx; conv1 2 x 2) and that rate as a
  fraction of the SGEMM rate measured in the same run (4096^3, NumPy's OpenBLAS);
- inference (forward only, no dropout) at the same batch;
- peak resident memory (``ru_maxrss``) of a fresh process after ``MEMORY_STEPS`` training
  steps, per batch in ``--memory-batches``.

Each process first runs ``WARMUP_STEPS`` untimed steps (or forward passes). One is not enough
for a steady state: on the 2-core AMD machine with AVX-512, malloc's heap kept growing into
fresh pages, which the kernel zeroes (2 MiB at a time with transparent huge pages), during the
second and fourth step of our process, adding 40-50 ms to whichever layer first wrote there
(norm1's forward took 47-55 ms instead of 4-5 ms in those steps); with one warm-up step the
median of three steps was such a step. A training run sees them only in its first steps.

PyTorch is optional and never a dependency: ``--torch-python`` names an interpreter that has
it (e.g. a separate venv: ``python3 -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip
install torch numpy``); by default the current interpreter if it can import torch.

This machine's environment may set ``OPENBLAS_CORETYPE`` / ``OPENBLAS_L2_SIZE`` (old OpenBLAS
builds need them on some CPUs); they make NumPy's OpenBLAS pick a slower kernel. To see what
the code can do, run ``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/...``;
the header prints the kernel in use and the load average at the start and the end, and the
last line the CPU time the hypervisor stole meanwhile (Linux): on a shared machine only
compare numbers from one run, and prefer a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
WARMUP_STEPS = 3  # untimed steps per process before the timed ones (see above)
MEMORY_STEPS = 5  # training steps before reading the peak resident memory


# ------------------------------------------------------------------------ our worker
def ours_worker(args) -> dict:
    sys.path.insert(0, ROOT)
    # minialexnet before NumPy, as `python -m minialexnet.train` has it: its import loads
    # NumPy's OpenBLAS with idle workers that sleep at once (minialexnet/__init__.py).
    import minialexnet  # noqa: F401

    # isort: split
    import numpy as np

    from minialexnet.allocator import reuse_freed_memory
    from minialexnet.layers import SoftmaxCrossEntropy
    from minialexnet.model import AlexNet
    from minialexnet.optim import SGD
    from minialexnet.threads import blas_core, blas_threads, set_threads

    if args.threads:
        set_threads(args.threads)
    reuse_freed_memory()  # as CPUEngine does for every training run
    rng = np.random.default_rng(0)
    model = AlexNet(1000, "paper", rng=rng)
    if args.im2col:  # conv2-conv5 as im2col + GEMM instead of the model's Winograd
        for layer in model.layers.values():
            if type(layer).__name__ == "Conv2D":
                layer.algorithm = "im2col"
    optimizer, loss_fn = SGD(model), SoftmaxCrossEntropy()
    x = rng.normal(0, 60, (args.batch, 3, 227, 227)).astype(np.float32)
    labels = rng.integers(0, 1000, args.batch)
    names = list(model.layers)

    def step():
        fwd, bwd, h = {}, {}, x
        for name in names:
            t = time.perf_counter()
            h = model.layers[name].forward(h, train=True)
            fwd[name] = time.perf_counter() - t
        loss_fn.forward(h, labels)
        g = loss_fn.backward()
        for name in reversed(names):
            t = time.perf_counter()
            layer = model.layers[name]
            g = layer.backward(g, need_dx=False) if name == names[0] else layer.backward(g)
            bwd[name] = time.perf_counter() - t
        t = time.perf_counter()
        optimizer.step()
        return fwd, bwd, time.perf_counter() - t

    def infer():
        model.forward(x, train=False)

    shape, macs = (3, 227, 227), {}
    for name in names:
        macs[name] = model.layers[name].macs(shape)
        shape = model.layers[name].output_shape(shape)
    result = run_worker_task(args, step, infer)
    result.update(
        macs=macs,
        blas_core=blas_core(),
        blas_threads=blas_threads(),
        sgemm_gflops=sgemm_rate(np) if args.task == "step" else None,
    )
    return result


# --------------------------------------------------------------------- PyTorch worker
def torch_worker(args) -> dict:
    import torch
    from torch import nn

    if args.threads:
        torch.set_num_threads(args.threads)

    class GroupedLRN(nn.Module):
        """The paper's LRN (sum of squares, alpha 1e-4) within each half of the channels."""

        def __init__(self):
            super().__init__()
            self.lrn = nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0)

        def forward(self, x):
            n, c, h, w = x.shape
            return self.lrn(x.reshape(n * 2, c // 2, h, w)).reshape(n, c, h, w)

    layers = [
        ("conv1", nn.Conv2d(3, 96, 11, 4)),
        ("relu1", nn.ReLU()),
        ("norm1", GroupedLRN()),
        ("pool1", nn.MaxPool2d(3, 2)),
        ("conv2", nn.Conv2d(96, 256, 5, 1, 2, groups=2)),
        ("relu2", nn.ReLU()),
        ("norm2", GroupedLRN()),
        ("pool2", nn.MaxPool2d(3, 2)),
        ("conv3", nn.Conv2d(256, 384, 3, 1, 1)),
        ("relu3", nn.ReLU()),
        ("conv4", nn.Conv2d(384, 384, 3, 1, 1, groups=2)),
        ("relu4", nn.ReLU()),
        ("conv5", nn.Conv2d(384, 256, 3, 1, 1, groups=2)),
        ("relu5", nn.ReLU()),
        ("pool5", nn.MaxPool2d(3, 2)),
        ("flatten", nn.Flatten()),
        ("drop6", nn.Dropout(0.5)),
        ("fc6", nn.Linear(9216, 4096)),
        ("relu6", nn.ReLU()),
        ("drop7", nn.Dropout(0.5)),
        ("fc7", nn.Linear(4096, 4096)),
        ("relu7", nn.ReLU()),
        ("fc8", nn.Linear(4096, 1000)),
    ]
    net = nn.Sequential(*(m for _, m in layers))
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    x = torch.randn(args.batch, 3, 227, 227) * 60
    labels = torch.randint(0, 1000, (args.batch,))

    def step():
        fwd, arrived = {}, {}
        net.train()
        optimizer.zero_grad(set_to_none=True)
        h = x  # no requires_grad: conv1 computes only its weight gradients, as ours does
        for name, module in layers:
            t = time.perf_counter()
            h = module(h)
            fwd[name] = time.perf_counter() - t
            h.register_hook(lambda g, name=name: arrived.__setitem__(name, time.perf_counter()))
        loss = nn.functional.cross_entropy(h, labels)
        loss.backward()
        arrived["input"] = time.perf_counter()  # conv1's backward ended with the whole pass
        # Layer i's backward runs from its output's gradient to its input's gradient.
        order = ["input"] + [name for name, _ in layers]
        bwd = {order[i]: arrived[order[i - 1]] - arrived[order[i]] for i in range(1, len(order))}
        t = time.perf_counter()
        optimizer.step()
        return fwd, bwd, time.perf_counter() - t

    def infer():
        net.eval()
        with torch.no_grad():
            net(x)

    result = run_worker_task(args, step, infer)
    result.update(version=torch.__version__, threads=torch.get_num_threads())
    return result


# ------------------------------------------------------------------- shared by workers
def run_worker_task(args, step, infer) -> dict:
    if args.task == "memory":
        for _ in range(MEMORY_STEPS):
            step()
        return {"maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if args.task == "infer":
        for _ in range(WARMUP_STEPS):
            infer()
        times = []
        for _ in range(args.steps):
            t = time.perf_counter()
            infer()
            times.append(time.perf_counter() - t)
        return {"infer_s": statistics.median(times)}
    for _ in range(WARMUP_STEPS):  # compile, caches, buffers, malloc's heap at full size
        step()
    steps = []
    for _ in range(args.steps):
        t = time.perf_counter()
        fwd, bwd, sgd = step()
        steps.append((time.perf_counter() - t, fwd, bwd, sgd))
    total, fwd, bwd, sgd = sorted(steps, key=lambda s: s[0])[len(steps) // 2]  # the median
    return {"step_s": total, "forward_s": fwd, "backward_s": bwd, "sgd_s": sgd}


def sgemm_rate(np) -> float:
    a = np.random.default_rng(0).standard_normal((4096, 4096), dtype=np.float32)
    a @ a
    best = min(_timed(lambda: a @ a) for _ in range(3))
    return 2 * 4096**3 / best / 1e9


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


# ---------------------------------------------------------------------------- driver
def spawn(python, side, task, args, batch) -> dict:
    command = [
        python,
        os.path.abspath(__file__),
        "--worker",
        side,
        "--task",
        task,
        "--batch",
        str(batch),
        "--steps",
        str(args.steps),
    ]
    command += ["--threads", str(args.threads)] if args.threads else []
    command += ["--im2col"] if args.im2col else []
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=False)
    if done.returncode:
        raise RuntimeError(f"{side} {task} worker failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def torch_interpreter(args) -> str | None:
    if args.no_torch:
        return None
    python = args.torch_python or sys.executable
    probe = subprocess.run([python, "-c", "import torch"], capture_output=True, check=False)
    if probe.returncode:
        print(f"PyTorch not importable by {python}: timing ours only (see --torch-python)")
        return None
    return python


def median_of(results, key):
    return statistics.median(r[key] for r in results)


def layer_medians(results, key):
    return {name: statistics.median(r[key][name] for r in results) for name in results[0][key]}


def report_step(ours, theirs, batch):
    macs = ours[0]["macs"]
    first = next(iter(macs))
    flop = {name: (2 if name == first else 3) * 2 * batch * m for name, m in macs.items()}
    step_flop = sum(flop.values())
    sgemm = median_of(ours, "sgemm_gflops")
    o_f, o_b = layer_medians(ours, "forward_s"), layer_medians(ours, "backward_s")
    o_step = median_of(ours, "step_s")
    if theirs:
        t_f, t_b = layer_medians(theirs, "forward_s"), layer_medians(theirs, "backward_s")
        t_step = median_of(theirs, "step_s")
    print(f"\nTraining step, batch {batch} (ms; GFLOP/s; share of the step)")
    print(
        f"{'layer':9} {'ours fwd':>9} {'bwd':>8} {'GFLOP/s':>8} {'share':>6}"
        + (
            f" | {'torch fwd':>9} {'bwd':>8} {'GFLOP/s':>8} {'share':>6} {'ours/torch':>10}"
            if theirs
            else ""
        )
    )
    for name in o_f:
        ours_s = o_f[name] + o_b[name]
        line = (
            f"{name:9} {1e3 * o_f[name]:9.1f} {1e3 * o_b[name]:8.1f} "
            f"{_rate(flop[name], ours_s):>8} {ours_s / o_step:6.1%}"
        )
        if theirs and name in t_f:
            theirs_s = t_f[name] + t_b[name]
            line += (
                f" | {1e3 * t_f[name]:9.1f} {1e3 * t_b[name]:8.1f} "
                f"{_rate(flop[name], theirs_s):>8} {theirs_s / t_step:6.1%} "
                f"{ours_s / theirs_s:9.2f}x"
            )
        print(line)
    print(
        f"{'sgd':9} {1e3 * median_of(ours, 'sgd_s'):9.1f}"
        + (f" {'':>24} | {1e3 * median_of(theirs, 'sgd_s'):9.1f}" if theirs else "")
    )
    print(
        f"step: ours {1e3 * o_step:.0f} ms = {step_flop / o_step / 1e9:.0f} GFLOP/s = "
        f"{step_flop / o_step / 1e9 / sgemm:.0%} of SGEMM ({sgemm:.0f} GFLOP/s)"
    )
    if theirs:
        print(
            f"      PyTorch {1e3 * t_step:.0f} ms = {step_flop / t_step / 1e9:.0f} GFLOP/s = "
            f"{step_flop / t_step / 1e9 / sgemm:.0%} of SGEMM;  ours/PyTorch = "
            f"{o_step / t_step:.2f}x"
        )


def _rate(flop, seconds):
    return f"{flop / seconds / 1e9:.0f}" if flop else "-"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="fresh processes per side")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per process")
    parser.add_argument("--threads", type=int, default=0, help="0: each library's default")
    parser.add_argument("--torch-python", default=None)
    parser.add_argument("--memory-batches", default="32,128,256")
    parser.add_argument(
        "--im2col", action="store_true", help="conv2-5 through im2col, not Winograd"
    )
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--memory-only", action="store_true", help="skip the timings")
    parser.add_argument("--worker", choices=("ours", "torch"), help=argparse.SUPPRESS)
    parser.add_argument(
        "--task", choices=("step", "infer", "memory"), default="step", help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.worker:
        result = (ours_worker if args.worker == "ours" else torch_worker)(args)
        print(json.dumps(result))
        return 0

    torch_python = torch_interpreter(args)
    stolen_at_start, start = stolen_seconds(), time.perf_counter()
    print(
        f"load average at start: {os.getloadavg()}; {os.cpu_count()} CPUs; threads: "
        f"{args.threads or 'each library its default'}; "
        + ", ".join(
            f"{v}={os.environ.get(v, 'unset')}"
            for v in (
                "OPENBLAS_CORETYPE",
                "OPENBLAS_L2_SIZE",
                "OPENBLAS_NUM_THREADS",
                "OMP_NUM_THREADS",
                "OMP_WAIT_POLICY",
            )
        )
    )
    if not args.memory_only:
        report_times(args, torch_python)
    report_memory(args, torch_python)
    print(f"load average at end: {os.getloadavg()}")
    if stolen_at_start is not None:
        stolen = stolen_seconds() - stolen_at_start
        cpu_seconds = (time.perf_counter() - start) * os.cpu_count()
        print(
            f"CPU time stolen by the hypervisor during the run: {stolen:.1f} s of "
            f"{cpu_seconds:.0f} CPU-seconds ({100 * stolen / cpu_seconds:.1f}%)"
        )
    return 0


def stolen_seconds() -> float | None:
    """CPU time the hypervisor has given to other guests since boot, summed over this
    machine's CPUs ("steal" in /proc/stat), or None off Linux. On a shared virtual machine
    this is the time our threads were ready to run but had no core: a run with much of it
    measured the neighbours as much as the code (seen here: per-layer times 30% apart
    between runs, single Numba kernels 2x apart from call to call)."""
    try:
        with open("/proc/stat") as stat:
            fields = stat.readline().split()
        return int(fields[8]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def report_times(args, torch_python) -> None:
    results = {"ours": {}, "torch": {}}
    for task in ("step", "infer"):
        for _ in range(args.rounds):  # alternate: noise hits both sides
            results["ours"].setdefault(task, []).append(
                spawn(sys.executable, "ours", task, args, args.batch)
            )
            if torch_python:
                results["torch"].setdefault(task, []).append(
                    spawn(torch_python, "torch", task, args, args.batch)
                )
    ours, theirs = results["ours"], results["torch"]
    print(
        f"NumPy's OpenBLAS kernel: {ours['step'][0]['blas_core']} "
        f"({ours['step'][0]['blas_threads']} threads)"
        + (
            f"; PyTorch {theirs['step'][0]['version']} ({theirs['step'][0]['threads']} threads)"
            if torch_python
            else ""
        )
    )
    report_step(ours["step"], theirs.get("step"), args.batch)
    o_inf = median_of(ours["infer"], "infer_s")
    line = f"inference, batch {args.batch}: ours {1e3 * o_inf:.0f} ms"
    if torch_python:
        t_inf = median_of(theirs["infer"], "infer_s")
        line += f", PyTorch {1e3 * t_inf:.0f} ms, ours/PyTorch = {o_inf / t_inf:.2f}x"
    print(line)


def report_memory(args, torch_python) -> None:
    print(f"\nPeak resident memory of a fresh process after {MEMORY_STEPS} training steps (MB)")
    for batch in (int(b) for b in args.memory_batches.split(",") if b):
        ours_mb = spawn(sys.executable, "ours", "memory", args, batch)["maxrss_mb"]
        line = f"  batch {batch:4}: ours {ours_mb:7.0f}"
        if torch_python:
            theirs_mb = spawn(torch_python, "torch", "memory", args, batch)["maxrss_mb"]
            line += f"   PyTorch {theirs_mb:7.0f}   ours/PyTorch {ours_mb / theirs_mb:.2f}x"
        print(line)


if __name__ == "__main__":
    sys.exit(main())
