"""What the teaching notebooks share, imported in one line (``from minialexnet.notebook import
machine_report``), so that each notebook shows its own idea and not the same helpers again.

- ``machine_report()``: the machine and the software every number in a notebook depends on
  (CPU model, usable cores, Python, NumPy and its BLAS, Numba, the CPU kernels, the load; with
  ``gpu=True`` also numba-cuda and the GPU). ``machine_info()`` returns the same facts as a
  dict, ``usable_cores()`` the cores this process may run on.
- ``print_epoch_line(line)``: a ``log=`` for ``fit`` that keeps its one line per epoch.
- ``train_epochs(...)``: plain SGD (§5) with a batch maker of your choice, both errors measured
  the same way after every epoch (notebooks 06 and 07 compare two ways to make batches).
- ``binomial_std_error(error, n)``: how far an error rate measured on ``n`` images may be from
  the true one by chance alone.
- ``gpu_name(index)``: the name the driver gives GPU ``index``.

Nothing in the package imports this module; it imports only the core (layers, optim, metrics),
and numba.cuda only inside the functions that report on a GPU, because that is optional.
"""

from __future__ import annotations

import math
import os
import platform
import subprocess
import time
from importlib.metadata import PackageNotFoundError, version

import numba
import numpy as np

import minialexnet
from minialexnet.checks import check_positive_int, check_real
from minialexnet.layers import SoftmaxCrossEntropy
from minialexnet.metrics import evaluate
from minialexnet.optim import SGD

# The per-epoch line of ``fit``'s log is the one that reports the validation error.
EPOCH_LINE_MARK = "val top-1"


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask; ``os.cpu_count()`` where the
    platform has no affinity, as on macOS)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def cpu_model() -> str:
    """The processor's marketing name, e.g. ``"AMD EPYC 9R14"`` (best effort: on an unknown
    platform the architecture, e.g. ``"x86_64"``)."""
    try:
        with open("/proc/cpuinfo") as f:  # Linux
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                    return value.strip()
    except OSError:
        pass
    if platform.system() == "Darwin":
        try:
            out = subprocess.run(
                ["sysctl", "-n", "machdep.cpu.brand_string"],
                capture_output=True,
                text=True,
                timeout=5,
                check=True,
            )
            if out.stdout.strip():
                return out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine() or "unknown"


def blas_name() -> str:
    """The BLAS NumPy was built with, e.g. ``"scipy-openblas 0.3.27"`` (``"unknown"`` for a
    NumPy too old to say). Every matrix product, so every convolution, runs in it."""
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    except (TypeError, KeyError, AttributeError):  # NumPy < 1.26 has no mode="dicts"
        return "unknown"
    return " ".join(str(blas[key]) for key in ("name", "version") if blas.get(key)) or "unknown"


