"""Time forward + backward of every AlexNet layer: Numba vs pure NumPy vs PyTorch CPU.

    python benchmarks/layers.py [--batch 32] [--repeats 10] [--warmup 2] [--only conv2,lrn1]
                                [--no-numpy] [--no-torch]

Each layer runs at its place in the paper's network (227x227 input, docs/design.md §3) with a
batch of ``--batch`` images: the conv layers with their groups (conv2, conv4, conv5: 2), the
LRNs with groups=2 (each GPU normalised its own half of the maps, §3.2/§3.3), the three
overlapping max-pools, dropout in training mode, fc6-fc8 and the softmax cross-entropy.

One timed call = ``forward(x, train=True)`` then ``backward(dy)`` with a fixed random ``dy``;
the table shows the median over ``--repeats`` calls after ``--warmup`` untimed calls (which
also pay Numba's compile or cache load). The implementations take turns call by call, so
load from other processes on a shared machine spreads over all columns alike. Every backward
returns ``dx`` -- also for conv1, whose input gradient a network would not need -- and the
PyTorch peer does the same (``x.requires_grad_()``), so the two do the same work.

PyTorch (an optional peer: the column is skipped if ``import torch`` fails) runs with
``torch.set_num_threads(os.cpu_count())``. Its ``LocalResponseNorm`` multiplies alpha by
the *mean* of the squares in the window, ours (the paper's §3.3) the *sum*, so the peer is
built with ``alpha * size``; our ``groups=2`` LRN is the peer applied to the two halves of the
channels (a free reshape to (2N, C/2, H, W)). The forward outputs are compared with the
peer's once (column "max|diff|/max|y|") to show that the two compute the same thing.

OpenBLAS: this machine's environment may set ``OPENBLAS_CORETYPE``/``OPENBLAS_L2_SIZE``
(needed by old OpenBLAS builds on some CPUs) which make a current NumPy choose a slower
kernel. For numbers that show what the code can do, run the benchmark with both unset::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/layers.py

The header prints the OpenBLAS core in use. Timings on a shared machine are noisy: compare
ratios from the same run.
"""

from __future__ import annotations

import argparse
import ctypes
import glob
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import minialexnet  # noqa: E402
from minialexnet.layers import (  # noqa: E402
    Conv2D,
    Dropout,
    Linear,
    LocalResponseNorm,
    MaxPool2D,
    ReLU,
    SoftmaxCrossEntropy,
)

try:
    import torch
except ImportError:  # the peer is optional
    torch = None


@dataclass
class Case:
    """One layer at its AlexNet shape: our layer, the input shape, and a PyTorch twin."""

    name: str
    make: Callable[[], object]  # -> our layer
    input_shape: tuple  # without the batch axis
    torch_make: Callable | None = None  # (our layer) -> torch function x -> y
    loss: bool = False  # SoftmaxCrossEntropy: forward(logits, labels)


def alexnet_cases() -> list[Case]:
    rng = np.random.default_rng(0)
    cases = []

    def conv(name, c, f, k, s, p, g, size):
        cases.append(
            Case(
                name,
                lambda: Conv2D(c, f, k, s, p, g, rng=rng),
                (c, size, size),
                lambda ours: _torch_conv(ours),
            )
        )

    def lrn(name, c, size):
        cases.append(
            Case(
                name,
                lambda: LocalResponseNorm(5, 1e-4, 0.75, 2.0, groups=2),
                (c, size, size),
                _torch_lrn,
            )
        )

    def pool(name, c, size):
        cases.append(
            Case(
                name,
                lambda: MaxPool2D(3, 2),
                (c, size, size),
                lambda ours: torch.nn.MaxPool2d(3, 2),
            )
        )

    def fc(name, i, o):
        cases.append(Case(name, lambda: Linear(i, o, rng=rng), (i,), _torch_linear))

    conv("conv1", 3, 96, 11, 4, 0, 1, 227)
    cases.append(Case("relu1", ReLU, (96, 55, 55), lambda ours: torch.nn.ReLU()))
    lrn("lrn1", 96, 55)
    pool("pool1", 96, 55)
    conv("conv2", 96, 256, 5, 1, 2, 2, 27)
    lrn("lrn2", 256, 27)
    pool("pool2", 256, 27)
    conv("conv3", 256, 384, 3, 1, 1, 1, 13)
    conv("conv4", 384, 384, 3, 1, 1, 2, 13)
    conv("conv5", 384, 256, 3, 1, 1, 2, 13)
    pool("pool5", 256, 13)
    fc("fc6", 9216, 4096)
    cases.append(
        Case(
            "dropout6",
            lambda: Dropout(0.5, rng=np.random.default_rng(1)),
            (4096,),
            lambda ours: torch.nn.Dropout(0.5),
        )
    )
    fc("fc7", 4096, 4096)
    fc("fc8", 4096, 1000)
    cases.append(
        Case(
            "softmax_ce",
            SoftmaxCrossEntropy,
            (1000,),
            lambda ours: torch.nn.CrossEntropyLoss(),
            loss=True,
        )
    )
    return cases


