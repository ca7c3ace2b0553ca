"""Moving activations between the image-major and the channel-major layout, on the GPU.

No CPU twin: the CPU convolution does the same with a NumPy ``reshape``/``transpose``.

im2col puts the whole batch side by side (``cols`` is (C*KH*KW, N*OH*OW), see ``im2col.py``),
so the convolution's GEMM ``W @ cols`` (§3.5) returns its output *channel-major*, (F, N*P)
with P = OH*OW, while the next layer wants NCHW, (N, F, P). Backward needs the reverse for
``dy``. Both are a transpose of the two outer axes of a 3-D array with the pixel axis kept
innermost::

    to_image_major:   y[n, f, p]        = y_cm[f, n*P + p]
    to_channel_major: dy_cm[f, n*P + p] = dy[n, f, p]

Thread mapping: one thread per output element, consecutive threads on consecutive pixels,
so both reads and writes are contiguous runs of P values.
"""

from __future__ import annotations

from numba import cuda

from minialexnet.kernels.cuda._launch import (
    THREADS_PER_BLOCK,
    blocks_for,
    check_device_array,
    output,
)


@cuda.jit
def _swap_outer_axes_kernel(src, dst):
    """src: (A, B, P); dst: (B, A, P); dst[b, a, p] = src[a, b, p]. Thread t -> dst.flat[t]."""
    t = cuda.grid(1)
    outer_b, outer_a, pixels = dst.shape
    if t < outer_b * outer_a * pixels:
        p = t % pixels
        a = (t // pixels) % outer_a
        b = t // (pixels * outer_a)
        dst[b, a, p] = src[a, b, p]


def to_image_major(y_cm, n_images: int, out=None, stream=0):
    """(F, N*P) channel-major output of a convolution's GEMM (§3.5) -> (N, F, P)
    image-major; returns ``out``.

    y_cm : float32 device array (F, N*P); out : optional float32 (N, F, P) to overwrite (reshape
    the result to (N, F, OH, OW) for the next layer). One thread per element.
    """
    check_device_array(y_cm, "to_image_major", "y_cm", ndim=2)
    features, columns = y_cm.shape
    if columns % n_images:
        raise ValueError(f"to_image_major: {columns} columns do not split into {n_images} images")
    pixels = columns // n_images
    out = output(out, (n_images, features, pixels), "to_image_major", "out", stream=stream)
    _swap_outer_axes_kernel[blocks_for(out.size), THREADS_PER_BLOCK, stream](
        y_cm.reshape(features, n_images, pixels), out
    )
    return out


def to_channel_major(dy, out=None, stream=0):
    """(N, F, P) image-major gradient -> (F, N*P) channel-major, the layout of the
    convolution's backward GEMMs (§3.5); returns ``out``.

    dy : float32 device array (N, F, P) (an (N, F, OH, OW) array reshaped); out : optional
    float32 (F, N*P) to overwrite. One thread per element.
    """
    check_device_array(dy, "to_channel_major", "dy", ndim=3)
    n_images, features, pixels = dy.shape
    out = output(out, (features, n_images * pixels), "to_channel_major", "out", stream=stream)
    _swap_outer_axes_kernel[blocks_for(out.size), THREADS_PER_BLOCK, stream](
        dy, out.reshape(features, n_images, pixels)
    )
    return out
