"""GPU throughput: our SGEMM at AlexNet's shapes, and whole training steps, vs PyTorch CUDA.

    python benchmarks/gpu.py [--batch 128] [--steps 20] [--variant paper] [--no-torch]
    python benchmarks/gpu.py --simulate        # tiny shapes under the CUDA simulator (no GPU)

Three tables (float32 throughout; PyTorch with TF32 off in cuBLAS and cuDNN, so both sides
do IEEE single-precision arithmetic, as the paper's GTX 580s did):

1. **SGEMM** at every GEMM of a training step of the network at ``--batch`` (the exact
   ``GemmPlan`` objects ``CudaAlexNet`` runs: conv forward ``W_g @ cols_g``, weight gradient
   ``dY_g @ cols_g^T``, input gradient ``W_g^T @ dY_g``; fc ``x @ W^T``, ``dy^T @ x``,
   ``dy @ W``): milliseconds, GFLOP/s, and the same product with ``torch.matmul`` (cuBLAS),
   whose ratio places our kernel on the SGEMM ladder in docs/numba.md.
2. **Training step** of the whole network (forward, loss, backward, §5 SGD update), images
   per second: ``CudaAlexNet`` (one device) with the batch already on the GPU and, apart,
   with the host-to-device copy of the batch that ``train_step`` does for host arrays; the
   two-tower split of §3.2 (``minialexnet.gpu.CudaTwoTowerAlexNet``)
   (the same ``train_step`` API); and PyTorch (cuDNN) on the same architecture.
3. A check that both networks compute the same function: the max difference of their logits
   on one batch, with PyTorch loaded with our weights.

Timing: a warm-up (numba-cuda compiles every kernel on first use: tens of seconds), then the
median over ``--steps`` steps, each bracketed by CUDA events. The run stops early, with what
it has, if it approaches ``--budget`` seconds (default 420, under the 8 minutes a device
session allows). Without a GPU it refuses with a message, except with ``--simulate``, which
runs the "tiny" variant at batch 2 under the CUDA simulator to check the script itself (its
times say nothing about a GPU).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=128, help="images per step (paper: 128)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    parser.add_argument("--variant", default="paper", help="paper, mini or tiny")
    parser.add_argument("--num-classes", type=int, default=1000)
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch peer")
    parser.add_argument(
        "--budget",
        type=float,
        default=420.0,
        help="stop starting new measurements after this many seconds",
    )
    parser.add_argument(
        "--simulate",
        action="store_true",
        help="run tiny shapes under the CUDA simulator (checks the script)",
    )
    args = parser.parse_args(argv)
    if args.simulate:
        args.variant, args.batch, args.steps, args.num_classes = "tiny", 2, 1, 6
    return args


class Clock:
    """Times device work: CUDA events on a GPU (what the device spent), the wall clock under
    the simulator (whose events record nothing)."""

    def __init__(self, cuda, simulated: bool) -> None:
        self.cuda, self.simulated = cuda, simulated

    def ms(self, work, repeats: int) -> float:
        """Median milliseconds of ``work()`` over ``repeats`` calls."""
        times = []
        for _ in range(repeats):
            if self.simulated:
                start = time.perf_counter()
                work()
                self.cuda.synchronize()
                times.append(1e3 * (time.perf_counter() - start))
                continue
            begin, end = self.cuda.event(), self.cuda.event()
            begin.record()
            work()
            end.record()
            end.synchronize()
            times.append(self.cuda.event_elapsed_time(begin, end))
        return statistics.median(times)


def load_torch(wanted: bool):
    """PyTorch with CUDA, TF32 off; or (None, reason)."""
    if not wanted:
        return None, "skipped (--no-torch)"
    try:
        import torch
    except ImportError:
        return None, "skipped (PyTorch is not installed)"
    if not torch.cuda.is_available():
        return None, f"skipped (PyTorch {torch.__version__} sees no CUDA device)"
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    return torch, f"PyTorch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}"


# -- 1. SGEMM ---------------------------------------------------------------------------------


def gemm_table(gpu, batch, clock, torch, repeats, deadline) -> None:
    from numba import cuda

    print(
        f"\n1. SGEMM at every GEMM of one training step (batch {batch}); "
        f"cuBLAS = torch.matmul, FP32, TF32 off"
    )
    print(
        f"{'layer':<7}{'product':<12}{'batch':>6}{'M':>8}{'N':>9}{'K':>9}  {'tile':<14}"
        f"{'split':>5}{'ms':>9}{'GFLOP/s':>10}{'cuBLAS':>10}{'ratio':>7}"
    )
    total_ms = total_flop = total_cublas_ms = 0.0
    rng = np.random.default_rng(0)
    for name, layer in gpu.layers.items():
        if name == "conv1":
            products = {k: v for k, v in layer.gemm_plans(batch).items() if k != "grad_cols"}
        else:
            products = layer.gemm_plans(batch)
        for product, plan in products.items():
            if time.perf_counter() > deadline:
                print("   (time budget reached: remaining products skipped)")
                return
            a_host = rng.standard_normal(plan.a_shape, dtype=np.float32)
            b_host = rng.standard_normal(plan.b_shape, dtype=np.float32)
            a, b = cuda.to_device(a_host), cuda.to_device(b_host)
            c = cuda.device_array(plan.out_shape, dtype=np.float32)
            plan(a, b, c)  # compile + warm up
            ms = clock.ms(lambda: plan(a, b, c), repeats)  # noqa: B023 (called at once)
            gflops = plan.flops / ms / 1e6
            cublas = ""
            ratio = ""
            if torch is not None:
                ta = torch.from_numpy(a_host).cuda()
                tb = torch.from_numpy(b_host).cuda()
                opa = ta.transpose(-1, -2) if plan.trans_a else ta
                opb = tb.transpose(-1, -2) if plan.trans_b else tb
                torch.matmul(opa, opb)
                torch.cuda.synchronize()
                t_ms = torch_ms(torch, lambda: torch.matmul(opa, opb), repeats)  # noqa: B023
                cublas = f"{plan.flops / t_ms / 1e6:10.0f}"
                ratio = f"{t_ms / ms:7.2f}"
                total_cublas_ms += t_ms
                # The same numbers as cuBLAS (relative to the size of the result).
                err = float(
                    (torch.from_numpy(c.copy_to_host()).cuda() - torch.matmul(opa, opb))
                    .abs()
                    .max()
                ) / max(float(torch.matmul(opa, opb).abs().max()), 1e-30)
                if err > 1e-4:
                    ratio += f"  (max rel diff {err:.1e}!)"
            t = plan.tile
            print(
                f"{name:<7}{product:<12}{plan.batch:>6}{plan.m:>8}{plan.n:>9}{plan.k:>9}  "
                f"{f'{t.block_m}x{t.block_n}/{t.thread_m}x{t.thread_n}':<14}"
                f"{plan.slices:>5}{ms:9.3f}{gflops:10.0f}{cublas:>10}{ratio:>7}"
            )
            total_ms += ms
            total_flop += plan.flops
    line = f"{'total':<69}{total_ms:9.2f}{total_flop / total_ms / 1e6:10.0f}"
    if torch is not None and total_cublas_ms:
        line += f"{total_flop / total_cublas_ms / 1e6:10.0f}{total_cublas_ms / total_ms:7.2f}"
    print(line)


def torch_ms(torch, work, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        begin = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        begin.record()
        work()
        end.record()
        end.synchronize()
        times.append(begin.elapsed_time(end))
    return statistics.median(times)


# -- 2. training steps ------------------------------------------------------------------------


def torch_alexnet(torch, model):
    """The same layers in PyTorch, loaded with ``model``'s weights.

    torch's LocalResponseNorm multiplies alpha by the mean of the squares, ours (§3.3) the
    sum: alpha * size. A groups=2 LRN is torch's LRN on the two halves of the channels (a
    free reshape of (N, C, H, W) to (N*2, C/2, H, W)).
    """
    from minialexnet import layers as L

    nn = torch.nn

    class GroupedLRN(nn.Module):
        def __init__(self, ours):
            super().__init__()
            self.groups = ours.groups
            self.lrn = nn.LocalResponseNorm(ours.size, ours.alpha * ours.size, ours.beta, ours.k)

        def forward(self, x):
            n, c, h, w = x.shape
            return self.lrn(x.reshape(n * self.groups, c // self.groups, h, w)).reshape(n, c, h, w)

    modules = []
    for layer in model.layers.values():
        if isinstance(layer, L.Conv2D):
            m = nn.Conv2d(
                layer.in_channels,
                layer.out_channels,
                (layer.kernel_h, layer.kernel_w),
                layer.stride,
                layer.padding,
                groups=layer.groups,
            )
        elif isinstance(layer, L.Linear):
            m = nn.Linear(layer.in_features, layer.out_features)
        elif isinstance(layer, L.ReLU):
            m = nn.ReLU()
        elif isinstance(layer, L.Tanh):
            m = nn.Tanh()
        elif isinstance(layer, L.LocalResponseNorm):
            m = GroupedLRN(layer)
        elif isinstance(layer, L.MaxPool2D):
            m = nn.MaxPool2d(layer.kernel_size, layer.stride)
        elif isinstance(layer, L.Dropout):
            m = nn.Dropout(layer.p)
        elif isinstance(layer, L.Flatten):
            m = nn.Flatten()
        else:
            raise TypeError(f"no PyTorch twin for {layer!r}")
        if layer.params:
            with torch.no_grad():
                m.weight.copy_(torch.from_numpy(layer.params["W"]))
                m.bias.copy_(torch.from_numpy(layer.params["b"]))
        modules.append(m)
    return nn.Sequential(*modules).cuda()


def step_table(model, gpu, batch, steps, clock, torch, torch_note, deadline) -> None:
    from numba import cuda

    from minialexnet.optim import SGD

    rng = np.random.default_rng(1)
    x_host = (
        rng.standard_normal((batch, 3, model.input_size, model.input_size), dtype=np.float32) * 50
    )
    labels_host = rng.integers(0, model.num_classes, size=batch)
    x_dev, labels_dev = cuda.to_device(x_host), cuda.to_device(labels_host)

    print(
        f"\n2. Training step: forward + loss + backward + SGD (§5), batch {batch}, median of "
        f"{steps} steps"
    )
    rows = []
    gpu.train_step(x_dev, labels_dev)  # compile + warm up
    ms = clock.ms(lambda: gpu.train_step(x_dev, labels_dev), steps)
    rows.append(("CudaAlexNet, one device (batch on the GPU)", ms))
    upload_ms = clock.ms(lambda: gpu.train_step(x_host, labels_host), max(1, steps // 4))
    rows.append(("CudaAlexNet, one device (batch copied from the host)", upload_ms))

    try:
        from minialexnet.gpu import CudaTwoTowerAlexNet
    except ImportError:
        rows.append(("two towers (§3.2): n/a, minialexnet.gpu has no CudaTwoTowerAlexNet", None))
    else:
        if time.perf_counter() < deadline:
            # Default devices: cuda:0,cuda:1 where two GPUs are visible, else both towers
            # on one GPU with a stream each (cuda:0,cuda:0).
            towers = CudaTwoTowerAlexNet(model, SGD(model), batch_size=batch)
            towers.train_step(x_dev, labels_dev)  # compile + warm up
            where = ",".join(str(d) for d in towers.devices)
            rows.append(
                (
                    f"two towers (§3.2) on {where} (batch on the GPU)",
                    clock.ms(lambda: towers.train_step(x_dev, labels_dev), steps),
                )
            )
            towers.close()

    if torch is None:
        rows.append((f"PyTorch peer: {torch_note}", None))
    elif time.perf_counter() < deadline:
        net = torch_alexnet(torch, model).train()
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=0.0005)
        loss_fn = torch.nn.CrossEntropyLoss()
        tx = torch.from_numpy(x_host).cuda()
        tl = torch.from_numpy(labels_host).cuda()

        def torch_step():
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(net(tx), tl)
            loss.backward()
            opt.step()

        for _ in range(3):  # cuDNN autotuning
            torch_step()
        torch.cuda.synchronize()
        rows.append(
            (f"PyTorch CUDA ({torch_note}), FP32, TF32 off", torch_ms(torch, torch_step, steps))
        )

    for label, value in rows:
        if value is None:
            print(f"   {label}")
        else:
            print(f"   {label:<62} {value:9.2f} ms  {batch / value * 1e3:9.1f} img/s")


def same_function_check(model, gpu, torch) -> None:
    """Our logits and PyTorch's on one batch (both in eval mode, same weights)."""
    if torch is None:
        return
    gpu.load_from_host()  # the timed steps changed the GPU's weights
    x = (
        np.random.default_rng(2).standard_normal(
            (8, 3, model.input_size, model.input_size), dtype=np.float32
        )
        * 50
    )
    ours = gpu.forward(x)
    with torch.no_grad():
        theirs = torch_alexnet(torch, model).eval()(torch.from_numpy(x).cuda()).cpu().numpy()
    diff = float(np.abs(ours - theirs).max() / max(np.abs(theirs).max(), 1e-30))
    print(
        f"\n3. Same function: max |ours - PyTorch| / max |PyTorch| over 8x{model.num_classes} "
        f"logits = {diff:.2e}"
    )


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.simulate:
        os.environ["NUMBA_ENABLE_CUDASIM"] = "1"  # before numba is imported
        import warnings

        warnings.filterwarnings("ignore", message="overflow encountered")  # uint64 hashing
        sys.setswitchinterval(1e-4)
    start = time.perf_counter()
    deadline = start + args.budget

    from minialexnet.kernels.cuda import is_available

    if not is_available():
        print(
            "benchmarks/gpu.py needs an NVIDIA GPU with a working driver and numba-cuda, and "
            "none was found. Run it on a GPU machine, or check the script itself with "
            "--simulate (tiny shapes under the CUDA simulator).",
            file=sys.stderr,
        )
        return 2
    from numba import cuda

    from minialexnet.gpu import CudaAlexNet
    from minialexnet.kernels.cuda.gemm import multiprocessor_count
    from minialexnet.model import AlexNet
    from minialexnet.optim import SGD

    device = cuda.get_current_device()
    name = getattr(device, "name", b"CUDA simulator")
    name = name.decode() if isinstance(name, bytes) else str(name)
    torch, torch_note = (
        (None, "skipped (--simulate)") if args.simulate else load_torch(not args.no_torch)
    )
    print(
        f"device: {name}, {multiprocessor_count()} SMs; numba-cuda "
        f"{_version('numba_cuda')}; {torch_note}"
    )
    if args.simulate:
        print("(simulated: the times below say nothing about a GPU)")

    model = AlexNet(args.num_classes, args.variant, np.random.default_rng(0))
    # The hand-written SGEMM: table 1 places it on the ladder (gpu_check.py adds cuBLAS).
    gpu = CudaAlexNet(model, SGD(model), batch_size=args.batch, gemm="numba")
    clock = Clock(cuda, args.simulate)
    gemm_table(
        gpu, args.batch, clock, torch, 1 if args.simulate else max(3, args.steps // 2), deadline
    )
    if time.perf_counter() < deadline:
        step_table(model, gpu, args.batch, args.steps, clock, torch, torch_note, deadline)
    if time.perf_counter() < deadline:
        same_function_check(model, gpu, torch)
    print(f"\n(total {time.perf_counter() - start:.0f} s)")
    return 0


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package.replace("_", "-"))
    except PackageNotFoundError:
        return "?"


if __name__ == "__main__":
    sys.exit(main())
