"""The paper's SGD update (§5) for one parameter array, the readable NumPy reference.

``minialexnet.optim.SGD`` calls it for every parameter; ``kernels/cpu/sgd.py`` is the
compiled twin and ``kernels/cuda/sgd.py`` the GPU one. The update, term by term, each term
rounded to the parameter's dtype (float32 in training)::

    v <- momentum * v - (weight_decay * lr) * w - lr * g
    w <- w + v

``weight_decay * lr`` is formed in float64 and rounded once, so every path uses the same
float32 coefficients. Four whole-array passes and two temporaries of ``w``'s size: clear,
but at the paper network's 61 million parameters it reads and writes about 3 GB per step,
which the twin does in one pass.
"""

from __future__ import annotations

import numpy as np


def sgd_update(
    w: np.ndarray, g: np.ndarray, v: np.ndarray, lr: float, momentum: float, weight_decay: float
) -> None:
    """One §5 momentum step, in place: ``v <- momentum v - weight_decay lr w - lr g``,
    ``w <- w + v``. ``w``, ``g``, ``v``: arrays of one shape and dtype; ``g`` is only read."""
    dtype = w.dtype.type
    v *= dtype(momentum)
    v -= dtype(weight_decay * lr) * w
    v -= dtype(lr) * g
    w += v
