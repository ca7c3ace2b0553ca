"""Summing every gradient across processes with ONE Allreduce on ONE flat float32 buffer.

An Allreduce has a fixed cost per call (latency: a few microseconds on one machine, tens over
a network) on top of its cost per byte. AlexNet has 16 parameter arrays; one call per array
pays the fixed cost 16 times and sends some tiny messages (a bias of 96 floats). So every
gradient is packed into one contiguous float32 buffer, summed in place by one call, and
unpacked back into the arrays the engine's ``apply_update`` reads (``engine.gradient_arrays()``).
The loss and the correct counts of the step ride along in three extra slots at the end of
the same buffer (float32 counts are exact up to 2^24 images per batch).

Where the buffer lives:

- CPU engines: gradients are NumPy arrays; the buffer is a host array.
- GPU engines (device arrays, which have ``copy_to_host``): with a CUDA-aware MPI
  (``context.cuda_aware``) the gradients are packed into a *device* buffer that MPI reads and
  writes directly (over NVLink / GPUDirect RDMA); otherwise each gradient is copied to the
  host buffer, summed there, and copied back. The loss and counts then go in a second, tiny
  host Allreduce. These device copies cannot be tested without a GPU; everything else in
  this file is covered by the CPU tests.
"""

from __future__ import annotations

import numpy as np

STATS = 3
"""Trailing slots of the host buffer: weighted loss, top-1 correct, top-5 correct."""


def _on_device(array) -> bool:
    return hasattr(array, "copy_to_host")


class GradientAllreduce:
    """Weigh and sum float32 ``gradients`` (a list of arrays) over the processes of ``context``.

    ``__call__(gradients, weight, stats)`` replaces every gradient ``g_r`` of this process by
    ``sum_r weight_r * g_r`` over all processes and returns ``stats`` (``STATS`` numbers,
    already weighted by the caller) summed, as float64. ``nbytes``: gradient bytes per step.
    """

    def __init__(self, gradients: list, context) -> None:
        if not gradients:
            raise ValueError("GradientAllreduce needs at least one gradient array")
        for g in gradients:
            if np.dtype(g.dtype) != np.float32:
                raise TypeError(
                    f"data-parallel training sums float32 gradients, got one of "
                    f"dtype {g.dtype} and shape {g.shape}"
                )
        self.context = context
        self.shapes = [tuple(g.shape) for g in gradients]
        sizes = [int(np.prod(shape)) for shape in self.shapes]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        total = int(self.offsets[-1])
        self.on_device = _on_device(gradients[0])
        self.device_buffer = None
        if self.on_device and context.cuda_aware:
            from numba import cuda

            self.device_buffer = cuda.device_array(total, dtype=np.float32)
            self.host = np.zeros(STATS, dtype=np.float32)
        else:
            self.host = np.zeros(total + STATS, dtype=np.float32)
        self.nbytes = 4 * total

    def __call__(self, gradients: list, weight: float, stats) -> np.ndarray:
        shapes = [tuple(g.shape) for g in gradients]
        if shapes != self.shapes:
            raise ValueError(
                f"GradientAllreduce was built for gradients shaped {self.shapes}, got {shapes}"
            )
        if self.device_buffer is not None:
            return self._device_allreduce(gradients, weight, stats)
        self._pack(gradients, np.float32(weight))
        self.host[-STATS:] = stats
        self.context.allreduce_sum(self.host)
        self._unpack(gradients)
        return self.host[-STATS:].astype(np.float64)

    def _parts(self, gradients: list):
        return zip(gradients, self.offsets[:-1], self.offsets[1:])

    def _pack(self, gradients: list, weight: np.float32) -> None:
        """``host[part] <- weight * g`` for every gradient (device ones via a host copy)."""
        for g, start, stop in self._parts(gradients):
            part = self.host[start:stop]
            if self.on_device:
                g.reshape(stop - start).copy_to_host(part)
                part *= weight
            else:
                np.multiply(g.reshape(-1), weight, out=part)

    def _unpack(self, gradients: list) -> None:
        for g, start, stop in self._parts(gradients):
            part = self.host[start:stop]
            if self.on_device:
                g.reshape(stop - start).copy_to_device(part)
            else:
                np.copyto(g, part.reshape(g.shape))

    def _device_allreduce(self, gradients: list, weight: float, stats) -> np.ndarray:
        """CUDA-aware MPI: pack and weigh on the GPU; MPI sums the device buffer."""
        from minialexnet.kernels.cuda.scale import scale_inplace

        flat = self.device_buffer
        for g, start, stop in self._parts(gradients):
            flat[start:stop].copy_to_device(g.reshape(stop - start))
        scale_inplace(flat, weight)
        cuda_synchronize()
        self.context.allreduce_sum(flat)
        for g, start, stop in self._parts(gradients):
            g.reshape(stop - start).copy_to_device(flat[start:stop])
        self.host[:] = stats
        self.context.allreduce_sum(self.host)
        return self.host.astype(np.float64)


def cuda_synchronize() -> None:
    """Wait for the GPU: MPI reads a device buffer outside CUDA's stream order, so the kernels
    writing it must have finished."""
    from numba import cuda

    cuda.synchronize()
