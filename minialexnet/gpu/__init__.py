"""Everything device-resident: AlexNet trained on GPUs with numba.cuda (optional dependency).

==========  =================================================================================
layers.py   the device twins of the layers (``DeviceLayer`` family), buffers reused per batch
model.py    ``CudaAlexNet``: the whole training step on one GPU, an engine
devices.py  ``CUDADevice`` (a tower of the §3.2 split on a GPU) and ``TowerLayer``
towers.py   ``CudaTwoTowerAlexNet``: the §3.2 split trained on GPU towers, an engine
step.py     what both engines share: checks, upload, loss, the §5 update (``GPUEngine``)
==========  =================================================================================

Both engines answer the engine protocol of ``minialexnet.engine``. The kernels they launch
live in ``minialexnet.kernels.cuda``. Importing this package imports numba.cuda (but does not
touch a GPU); building an engine without a GPU (or the CUDA simulator) raises a clear
``RuntimeError``. Imports point one way: this package uses ``minialexnet.parallel``, never
the reverse.
"""

# First, before any module below imports numba.cuda: the package of the kernels applies the
# NumPy compatibility shim (minialexnet/kernels/cuda/_compat.py).
import minialexnet.kernels.cuda  # noqa: F401  (isort: skip)
from minialexnet.gpu.devices import CUDADevice
from minialexnet.gpu.model import CudaAlexNet
from minialexnet.gpu.towers import CudaTwoTowerAlexNet, default_devices

__all__ = ["CudaAlexNet", "CudaTwoTowerAlexNet", "CUDADevice", "default_devices"]
