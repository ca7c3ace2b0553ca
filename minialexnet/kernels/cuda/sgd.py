"""The paper's SGD update (§5) on the GPU, one parameter array at a time.

Twin of ``kernels/cpu/sgd.py`` and of the NumPy reference ``kernels/numpy/sgd.py`` (what
``minialexnet.optim.SGD`` calls on the CPU). The update, term by term as there (each term
rounded to float32)::

    v <- momentum * v - (weight_decay * lr) * w - lr * g
    w <- w + v

``weight_decay * lr`` is formed on the host in float64 and rounded once, like the CPU's
``dtype(weight_decay * lr)``, so both paths use the same float32 coefficients.

Thread mapping: one thread per parameter element (arrays treated as flat); ``w`` and ``v``
are updated in place, ``g`` is only read.
"""

from __future__ import annotations

import numpy as np
from numba import cuda

from minialexnet.kernels.cuda._launch import THREADS_PER_BLOCK, blocks_for, check_device_array


@cuda.jit
def _sgd_kernel(w, g, v, lr, momentum, decay_lr):
    i = cuda.grid(1)
    if i < w.shape[0]:
        velocity = v[i] * momentum
        velocity = velocity - decay_lr * w[i]
        velocity = velocity - lr * g[i]
        v[i] = velocity
        w[i] = w[i] + velocity


def sgd_update(w, g, v, lr: float, momentum: float, weight_decay: float, stream=0) -> None:
    """One §5 momentum step for one parameter array, in place on the device.

    w : float32 device array (any shape), the parameter; g : its gradient; v : its momentum
    buffer; all of one shape. ``v <- momentum v - weight_decay lr w - lr g; w <- w + v``.
    """
    check_device_array(w, "sgd_update", "w")
    check_device_array(g, "sgd_update", "g", shape=w.shape)
    check_device_array(v, "sgd_update", "v", shape=w.shape)
    _sgd_kernel[blocks_for(w.size), THREADS_PER_BLOCK, stream](
        w.reshape(w.size),
        g.reshape(g.size),
        v.reshape(v.size),
        np.float32(lr),
        np.float32(momentum),
        np.float32(weight_decay * lr),
    )
