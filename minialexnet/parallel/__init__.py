"""The paper's two-GPU model-parallel split (§3.2) on any two devices, passed in by name.

=============  ==============================================================================
towers.py      ``TwoTowerAlexNet``: AlexNet cut into two towers and their stages; ``Tower``,
               ``split_sizes``; why the split equals the grouped single-device network
devices.py     ``Device`` (what a tower asks of its hardware), ``CPUDevice``, ``parse_devices``
runner.py      ``TowerRunner``: the towers' work on two threads, or one after the other
=============  ==============================================================================

Imports point one way: ``minialexnet.gpu`` builds on this package, never the reverse; a
``"cuda:i"`` device name imports ``minialexnet.gpu.devices`` only when it is parsed.
"""

from minialexnet.parallel.devices import CPUDevice, Device, parse_devices
from minialexnet.parallel.runner import TowerRunner
from minialexnet.parallel.towers import NUM_TOWERS, Tower, TwoTowerAlexNet, split_sizes

__all__ = [
    "NUM_TOWERS",
    "TwoTowerAlexNet",
    "Tower",
    "split_sizes",
    "parse_devices",
    "CPUDevice",
    "Device",
    "TowerRunner",
]