def _package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def machine_info() -> dict[str, object]:
    """The facts ``machine_report`` prints, as a dict of plain values."""
    return {
        "platform": platform.platform(),
        "architecture": platform.machine(),
        "cpu": cpu_model(),
        "usable_cores": usable_cores(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "blas": blas_name(),
        "numba": numba.__version__,
        "numba_threads": numba.get_num_threads(),
        "minialexnet": minialexnet.__version__,
        "backend": minialexnet.get_backend(),
        # Other work on the machine makes every timing slower; no load average on Windows.
        "load": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }


def gpu_name(index: int = 0) -> str:
    """The name of GPU ``index`` as the driver reports it (``"CUDA simulator"`` under
    ``NUMBA_ENABLE_CUDASIM=1``). Needs numba-cuda (``pip install -e ".[cuda]"``)."""
    from numba import cuda  # optional: the CUDA extra

    with cuda.gpus[index]:
        name = getattr(cuda.get_current_device(), "name", "CUDA simulator")
    return name.decode() if isinstance(name, bytes) else str(name)


def _gpu_line() -> str:
    """One line on the GPU that numba.cuda would use, or why there is none."""
    try:
        from numba import cuda  # optional: the CUDA extra
    except ImportError:
        return 'none: numba-cuda is not installed (pip install -e ".[cuda]")'
    if numba.config.ENABLE_CUDASIM:
        return "none; numba.cuda kernels run in the CUDA SIMULATOR (Python threads)"
    if not cuda.is_available():
        return "none usable (numba.cuda.is_available() is False)"
    device = cuda.get_current_device()
    return (
        f"{gpu_name(0)}, compute capability {device.compute_capability}, {len(cuda.gpus)} visible"
    )


def machine_report(gpu: bool = False) -> None:
    """Print the machine and software that the notebook's numbers were measured with.

    Timings depend on all of it, and on the load: other work on the machine slows every
    measurement. ``gpu=True`` adds numba-cuda's version and the GPU numba.cuda would use.
    Returns nothing, so that a notebook cell ending with it shows only the printed lines.
    """
    info = machine_info()
    print(f"machine : {info['platform']} ({info['architecture']})")
    print(
        f"CPU     : {info['cpu']}, {info['usable_cores']} usable cores "
        f"(os.cpu_count() = {info['cpu_count']})"
    )
    print(
        f"software: Python {info['python']}, NumPy {info['numpy']} (BLAS: {info['blas']}), "
        f"Numba {info['numba']} ({info['numba_threads']} threads), "
        f"minialexnet {info['minialexnet']}, CPU kernels: {info['backend']!r}"
    )
    if info["load"] is not None:
        print(
            f"load    : {info['load']:.1f} runnable processes (1-minute average) "
            f"on {info['usable_cores']} cores"
        )
    if gpu:
        print(f"numba   : numba-cuda {_package_version('numba-cuda')}")
        print(f"GPU     : {_gpu_line()}")


def print_epoch_line(line: str) -> None:
    """A ``log=`` for ``fit`` that prints only the line closing each epoch (indented), not
    the progress lines within it."""
    if EPOCH_LINE_MARK in line:
        print("   ", line)


def binomial_std_error(error: float, n: int) -> float:
    """Standard error of an error rate measured on ``n`` independent images,
    ``sqrt(error * (1 - error) / n)``: differences smaller than about two of these can be
    chance alone. ``error`` is a fraction in [0, 1]; so is the result."""
    error = check_real(error, "error", 0.0, 1.0)
    n = check_positive_int(n, "n")
    return math.sqrt(error * (1.0 - error) / n)


def train_epochs(
    net,
    train_set,
    val_set,
    stats,
    make_batch,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int = 1,
    label: str = "",
) -> list[dict]:
    """SGD as in §5 (momentum 0.9, weight decay 0.0005, a constant learning rate) for
    ``epochs`` passes over ``train_set``, with the batches made by ``make_batch``.

    ``make_batch(images, rng)`` turns uint8 images ``(B, 3, H, W)`` into the network's float32
    input ``(B, 3, S, S)`` (a centre crop, or a random crop, flip and colour shift, ...).
    After every epoch both errors are measured the same way: centre crops, dropout off, so
    that two ways of making batches are compared on equal terms. The order of the images
    and every random choice of ``make_batch`` flow from ``seed``: the same for every run.

    Returns one dict per epoch: ``epoch``, ``loss`` (mean training loss, as trained),
    ``train_err`` and ``val_err`` (top-1 errors as fractions).
    """
    if not callable(make_batch):
        raise TypeError(
            f"make_batch must be a function (images, rng) -> batch, got "
            f"{type(make_batch).__name__}"
        )
    epochs = check_positive_int(epochs, "epochs")
    batch_size = check_positive_int(batch_size, "batch_size")
    lr = check_real(lr, "lr", 0.0, low_inclusive=False)
    data_rng = np.random.default_rng(seed)
    optimizer = SGD(net, lr=lr, momentum=0.9, weight_decay=0.0005)
    loss_fn = SoftmaxCrossEntropy()
    history = []
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        order = data_rng.permutation(len(train_set))
        losses = []
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            x = make_batch(train_set.images[idx], data_rng)
            loss = loss_fn.forward(net.forward(x, train=True), train_set.labels[idx])
            net.backward(loss_fn.backward(), need_dx=False)
            optimizer.step()
            losses.append(loss)
        train_err, _ = evaluate(net, train_set, stats, batch_size=batch_size)
        val_err, _ = evaluate(net, val_set, stats, batch_size=batch_size)
        history.append(
            {
                "epoch": epoch,
                "loss": float(np.mean(losses)),
                "train_err": train_err,
                "val_err": val_err,
            }
        )
        print(
            f"  {label} epoch {epoch:>2}: loss {np.mean(losses):.3f}, train err "
            f"{100 * train_err:5.1f}%, val err {100 * val_err:5.1f}% "
            f"({time.perf_counter() - t0:.0f} s)"
        )
    return history
