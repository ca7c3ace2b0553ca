"""First contact with a GPU: prove the kernels right, then measure them, in one report.

    bash benchmarks/gpu_check.sh                  # the same, with an 8-minute limit
    python benchmarks/gpu_check.py [--report gpu_check_report.txt] [--budget 420]
    python benchmarks/gpu_check.py --simulator    # tiny sizes under the CUDA simulator

Sections of the report (each also printed as it is written):

1. **versions**: ``python -m minialexnet.gpu_info`` (driver, CUDA runtime, numba-cuda, NumPy,
   nvmath-python, every GPU, the GEMM ``gemm="auto"`` picks) and PyTorch / cuDNN.
2. **CUDA tests**: ``pytest`` on the CUDA test files, run on the GPU (every kernel against its
   NumPy reference, the engines against the CPU network, the cuBLAS plan logic, the
   compatibility shims); their summary line and any failure.
3. **GEMMs**: every product of a training step of the paper's network at batch 128, by the
   hand-written numba SGEMM, by cuBLAS (nvmath-python) and by ``torch.matmul`` (TF32 off), in
   TFLOP/s; each timing spans ``--calls`` back-to-back calls, so that launch overhead does not
   distort the small products; each result is compared with torch's (or NumPy's).
4. **training**: images/s of a whole training step (forward, loss, backward, §5 SGD) at batch
   128 for ``CudaAlexNet`` with the numba GEMM, with cuBLAS, the two towers of §3.2 on one GPU
   (``cuda:0,cuda:0``), and PyTorch + cuDNN in float32 with TF32 off.
5. **same function**: the largest difference between each engine's logits and PyTorch's on
   one batch, relative to the largest logit.

Numbers are reported, never asserted (the goals: cuBLAS within 1.5x of PyTorch's step time,
numba within 3x). Measurements stop being started once ``--budget`` seconds have passed.
Needs nothing beyond the project's ``cuda12`` / ``cuda13`` extras, and PyTorch (with CUDA)
for its columns. ``--simulator`` runs the whole script on the "tiny" network at batch 2
under the CUDA simulator, without tests, cuBLAS or PyTorch: a check of the script itself
(``tests/test_gpu_check.py``), whose times mean nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)
CUDA_TESTS = [
    "tests/test_cuda_kernels.py",
    "tests/test_cuda_model.py",
    "tests/test_cuda_parallel.py",
    "tests/test_cuda_train.py",
    "tests/test_cuda_cublas.py",
    "tests/test_cuda_compat.py",
    "tests/test_gpu_info.py",
]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--report", default="gpu_check_report.txt", help="file to write")
    parser.add_argument(
        "--budget",
        type=float,
        default=420.0,
        help="seconds after which no new measurement starts (default 420)",
    )
    parser.add_argument(
        "--tests-timeout",
        type=float,
        default=180.0,
        help="seconds the CUDA tests may take (default 180)",
    )
    parser.add_argument("--batch", type=int, default=128, help="images per step (paper: 128)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per engine")
    parser.add_argument("--calls", type=int, default=10, help="GEMM calls per timing")
    parser.add_argument(
        "--max-gemms", type=int, default=None, help="time only the first N products in section 3"
    )
    parser.add_argument("--images", type=int, default=8, help="images compared in section 5")
    parser.add_argument("--no-tests", action="store_true", help="skip section 2")
    parser.add_argument("--no-torch", action="store_true", help="leave PyTorch out")
    parser.add_argument(
        "--simulator",
        action="store_true",
        help="tiny sizes under the CUDA simulator: checks the script only",
    )
    args = parser.parse_args(argv)
    args.variant, args.num_classes = "paper", 1000
    if args.simulator:
        args.variant, args.num_classes, args.batch = "tiny", 6, 2
        args.steps, args.calls, args.no_tests, args.no_torch = 1, 1, True, True
        args.max_gemms, args.images = 4, 2
    return args


class Report:
    """Lines printed as they come and written to ``path`` at every section's end (so a run
    cut short by the time limit still leaves its report)."""

    def __init__(self, path: str) -> None:
        self.path, self.lines = path, []

    def __call__(self, line: str = "") -> None:
        print(line, flush=True)
        self.lines.append(line)

    def section(self, title: str) -> None:
        self.save()
        self("")
        self(title)
        self("-" * len(title))

    def save(self) -> None:
        with open(self.path, "w", encoding="utf-8") as f:
            f.write("\n".join(self.lines) + "\n")


class Timer:
    """Milliseconds per call: CUDA events around ``calls`` back-to-back calls, median of
    ``repeats`` (the wall clock under the simulator, whose events measure nothing)."""

    def __init__(self, simulated: bool) -> None:
        from numba import cuda

        self.cuda, self.simulated = cuda, simulated

    def ms(self, work, calls: int = 1, repeats: int = 3) -> float:
        times = []
        for _ in range(repeats):
            if self.simulated:
                start = time.perf_counter()
                for _ in range(calls):
                    work()
                times.append(1e3 * (time.perf_counter() - start) / calls)
                continue
            begin, end = self.cuda.event(), self.cuda.event()
            begin.record()
            for _ in range(calls):
                work()
            end.record()
            end.synchronize()
            times.append(self.cuda.event_elapsed_time(begin, end) / calls)
        return statistics.median(times)


def torch_timer_ms(torch, work, calls: int = 1, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        begin = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        begin.record()
        for _ in range(calls):
            work()
        end.record()
        end.synchronize()
        times.append(begin.elapsed_time(end) / calls)
    return statistics.median(times)


# -- 1. versions ----------------------------------------------------------------------------------


def versions(report: Report, torch, torch_note: str) -> None:
    from minialexnet.gpu_info import format_report
    from minialexnet.gpu_info import report as gpu_report

    report.section("1. versions")
    for line in format_report(gpu_report()).splitlines():
        report(line)
    report(f"PyTorch: {torch_note}")


# -- 2. the CUDA tests ----------------------------------------------------------------------------


def cuda_tests(report: Report, timeout: float) -> None:
    report.section("2. CUDA tests (every kernel against NumPy, the engines against the CPU)")
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-rfEs",
        *CUDA_TESTS,
    ]
    report("$ " + " ".join(command[2:]))
    try:
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as err:
        out = err.stdout if isinstance(err.stdout, str) else (err.stdout or b"").decode()
        report(f"TIMED OUT after {timeout:.0f} s (--tests-timeout); last output:")
        for line in out.strip().splitlines()[-15:]:
            report("  " + line)
        return
    lines = (done.stdout + done.stderr).strip().splitlines()
    failures = [line for line in lines if line.startswith(("FAILED", "ERROR"))]
    report(f"exit status {done.returncode}: {lines[-1] if lines else '(no output)'}")
    for line in failures[:40]:
        report("  " + line)
    if done.returncode not in (0, 5) and not failures:
        for line in lines[-30:]:
            report("  " + line)


# -- 3. GEMMs -------------------------------------------------------------------------------------


def step_gemms(model, batch: int):
    """``(layer, product, plan)`` of every GEMM of one training step (numba plans; conv1's
    input gradient is never computed, so it is left out)."""
    from minialexnet.gpu import CudaAlexNet

    engine = CudaAlexNet(model, batch_size=batch, gemm="numba")
    for name, layer in engine.layers.items():
        for product, plan in layer.gemm_plans(batch).items():
            if not (name == next(iter(engine.layers)) and product == "grad_cols"):
                yield name, product, plan
    engine.close()


def gemms(report: Report, model, args, timer: Timer, torch, cublas_ok: bool, deadline) -> None:
    from numba import cuda

    from minialexnet.kernels.cuda.cublas import CublasGemmPlan

    report.section(
        f"3. GEMMs of one training step, batch {args.batch}: TFLOP/s "
        f"({args.calls} calls per timing; torch.matmul with TF32 off)"
    )
    report(
        f"{'layer':<7}{'product':<10}{'batch':>5}{'M':>7}{'N':>8}{'K':>8}"
        f"{'numba':>8}{'cuBLAS':>8}{'torch':>8}  agreement (max rel. diff. to reference)"
    )
    totals = {"numba": 0.0, "cublas": 0.0, "torch": 0.0}
    flops = 0
    rng = np.random.default_rng(0)
    for count, (name, product, plan) in enumerate(step_gemms(model, args.batch)):
        if args.max_gemms is not None and count >= args.max_gemms:
            report(f"(--max-gemms {args.max_gemms}: the remaining products are skipped)")
            break
        if time.perf_counter() > deadline:
            report("(time budget reached: the remaining products are skipped)")
            break
        a_host = rng.standard_normal(plan.a_shape, dtype=np.float32)
        b_host = rng.standard_normal(plan.b_shape, dtype=np.float32)
        a, b = cuda.to_device(a_host), cuda.to_device(b_host)
        c = cuda.device_array(plan.out_shape, dtype=np.float32)
        reference = _reference(torch, a_host, b_host, plan)
        row, diffs = {}, []
        plans = {"numba": plan}
        if cublas_ok:
            plans["cublas"] = CublasGemmPlan(
                plan.a_shape, plan.b_shape, plan.trans_a, plan.trans_b
            )
        for kind, p in plans.items():
            p(a, b, c)  # compile, warm up
            cuda.synchronize()
            diffs.append(f"{kind} {_rel_diff(c.copy_to_host(), reference):.1e}")
            row[kind] = timer.ms(lambda p=p, a=a, b=b, c=c: p(a, b, c), args.calls)
        if torch is not None:
            ta, tb = torch.from_numpy(a_host).cuda(), torch.from_numpy(b_host).cuda()
            opa = ta.transpose(-1, -2) if plan.trans_a else ta
            opb = tb.transpose(-1, -2) if plan.trans_b else tb
            torch.matmul(opa, opb)
            row["torch"] = torch_timer_ms(
                torch, lambda x=opa, y=opb: torch.matmul(x, y), args.calls
            )
        cells = "".join(
            f"{plan.flops / row[k] / 1e9:8.2f}" if k in row else f"{'-':>8}"
            for k in ("numba", "cublas", "torch")
        )
        report(
            f"{name:<7}{product:<10}{plan.batch:>5}{plan.m:>7}{plan.n:>8}{plan.k:>8}"
            f"{cells}  {', '.join(diffs)}"
        )
        flops += plan.flops
        for k, value in row.items():
            totals[k] += value
    cells = "".join(
        f"{flops / totals[k] / 1e9:8.2f}" if totals[k] else f"{'-':>8}"
        for k in ("numba", "cublas", "torch")
    )
    report(f"{'all products of the step':<45}{cells}")


def _reference(torch, a, b, plan) -> np.ndarray:
    """op(a) @ op(b) by torch in float64 on the GPU (NumPy's float64 on the CPU without it)."""
    opa = np.swapaxes(a, -1, -2) if plan.trans_a else a
    opb = np.swapaxes(b, -1, -2) if plan.trans_b else b
    if torch is not None:
        return (
            torch.matmul(
                torch.from_numpy(np.ascontiguousarray(opa, np.float64)).cuda(),
                torch.from_numpy(np.ascontiguousarray(opb, np.float64)).cuda(),
            )
            .cpu()
            .numpy()
        )
    return np.matmul(opa.astype(np.float64), opb.astype(np.float64))


def _rel_diff(got, want) -> float:
    return float(np.abs(got - want).max() / max(float(np.abs(want).max()), 1e-30))


# -- 4. training, 5. the same function ------------------------------------------------------------


def engines(model, args, cublas_ok: bool):
    """(label, factory) of the engines to time: each factory builds a fresh engine."""
    from minialexnet.gpu import CudaAlexNet, CudaTwoTowerAlexNet
    from minialexnet.optim import SGD

    def make(kind, **options):
        def build():
            net = _copy(model)
            return kind(net, SGD(net, lr=0.01), batch_size=args.batch, **options)

        return build

    found = [("CudaAlexNet, numba GEMM", make(CudaAlexNet, gemm="numba"))]
    if cublas_ok:
        found.append(("CudaAlexNet, cuBLAS GEMM", make(CudaAlexNet, gemm="cublas")))
    found.append(
        (
            "two towers on cuda:0,cuda:0 (" + ("cuBLAS" if cublas_ok else "numba") + ")",
            make(
                CudaTwoTowerAlexNet,
                devices="cuda:0,cuda:0",
                gemm="cublas" if cublas_ok else "numba",
            ),
        )
    )
    return found


def _copy(model):
    import copy

    return copy.deepcopy(model)


def training(
    report: Report, model, args, timer: Timer, torch, torch_note, cublas_ok, deadline
) -> dict:
    """Section 4; returns {label: engine} of the engines built (for section 5)."""
    from numba import cuda

    report.section(
        f"4. training step (forward, loss, backward, SGD), batch {args.batch}: "
        f"images/s, median of {args.steps} steps"
    )
    rng = np.random.default_rng(1)
    size = model.input_size
    x_host = rng.standard_normal((args.batch, 3, size, size), dtype=np.float32) * 50
    labels_host = rng.integers(0, model.num_classes, size=args.batch)
    x_dev, labels_dev = cuda.to_device(x_host), cuda.to_device(labels_host)
    built, ms = {}, {}
    for label, build in engines(model, args, cublas_ok):
        if time.perf_counter() > deadline:
            report(f"{label:<48} skipped (time budget)")
            continue
        engine = build()
        if not args.simulator:
            engine.train_step(x_dev, labels_dev)  # compile, warm up
        ms[label] = timer.ms(lambda e=engine: e.train_step(x_dev, labels_dev), 1, args.steps)
        report(f"{label:<48} {ms[label]:9.2f} ms {args.batch / ms[label] * 1e3:9.1f} img/s")
        built[label] = engine
    if torch is None:
        report(f"{'PyTorch + cuDNN':<48} {torch_note}")
    elif time.perf_counter() < deadline:
        ms["torch"] = _torch_step_ms(torch, model, x_host, labels_host, args.steps)
        report(
            f"{'PyTorch + cuDNN, float32, TF32 off':<48} {ms['torch']:9.2f} ms "
            f"{args.batch / ms['torch'] * 1e3:9.1f} img/s"
        )
        for label, value in ms.items():
            if label != "torch":
                report(f"  {label}: {value / ms['torch']:.2f}x PyTorch's step time")
    return built


def _torch_step_ms(torch, model, x_host, labels_host, steps: int) -> float:
    from gpu import torch_alexnet  # benchmarks/gpu.py: the same layers in PyTorch

    net = torch_alexnet(torch, model).train()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=0.0005)
    loss_fn = torch.nn.CrossEntropyLoss()
    tx, tl = torch.from_numpy(x_host).cuda(), torch.from_numpy(labels_host).cuda()

    def step():
        opt.zero_grad(set_to_none=True)
        loss_fn(net(tx), tl).backward()
        opt.step()

    for _ in range(3):  # cuDNN autotuning
        step()
    torch.cuda.synchronize()
    return torch_timer_ms(torch, step, 1, steps)


