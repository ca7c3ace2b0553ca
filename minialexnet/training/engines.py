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

from minialexnet.engine import CPUEngine
from minialexnet.optim import SGD, frozen_parameters
from minialexnet.parallel import TwoTowerAlexNet
from minialexnet.training.config import TrainConfig


def make_engine(model, optimizer, config: TrainConfig):
    """The engine that runs ``model`` (and ``optimizer``) on the hardware ``config`` names.

    Parameters
    ----------
    model : a host ``AlexNet`` (any variant); on the CPU without ``config.devices`` also an
        already split ``TwoTowerAlexNet``
    optimizer : ``minialexnet.optim.SGD`` over ``model``, or ``None`` for inference only
    config : ``TrainConfig``; reads ``device``, ``devices``, ``tower_mode``, ``batch_size``
        (the largest batch a GPU engine reserves memory for; it grows if a larger one comes)

    ``engine.model`` and ``engine.optimizer`` are what checkpoints save: ``model`` and
    ``optimizer`` themselves, except for the CPU split, whose engine trains a
    ``TwoTowerAlexNet`` copy of ``model`` with an ``SGD`` over the towers (same settings and
    momentum). Raises ``ValueError`` for devices that cannot hold the split, ``RuntimeError``
    or ``ImportError`` when ``device="cuda"`` has no usable GPU, ``ValueError`` for frozen
    layers (``AlexNet.freeze``) on any engine but the single-device ``CPUEngine``.
    """
    if frozen_parameters(model) and (config.device == "cuda" or config.devices):
        raise ValueError(f"frozen layers ({', '.join(model.frozen_layers)}; fine-tuning with "
                         f"--freeze) train on the CPU engine only: the GPU engines and the "
                         f"two-tower split update every layer. Use --backend numba without "
                         f"--devices, or fine-tune without --freeze")
    if config.device == "cuda":
        return _gpu_engine(model, optimizer, config)
    if config.devices:
        return _cpu_split_engine(model, optimizer, config)
    return CPUEngine(model, optimizer)


def _gpu_engine(model, optimizer, config: TrainConfig):
    """The whole step on the GPU(s): one device, or the two-tower split (§3.2)."""
    from minialexnet import gpu        # optional dependency: numba.cuda

    if config.devices:
        return gpu.CudaTwoTowerAlexNet(model, optimizer, batch_size=config.batch_size,
                                       devices=config.devices)
    return gpu.CudaAlexNet(model, optimizer, batch_size=config.batch_size)


def _cpu_split_engine(model, optimizer, config: TrainConfig) -> CPUEngine:
    """The §3.2 split of ``model`` over two CPU devices, with ``optimizer`` carried over."""
    if isinstance(model, TwoTowerAlexNet):
        raise ValueError(f"the model is already split over {model.devices}; leave "
                         f"config.devices at None, or pass the single-device AlexNet")
    towers = TwoTowerAlexNet.from_model(model, devices=config.devices, mode=config.tower_mode)
    if optimizer is None:
        return CPUEngine(towers)
    state = optimizer.state_dict()
    tower_optimizer = SGD(towers, lr=state["lr"], momentum=state["momentum"],
                          weight_decay=state["weight_decay"])
    tower_optimizer.load_state_dict({**state, "velocity": towers.split(state["velocity"])})
    return CPUEngine(towers, tower_optimizer)
