"""The two collectives of the two-tower split (§3.2) on a GPU: gather and reduce along axis 1.

No CPU twin: on the CPU the split gathers with ``np.concatenate(pieces, axis=1)`` and reduces
with ``+`` (``minialexnet.parallel.devices.CPUDevice``). On a GPU
(``minialexnet.gpu.devices.CUDADevice``) both are small kernels over arrays viewed as
(N, C, P), with P = H*W for maps and 1 for feature vectors::

    place_columns   out[:, offset : offset + C_piece] = piece        (forward: the gather)
    add_columns     out (+)= full[:, start : start + W]              (backward: the reduce)

One thread per output element, gather-style: each thread reads the values it writes, so
there are no atomics and the towers' additions happen in a fixed order (tower order), as in
``CPUDevice.sum_slices``.
"""

from __future__ import annotations

from numba import cuda

from minialexnet.kernels.cuda._launch import THREADS_PER_BLOCK, blocks_for, check_device_array


@cuda.jit
def _place_columns_kernel(piece, out, offset):
    """piece (N, Cp, P); out (N, C, P): ``out[n, offset + c, p] = piece[n, c, p]``.

    Thread t -> the t-th element of out's block ``[:, offset : offset + Cp]``; launched once
    per tower's piece, so every element of ``out`` is written exactly once."""
    t = cuda.grid(1)
    n_images, width, pixels = piece.shape
    if t < n_images * width * pixels:
        p = t % pixels
        c = (t // pixels) % width
        n = t // (pixels * width)
        out[n, offset + c, p] = piece[n, c, p]


@cuda.jit
def _add_columns_kernel(full, start, out, accumulate):
    """full (N, C, P); out (N, W, P): ``out[n, c, p] (+)= full[n, start + c, p]``.

    ``accumulate`` False for the first tower's array (a copy), True for the next (a sum), so
    the float32 additions happen in tower order. Thread t -> out.flat[t]."""
    t = cuda.grid(1)
    n_images, width, pixels = out.shape
    if t < n_images * width * pixels:
        p = t % pixels
        c = (t // pixels) % width
        n = t // (pixels * width)
        value = full[n, start + c, p]
        if accumulate:
            value = out[n, c, p] + value
        out[n, c, p] = value


def _check_ncp(a, who: str, name: str):
    check_device_array(a, who, name, ndim=3)
    return a


def place_columns(piece, out, offset: int, stream=0):
    """Copy ``piece`` (N, Cp, P) into the channels ``[offset, offset + Cp)`` of ``out``
    (N, C, P), float32 device arrays; returns ``out``. One thread per element of ``piece``."""
    _check_ncp(piece, "place_columns", "piece")
    _check_ncp(out, "place_columns", "out")
    n, width, pixels = piece.shape
    if (out.shape[0], out.shape[2]) != (n, pixels) or not 0 <= offset <= out.shape[1] - width:
        raise ValueError(
            f"place_columns: a piece of shape {tuple(piece.shape)} does not fit "
            f"at channel {offset} of an array of shape {tuple(out.shape)}"
        )
    _place_columns_kernel[blocks_for(piece.size), THREADS_PER_BLOCK, stream](piece, out, offset)
    return out


def add_columns(full, start: int, out, accumulate: bool, stream=0):
    """``out = full[:, start : start + W]`` (``accumulate`` False) or ``out += ...`` (True),
    with ``out`` (N, W, P) and ``full`` (N, C, P) float32 device arrays; returns ``out``. One
    thread per element of ``out``."""
    _check_ncp(full, "add_columns", "full")
    _check_ncp(out, "add_columns", "out")
    n, width, pixels = out.shape
    if (full.shape[0], full.shape[2]) != (n, pixels) or not 0 <= start <= full.shape[1] - width:
        raise ValueError(
            f"add_columns: channels {start}:{start + width} of an array of shape "
            f"{tuple(full.shape)} do not match an output of shape "
            f"{tuple(out.shape)}"
        )
    _add_columns_kernel[blocks_for(out.size), THREADS_PER_BLOCK, stream](
        full, start, out, bool(accumulate)
    )
    return out