# ------------------------------------------------------------------------ PyTorch twins
def _torch_conv(ours):
    layer = torch.nn.Conv2d(
        ours.in_channels,
        ours.out_channels,
        (ours.kernel_h, ours.kernel_w),
        ours.stride,
        ours.padding,
        groups=ours.groups,
    )
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(ours.params["W"]))
        layer.bias.copy_(torch.from_numpy(ours.params["b"]))
    return layer


def _torch_linear(ours):
    layer = torch.nn.Linear(ours.in_features, ours.out_features)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(ours.params["W"]))
        layer.bias.copy_(torch.from_numpy(ours.params["b"]))
    return layer


def _torch_lrn(ours):
    # torch scales alpha by 1/size (the mean of the squares); ours multiplies the sum (§3.3).
    lrn = torch.nn.LocalResponseNorm(
        ours.size, alpha=ours.alpha * ours.size, beta=ours.beta, k=ours.k
    )
    groups = ours.groups

    def grouped(x):  # each group normalised on its own: (N, C, H, W) -> (N*G, C/G, H, W)
        n, c, h, w = x.shape
        return lrn(x.reshape(n * groups, c // groups, h, w)).reshape(n, c, h, w)

    return grouped


# ----------------------------------------------------------------------------- timing
def _median_ms(
    steps: dict[str, Callable[[], object]], warmup: int, repeats: int
) -> dict[str, float]:
    """Median wall time of each step in ms; the steps take turns (round robin), so a burst
    of load from another process on a shared machine hits all of them alike."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    return {name: 1e3 * statistics.median(t) for name, t in times.items()}


def our_step(case: Case, x: np.ndarray, labels: np.ndarray, backend: str):
    """(step, layer): step() runs forward + backward on ``backend``'s kernels."""
    layer = case.make()
    if case.loss:

        def step():
            with minialexnet.use_backend(backend):
                layer.forward(x, labels)
                return layer.backward()

        return step, layer
    with minialexnet.use_backend(backend):
        y = layer.forward(x, train=True)
    dy = np.random.default_rng(2).standard_normal(y.shape).astype(np.float32)

    def step():
        with minialexnet.use_backend(backend):
            layer.forward(x, train=True)
            return layer.backward(dy)

    return step, layer


def torch_step(case: Case, ours_layer, x: np.ndarray, labels: np.ndarray):
    """(step, forward output) of the PyTorch twin of ``ours_layer``."""
    module = case.torch_make(ours_layer)
    if isinstance(module, torch.nn.Module):
        module.train()
    xt = torch.from_numpy(x.copy()).requires_grad_()
    if case.loss:
        lt = torch.from_numpy(labels)
        with torch.no_grad():
            first = np.array(module(xt, lt).item())

        def step():
            xt.grad = None
            module(xt, lt).backward()

        return step, first
    with torch.no_grad():
        first = module(xt).numpy()
    dy = torch.from_numpy(np.random.default_rng(2).standard_normal(first.shape).astype(np.float32))

    def step():
        xt.grad = None
        if isinstance(module, torch.nn.Module):
            module.zero_grad(set_to_none=True)
        module(xt).backward(dy)

    return step, first


def _openblas_core() -> str:
    """The OpenBLAS kernel family NumPy runs (best effort; 'unknown' if it cannot tell)."""
    libs = glob.glob(os.path.join(os.path.dirname(np.__file__), "..", "numpy.libs", "*openblas*"))
    for path in libs:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for symbol in (
            "scipy_openblas_get_corename64_",
            "scipy_openblas_get_corename",
            "openblas_get_corename64_",
            "openblas_get_corename",
        ):
            fn = getattr(lib, symbol, None)
            if fn is not None:
                fn.restype = ctypes.c_char_p
                return fn().decode()
    return "unknown"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--only", default="", help="comma-separated layer names, e.g. conv2,lrn1")
    parser.add_argument("--no-numpy", action="store_true", help="skip the pure-NumPy backend")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch column")
    args = parser.parse_args(argv)

    cases = alexnet_cases()
    if args.only:
        wanted = {name.strip() for name in args.only.split(",")}
        unknown = wanted - {case.name for case in cases}
        if unknown:
            parser.error(
                f"unknown layer(s) {sorted(unknown)}; choose from {[case.name for case in cases]}"
            )
        cases = [case for case in cases if case.name in wanted]
    use_torch = torch is not None and not args.no_torch
    cores = os.cpu_count() or 1

    import numba

    print(
        f"# AlexNet layers, forward+backward, batch {args.batch}, median of {args.repeats} "
        f"after {args.warmup} warm-up calls"
    )
    print(
        f"# {platform.processor() or platform.machine()}, {cores} cores; NumPy "
        f"{np.__version__} (OpenBLAS core {_openblas_core()}, OPENBLAS_CORETYPE="
        f"{os.environ.get('OPENBLAS_CORETYPE', 'unset')}); Numba {numba.__version__} "
        f"({numba.get_num_threads()} threads)"
    )
    if use_torch:
        torch.set_num_threads(cores)
        print(f"# PyTorch {torch.__version__} CPU, torch.set_num_threads({cores})")
    else:
        print("# PyTorch not installed (or --no-torch): no peer column")
    print()

    header = ["layer", "input", "numba ms"]
    if not args.no_numpy:
        header.append("numpy ms")
    if use_torch:
        header += ["torch ms", "numba/torch"]
        if not args.no_numpy:
            header.append("numpy/torch")
        header.append("max|diff|/max|y|")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))

    totals = {"numba": 0.0, "numpy": 0.0, "torch": 0.0}
    rng = np.random.default_rng(0)
    for case in cases:
        shape = (args.batch, *case.input_shape)
        x = rng.standard_normal(shape).astype(np.float32)
        if case.name == "conv1":
            x *= 50.0  # mean-subtracted pixels are O(50), not O(1)
        labels = rng.integers(0, shape[-1], size=args.batch).astype(np.int64)

        steps = {"numba": our_step(case, x, labels, "numba")[0]}
        if not args.no_numpy:
            steps["numpy"] = our_step(case, x, labels, "numpy")[0]
        if use_torch:
            ours = case.make()  # a fresh layer; the peer copies its weights
            steps["torch"], y_torch = torch_step(case, ours, x, labels)
        ms = _median_ms(steps, args.warmup, args.repeats)
        for name, value in ms.items():
            totals[name] += value

        row = [case.name, "x".join(map(str, shape)), f"{ms['numba']:.1f}"]
        if not args.no_numpy:
            row.append(f"{ms['numpy']:.1f}")
        if use_torch:
            row += [f"{ms['torch']:.1f}", f"{ms['numba'] / ms['torch']:.2f}"]
            if not args.no_numpy:
                row.append(f"{ms['numpy'] / ms['torch']:.2f}")
            if case.name.startswith("dropout"):
                row.append("(random)")
            else:
                y_check = np.array(ours.forward(x, labels) if case.loss else ours.forward(x))
                scale = max(float(np.abs(y_torch).max()), 1e-30)
                row.append(f"{np.abs(y_check - y_torch).max() / scale:.1e}")
        print("| " + " | ".join(row) + " |", flush=True)

    total = ["total", "", f"{totals['numba']:.1f}"]
    if not args.no_numpy:
        total.append(f"{totals['numpy']:.1f}")
    if use_torch:
        total += [f"{totals['torch']:.1f}", f"{totals['numba'] / totals['torch']:.2f}"]
        if not args.no_numpy:
            total.append(f"{totals['numpy'] / totals['torch']:.2f}")
        total.append("")
    print("| " + " | ".join(total) + " |")
    print("\nratio < 1: ours is faster than PyTorch CPU.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
