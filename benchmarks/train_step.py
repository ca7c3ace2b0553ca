"""Time one whole training step of AlexNet: ours (NumPy + Numba) vs PyTorch CPU.

    python benchmarks/train_step.py [--arch paper] [--batch 32] [--repeats 5] [--warmup 2]
                                    [--backend numba] [--threads N] [--no-torch]

One step = ``forward(x, train=True)`` of the 227x227 paper network (docs/design.md §3, 60,965,224
parameters, dropout on; ``--arch mini``: the 59x59 network of the default training run, 10
classes), the softmax cross-entropy, ``backward``, and the §5 SGD update
(momentum 0.9, weight decay 0.0005) of every parameter -- what ``minialexnet.training.fit``
does per batch, without the data loading.

The PyTorch peer is the same network: ``Conv2d(..., groups=2)`` for conv2/4/5, and the
paper's LRN as ``torch.nn.LocalResponseNorm(5, alpha=1e-4 * 5, beta=0.75, k=2)`` (PyTorch
averages the squares over the window, the paper sums them) applied to each half of the
channels separately (groups=2). It starts from our weights, and the two forward passes
(without dropout) are compared once to show that they compute the same function. Its SGD is
``torch.optim.SGD(momentum=0.9, weight_decay=5e-4)``: the same work per parameter.

The two implementations take turns step by step, so load from other processes on a shared
machine spreads over both columns; the table shows medians. On a machine shared with other
busy processes, two-thread runs suffer badly (threads wait for each other at every parallel
region while one of them is descheduled); ``OPENBLAS_NUM_THREADS=1 ... --threads 1`` then
gives steadier numbers. ``OPENBLAS_CORETYPE`` /
``OPENBLAS_L2_SIZE`` in the environment can make NumPy pick a slower kernel (see
benchmarks/layers.py); run with ``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE`` to see
what the code can do. ``OMP_WAIT_POLICY=ACTIVE`` in the environment brings back the spinning
OpenMP workers that ``import minialexnet`` turns off (its docstring says why); the difference
is largest for the small layers of ``--arch mini``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from minialexnet import set_backend  # noqa: E402
from minialexnet.layers import SoftmaxCrossEntropy  # noqa: E402
from minialexnet.model import AlexNet  # noqa: E402
from minialexnet.optim import SGD  # noqa: E402


def our_step(model, optimizer, x, labels):
    loss_fn = SoftmaxCrossEntropy()

    def step():
        loss = loss_fn.forward(model.forward(x, train=True), labels)
        model.backward(loss_fn.backward())
        optimizer.step()
        return loss

    return step


def torch_model(model):
    """The same network in PyTorch, with our parameters copied in."""
    import torch
    from torch import nn

    class GroupedLRN(nn.Module):
        """The paper's LRN inside each of ``groups`` channel blocks (each GPU's maps)."""

        def __init__(self, ours):
            super().__init__()
            self.groups = ours.groups
            self.lrn = nn.LocalResponseNorm(
                ours.size, alpha=ours.alpha * ours.size, beta=ours.beta, k=ours.k
            )

        def forward(self, x):
            n, c, h, w = x.shape
            return self.lrn(x.reshape(n * self.groups, c // self.groups, h, w)).reshape(n, c, h, w)

    modules = []
    for name, layer in model.layers.items():
        kind = type(layer).__name__
        if kind == "Conv2D":
            m = nn.Conv2d(
                layer.in_channels,
                layer.out_channels,
                (layer.kernel_h, layer.kernel_w),
                stride=layer.stride,
                padding=layer.padding,
                groups=layer.groups,
            )
        elif kind == "Linear":
            out_features, in_features = layer.params["W"].shape
            m = nn.Linear(in_features, out_features)
        elif kind == "ReLU":
            m = nn.ReLU()
        elif kind == "LocalResponseNorm":
            m = GroupedLRN(layer)
        elif kind == "MaxPool2D":
            m = nn.MaxPool2d(layer.kernel_size, layer.stride)
        elif kind == "Dropout":
            m = nn.Dropout(layer.p)
        elif kind == "Flatten":
            m = nn.Flatten()
        else:
            raise ValueError(f"no PyTorch twin for {name} ({kind})")
        if layer.params:
            with torch.no_grad():
                m.weight.copy_(torch.from_numpy(layer.params["W"]))
                m.bias.copy_(torch.from_numpy(layer.params["b"]))
        modules.append(m)
    return nn.Sequential(*modules)


def torch_step(net, x, labels):
    import torch

    xt, yt = torch.from_numpy(x), torch.from_numpy(labels)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)

    def step():
        net.train()
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(net(xt), yt)
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", choices=("paper", "mini"), default="paper")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--backend", choices=("numba", "numpy"), default="numba")
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count(),
        help="PyTorch and Numba threads (set OPENBLAS_NUM_THREADS to the same "
        "number in the environment for NumPy's GEMMs)",
    )
    args = parser.parse_args(argv)
    import numba

    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))

    set_backend(args.backend)
    rng = np.random.default_rng(0)
    num_classes = 1000 if args.arch == "paper" else 10
    model = AlexNet(num_classes, args.arch, rng=rng)
    size = model.input_size
    x = rng.normal(0, 60, (args.batch, 3, size, size)).astype(np.float32)
    labels = rng.integers(0, num_classes, args.batch)
    steps = {}
    if not args.no_torch:
        try:
            import torch
        except ImportError:
            print("PyTorch not installed: timing ours only")
        else:
            torch.set_num_threads(args.threads)
            net = torch_model(model)
            net.eval()
            with torch.no_grad():
                theirs = net(torch.from_numpy(x[:4])).numpy()
            ours = model.forward(x[:4], train=False)
            diff = np.abs(ours - theirs).max() / np.abs(theirs).max()
            print(f"forward check vs PyTorch (no dropout): max|diff|/max|logit| = {diff:.1e}")
            steps[f"PyTorch {torch.__version__} CPU"] = torch_step(net, x, labels)
    # Ours last in construction (its SGD owns buffers of our model only).
    steps[f"minialexnet ({args.backend})"] = our_step(model, SGD(model), x, labels)

    times = {name: [] for name in steps}
    for i in range(args.warmup + args.repeats):
        for name, step in steps.items():  # take turns: shared-machine noise spreads
            start = time.perf_counter()
            step()
            if i >= args.warmup:
                times[name].append(time.perf_counter() - start)

    print(
        f"\nAlexNet ({args.arch}), batch {args.batch}, forward + backward + SGD, median of "
        f"{args.repeats} steps ({args.threads} threads of {os.cpu_count()} CPUs, "
        f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}, "
        f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', 'unset')}, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')})"
    )
    ref = None
    for name, t in times.items():
        med = statistics.median(t)
        ref = ref or med
        print(
            f"  {name:<28} {1e3 * med:9.1f} ms/step  {args.batch / med:7.1f} img/s  "
            f"{med / ref:5.2f}x  (min {1e3 * min(t):.1f} ms)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
