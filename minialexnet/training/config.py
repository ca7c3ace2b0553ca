"""What a training run is asked to do: ``TrainConfig``, and the recipe per architecture (§5).

``TrainConfig()`` is the paper's recipe: mini-batches of 128, learning rate 0.01 divided by
10 when the validation error stops improving, momentum 0.9, weight decay 0.0005, 90 epochs
(§5). ``ARCH_DEFAULTS`` holds that recipe and the one measured for the "mini" network.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from minialexnet.checks import check_positive_int
from minialexnet.metrics import CROPS

#: Defaults per architecture: the paper's recipe (§5), and one measured to train "mini" on the
#: built-in dataset in a few minutes on two CPU cores. Mini's validation error still jumps by
#: several points from epoch to epoch at lr 0.003, so a short run divides the rate by 10 at a
#: fixed epoch (``step``) rather than waiting for a plateau that a 15-epoch run may not see.
ARCH_DEFAULTS = {
    "paper": {
        "epochs": 90,
        "batch_size": 128,
        "lr": 0.01,
        "image_size": 256,
        "schedule": "plateau",
        "step_size": 30,
        "init": "bvlc",
    },
    "mini": {
        "epochs": 15,
        "batch_size": 32,
        "lr": 0.003,
        "image_size": 64,
        "schedule": "step",
        "step_size": 10,
        "init": "paper",
    },
}

DEVICES = ("cpu", "cuda")
TOWER_MODES = ("threads", "sequential")
GEMMS = ("auto", "numba", "cublas")  # minialexnet.kernels.cuda.cublas.GEMM_CHOICES

#: ``"plateau"``, ``None``/``"none"`` (constant rate) or ``optimizer -> schedule``.
Schedule = str | Callable | None


@dataclass
class TrainConfig:
    """The settings of one run of ``minialexnet.training.fit``; defaults are the paper's (§5).

    epochs : total number of epochs; a resumed run counts those already done
    batch_size, lr, momentum, weight_decay : SGD as in §5 (paper: 128, 0.01, 0.9, 0.0005)
    schedule : ``"plateau"`` (the paper: divide lr by 10 when the validation error stops
        improving, at most 3 times), ``None`` or ``"none"`` (constant lr), or a callable
        ``optimizer -> schedule`` such as ``lambda opt: StepSchedule(opt, step_size=30)``
    workers : threads that prepare batches (0: in the calling thread)
    val_crops : ``"center"`` or ``"ten"`` (the paper's test protocol, §4.1, 10x slower)
    print_freq : log a progress line every this many batches
    device : ``"cpu"`` (the layers on the current CPU backend) or ``"cuda"`` (the whole step
        on the GPU)
    devices : the paper's two-tower split (§3.2) over these two devices, e.g. ``"cpu:0,cpu:1"``
        (two CPU threads), ``"cuda:0,cuda:1"`` (two GPUs, with ``device="cuda"``) or
        ``"cuda:0,cuda:0"`` (one GPU, two streams); ``None``: one device
    tower_mode : with ``devices`` on the CPU, ``"threads"`` (the towers at the same time) or
        ``"sequential"`` (one after the other, for stepping through; the same numbers)
    threads : CPU threads for Numba's kernels and NumPy's BLAS together
        (``minialexnet.threads.set_threads``); ``None``: leave them as they are (all cores)
    gemm : with ``device="cuda"``, the matrix products: ``"auto"`` (cuBLAS where
        nvmath-python is installed, else the hand-written kernel), ``"numba"`` (the
        hand-written SGEMM, ``kernels/cuda/gemm.py``) or ``"cublas"``

    Which engine runs these settings is decided in one place, ``make_engine``.
    """

    epochs: int = ARCH_DEFAULTS["paper"]["epochs"]
    batch_size: int = ARCH_DEFAULTS["paper"]["batch_size"]
    lr: float = ARCH_DEFAULTS["paper"]["lr"]
    momentum: float = 0.9
    weight_decay: float = 0.0005
    schedule: Schedule = "plateau"
    workers: int = 0
    val_crops: str = "center"
    print_freq: int = 20
    device: str = "cpu"
    devices: str | None = None
    tower_mode: str = "threads"
    threads: int | None = None
    gemm: str = "auto"

    def __post_init__(self) -> None:
        if self.threads is not None:
            self.threads = check_positive_int(self.threads, "threads")
        self.epochs = check_positive_int(self.epochs, "epochs")
        self.batch_size = check_positive_int(self.batch_size, "batch_size")
        self.print_freq = check_positive_int(self.print_freq, "print_freq")
        for name, value, allowed in (
            ("val_crops", self.val_crops, CROPS),
            ("device", self.device, DEVICES),
            ("tower_mode", self.tower_mode, TOWER_MODES),
            ("gemm", self.gemm, GEMMS),
        ):
            if value not in allowed:
                raise ValueError(f"TrainConfig: {name} must be one of {allowed}, got {value!r}")