def same_function(report: Report, model, built: dict, torch, images: int) -> None:
    report.section(
        f"5. same function: max |logits - reference| / max |reference|, {images} images"
    )
    x = (
        np.random.default_rng(2).standard_normal(
            (images, 3, model.input_size, model.input_size), dtype=np.float32
        )
        * 50
    )
    if torch is not None:
        from gpu import torch_alexnet

        with torch.no_grad():
            want = torch_alexnet(torch, model).eval()(torch.from_numpy(x).cuda()).cpu().numpy()
        reference = "PyTorch + cuDNN"
    else:
        want = model.forward(x)
        reference = "the CPU network (PyTorch not used)"
    report(f"reference: {reference}")
    for label, engine in built.items():
        engine.model.load_state_dict(model.state_dict())  # the timed steps trained them
        engine.load_from_host()
        report(f"{label:<48} {_rel_diff(engine.forward(x), want):.2e}")
        engine.close()


# -- main -----------------------------------------------------------------------------------------


def main(argv=None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    deadline = start + args.budget
    if args.simulator:
        os.environ["NUMBA_ENABLE_CUDASIM"] = "1"  # before numba.cuda is imported
        import warnings

        warnings.filterwarnings("ignore", message="overflow encountered")  # dropout's hash
        sys.setswitchinterval(1e-4)
    report = Report(args.report)
    report(
        f"minialexnet GPU check, {time.strftime('%Y-%m-%d %H:%M:%S')}"
        + (
            " -- SIMULATOR: a check of the script, its times mean nothing"
            if args.simulator
            else ""
        )
    )

    from minialexnet.kernels.cuda import is_available
    from minialexnet.kernels.cuda.cublas import cublas_unavailable_reason
    from minialexnet.model import AlexNet

    torch, torch_note = (None, "not used (--no-torch)") if args.no_torch else _load_torch()
    versions(report, torch, torch_note)
    if not is_available():
        report(
            "\nno GPU: nothing to check (see the lines above). Run this on a machine with "
            "an NVIDIA GPU, or check the script with --simulator."
        )
        report.save()
        return 2
    if not args.no_tests:
        cuda_tests(report, min(args.tests_timeout, max(0.0, deadline - time.perf_counter())))
    cublas_reason = cublas_unavailable_reason()
    if cublas_reason is not None:
        report(f"\ncuBLAS columns left out: {cublas_reason}")
    model = AlexNet(args.num_classes, args.variant, np.random.default_rng(0))
    timer = Timer(args.simulator)
    if time.perf_counter() < deadline:
        gemms(report, model, args, timer, torch, cublas_reason is None, deadline)
    built = {}
    if time.perf_counter() < deadline:
        built = training(
            report, model, args, timer, torch, torch_note, cublas_reason is None, deadline
        )
    same_function(report, model, built, torch, args.images)
    report(f"\n(total {time.perf_counter() - start:.0f} s; report written to {args.report})")
    report.save()
    return 0


def _load_torch():
    """PyTorch with CUDA, TF32 off everywhere, cuDNN autotuning on; or (None, why not)."""
    try:
        import torch
    except ImportError:
        return None, "not installed (its columns are left out)"
    if not torch.cuda.is_available():
        return None, f"{torch.__version__} sees no CUDA device (its columns are left out)"
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    return torch, (
        f"{torch.__version__}, CUDA {torch.version.cuda}, cuDNN "
        f"{torch.backends.cudnn.version()}, TF32 off"
    )


if __name__ == "__main__":
    sys.exit(main())
