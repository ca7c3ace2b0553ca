"""What the GPU engines would run on here: ``python -m minialexnet.gpu_info``.

Prints the versions (minialexnet, NumPy, Numba, numba-cuda, nvmath-python), the NVIDIA driver
and the CUDA runtime numba-cuda found, every GPU with its compute capability and free memory,
and which GEMM ``gemm="auto"`` chooses (cuBLAS through nvmath-python, or the hand-written
numba kernel) and why. Exit status 0 when a GPU can run the engines, 1 when not (the report
then says "no GPU" and what is missing), so scripts can stop early::

    python -m minialexnet.gpu_info || echo "install an NVIDIA driver, then minialexnet[cuda12]"

Nothing here raises: every question that fails is answered with the error, because the most
useful report is the one on a broken installation. Under ``NUMBA_ENABLE_CUDASIM=1`` it says it
is looking at the simulator.
"""

from __future__ import annotations

import argparse
import sys
from importlib import metadata

# The package of the kernels applies the NumPy compatibility shim before numba.cuda loads.
from minialexnet.kernels.cuda import is_available


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _ask(question):
    """``question()``, or ``"unknown (<error>)"`` when it raises."""
    try:
        return question()
    except Exception as err:  # noqa: BLE001 - a report answers, it does not crash
        return f"unknown ({type(err).__name__}: {' '.join(str(err).split())[:200]})"


def _driver_version() -> str:
    from numba.cuda.cudadrv import driver

    return ".".join(str(v) for v in driver.driver.get_version())


def _runtime_version() -> str:
    from numba.cuda.cudadrv import runtime

    return ".".join(str(v) for v in runtime.runtime.get_version())


def _devices() -> list[dict]:
    from numba import cuda

    found = []
    for gpu in cuda.gpus:
        with gpu:
            device = cuda.get_current_device()
            free, total = cuda.current_context().get_memory_info()
            found.append(
                {
                    "index": gpu.id,
                    "name": _name(device),
                    "compute_capability": ".".join(map(str, device.compute_capability)),
                    "free_gib": free / 2**30,
                    "total_gib": total / 2**30,
                }
            )
    return found


def _name(device) -> str:
    name = getattr(device, "name", "the CUDA simulator")
    return name.decode() if isinstance(name, bytes) else str(name)


def _gemm() -> tuple[str, str]:
    """(what ``gemm="auto"`` chooses, why)."""
    from minialexnet.kernels.cuda.cublas import choose_gemm, cublas_unavailable_reason

    reason = cublas_unavailable_reason()
    chosen = choose_gemm("auto")
    return chosen, (
        "cuBLAS through nvmath-python, float32 (no TF32)"
        if reason is None
        else f"the hand-written numba SGEMM; cuBLAS is not used: {reason}"
    )


def report() -> dict:
    """Everything ``main`` prints, as a dict (``gpu``: whether the engines can run)."""
    from numba import config

    info = {
        "versions": {
            name: _version(name)
            for name in ("minialexnet", "numpy", "numba", "numba-cuda", "nvmath-python")
        },
        "simulator": bool(config.ENABLE_CUDASIM),
        "gpu": is_available(),
    }
    if info["simulator"]:
        info["driver"] = info["runtime"] = "none (the CUDA simulator)"
    else:
        info["driver"] = _ask(_driver_version)
        info["runtime"] = _ask(_runtime_version)
    info["devices"] = _ask(_devices) if info["gpu"] else []
    info["gemm"] = (
        _ask(_gemm)
        if info["versions"]["numba-cuda"] != "not installed"
        else ("none", "numba-cuda is not installed")
    )
    return info


def format_report(info: dict) -> str:
    lines = [
        "versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()),
        f"NVIDIA driver: {info['driver']}",
        f"CUDA runtime: {info['runtime']}",
    ]
    devices = info["devices"]
    if info["simulator"]:
        lines.append(
            "GPU: none -- this is the CUDA simulator (NUMBA_ENABLE_CUDASIM=1): kernels "
            "run as Python threads, for tests on tiny inputs"
        )
    elif not info["gpu"]:
        lines.append(
            "GPU: no GPU -- the GPU engines cannot run here (no NVIDIA driver, no "
            "device, or numba-cuda without its CUDA libraries: pip install "
            "'minialexnet[cuda12]', or [cuda13] with a driver >= 580)"
        )
    if isinstance(devices, str):
        lines.append(f"devices: {devices}")
    for d in devices if isinstance(devices, list) else []:
        memory = (
            f", {d['free_gib']:.1f} of {d['total_gib']:.1f} GiB free"
            if 0 < d["total_gib"] < float("inf")
            else ""
        )
        lines.append(
            f"cuda:{d['index']}: {d['name']}, compute capability {d['compute_capability']}{memory}"
        )
    gemm = info["gemm"]
    lines.append(
        f"GEMM (gemm='auto'): {gemm}"
        if isinstance(gemm, str)
        else f"GEMM (gemm='auto'): {gemm[0]} -- {gemm[1]}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(
        prog="python -m minialexnet.gpu_info", description=__doc__.split("\n\n")[0]
    ).parse_args(argv)
    info = report()
    print(format_report(info))
    return 0 if info["gpu"] and not info["simulator"] else 1


if __name__ == "__main__":
    sys.exit(main())
