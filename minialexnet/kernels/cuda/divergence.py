"""The device-side NaN guard of a submitted training step: a sticky "diverged" flag.

No CPU twin: the CPU engines test ``math.isfinite(loss)`` on the host. A GPU engine that
queues a whole step without waiting for its loss (``GPUEngine.submit_step``) cannot: the
host learns the loss one step later. So the GPU decides, between the loss and the update::

    diverged[0] <- 1                if totals[0] (the batch's sum of losses) is NaN or +-inf
    totals[3]   <- diverged[0]      (the flag travels to the host with the three numbers)

and the update kernel (``sgd.py``, ``skip_if``) leaves every parameter and momentum buffer
untouched while ``diverged[0]`` is set. The flag is *sticky*: nothing on the GPU clears it,
so the step queued after a diverged one (before the host has heard) does not update either;
the host clears it (``GPUEngine.load_from_host``). A non-finite mean loss is exactly a
non-finite sum (dividing by N cannot turn one into the other).

Thread mapping: a single thread (four numbers).
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda

from minialexnet.kernels.cuda._launch import check_device_array


@cuda.jit
def _mark_kernel(totals, diverged):
    if cuda.grid(1) == 0:
        loss = totals[0]
        if math.isnan(loss) or math.isinf(loss):
            diverged[0] = 1
        totals[3] = diverged[0]


def mark_divergence(totals, diverged, stream=0) -> None:
    """Set ``diverged[0]`` (int32 device array (1,), never cleared here) when ``totals[0]``
    is not finite, and copy the flag into ``totals[3]`` (float32 device array (4,): the
    sum of losses, top-1 and top-5 counts of ``softmax_cross_entropy_forward``, then the
    flag's slot)."""
    check_device_array(totals, "mark_divergence", "totals", shape=(4,))
    check_device_array(diverged, "mark_divergence", "diverged", shape=(1,), dtype=np.int32)
    _mark_kernel[1, 1, stream](totals, diverged)
