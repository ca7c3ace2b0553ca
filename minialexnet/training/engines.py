"""The one place that chooses the hardware: ``make_engine`` (see ``minialexnet.engine``).

=====================================  ==============================================
``config``                             engine
=====================================  ==============================================
``device="cpu"``                       ``CPUEngine(AlexNet)``: the layers on the CPU
``device="cpu", devices="cpu:0,..."``  ``CPUEngine(TwoTowerAlexNet)``: the §3.2 split
                                       on two CPU threads
``device="cuda"``                      ``minialexnet.gpu.CudaAlexNet``: the step on one GPU
``device="cuda", devices="cuda:.."``   ``minialexnet.gpu.CudaTwoTowerAlexNet``: the §3.2
                                       split on GPUs
=====================================  ==============================================

Every engine answers the same calls, so the trainer and evaluation never ask which one they
drive. ``minialexnet.gpu`` needs numba.cuda and is imported only when a GPU engine is built.
"""

from __future__ import annotations

from minialexnet.distributed import DataParallelEngine, SingleProcess
from minialexnet.engine import CPUEngine
from minialexnet.optim import SGD, frozen_parameters
from minialexnet.parallel import TwoTowerAlexNet
from minialexnet.training.config import TrainConfig


def make_engine(model, optimizer, config: TrainConfig, context=None):
    """The engine that runs ``model`` (and ``optimizer``) on the hardware ``config`` names.

    With a ``context`` of several processes (``minialexnet.distributed.init_context()``
    under ``mpiexec``), the local engine is wrapped in a ``DataParallelEngine``: each process
    computes the gradient of its shard of every batch, one Allreduce sums them, and every
    process applies the same update (docs/distributed.md). A GPU engine then takes the GPU of
    the process's local rank.

    Parameters
    ----------
    model : a host ``AlexNet`` (any variant); on the CPU without ``config.devices`` also an
        already split ``TwoTowerAlexNet``
    optimizer : ``minialexnet.optim.SGD`` over ``model``, or ``None`` for inference only
    config : ``TrainConfig``; reads ``device``, ``devices``, ``tower_mode``, ``gemm`` and
        ``batch_size`` (the largest batch a GPU engine reserves memory for; it grows if a
        larger one comes)

    ``engine.model`` and ``engine.optimizer`` are what checkpoints save: ``model`` and
    ``optimizer`` themselves, except for the CPU split, whose engine trains a
    ``TwoTowerAlexNet`` copy of ``model`` with an ``SGD`` over the towers (same settings and
    momentum). Raises ``ValueError`` for devices that cannot hold the split, ``RuntimeError``
    or ``ImportError`` when ``device="cuda"`` has no usable GPU, ``ValueError`` for frozen
    layers (``AlexNet.freeze``) on any engine but the single-device ``CPUEngine``.
    """
    context = SingleProcess() if context is None else context
    engine = _local_engine(model, optimizer, config, context)
    return engine if context.size == 1 else DataParallelEngine(engine, context)


def _local_engine(model, optimizer, config: TrainConfig, context):
    """The engine of this process alone."""
    if frozen_parameters(model) and (config.device == "cuda" or config.devices):
        raise ValueError(
            f"frozen layers ({', '.join(model.frozen_layers)}; fine-tuning with "
            f"--freeze) train on the CPU engine only: the GPU engines and the "
            f"two-tower split update every layer. Use --backend numba without "
            f"--devices, or fine-tune without --freeze"
        )
    if config.device == "cuda":
        return _gpu_engine(model, optimizer, config, context)
    if config.devices and "cuda" in str(config.devices):
        raise ValueError(
            f"devices {config.devices!r} are GPUs, but the engine runs on the CPU; "
            f"pass --backend cuda (device='cuda'), or use devices='cpu:0,cpu:1'"
        )
    if config.devices:
        return _cpu_split_engine(model, optimizer, config)
    return CPUEngine(model, optimizer)


def _gpu_engine(model, optimizer, config: TrainConfig, context):
    """The whole step on the GPU(s): one device, or the two-tower split (§3.2)."""
    from minialexnet import gpu  # optional dependency: numba.cuda

    if context.size > 1:
        if config.devices:
            raise ValueError(
                "--devices (the two-tower split) cannot be combined with MPI data "
                "parallelism; drop --devices: each process takes one GPU"
            )
        from numba import cuda

        cuda.select_device(context.local_rank)  # the GPU of this process's local rank
    if config.devices:
        return gpu.CudaTwoTowerAlexNet(
            model,
            optimizer,
            batch_size=config.batch_size,
            devices=config.devices,
            gemm=config.gemm,
        )
    return gpu.CudaAlexNet(model, optimizer, batch_size=config.batch_size, gemm=config.gemm)


def _cpu_split_engine(model, optimizer, config: TrainConfig) -> CPUEngine:
    """The §3.2 split of ``model`` over two CPU devices, with ``optimizer`` carried over."""
    if isinstance(model, TwoTowerAlexNet):
        raise ValueError(
            f"the model is already split over {model.devices}; leave "
            f"config.devices at None, or pass the single-device AlexNet"
        )
    towers = TwoTowerAlexNet.from_model(model, devices=config.devices, mode=config.tower_mode)
    if optimizer is None:
        return CPUEngine(towers)
    state = optimizer.state_dict()
    tower_optimizer = SGD(
        towers, lr=state["lr"], momentum=state["momentum"], weight_decay=state["weight_decay"]
    )
    tower_optimizer.load_state_dict({**state, "velocity": towers.split(state["velocity"])})
    return CPUEngine(towers, tower_optimizer)
