"""The one output-size helper: every layer, kernel and test imports it from here."""

from __future__ import annotations


def conv_output_size(
    size: int, kernel_size: int, stride: int = 1, padding: int | tuple[int, int] = 0
) -> int:
    """Spatial output size of a convolution or pooling window sliding over one axis.

    ``out = floor((size + before + after - kernel_size) / stride) + 1``

    ``padding`` is ``p`` (``p`` on both sides, ``before = after = p``) or a pair
    ``(before, after)`` for asymmetric padding, such as Caffe's ceil-mode pooling written as
    ONNX ``pads``: BVLC AlexNet's pool5 pads one row at the bottom and one column at the
    right, ``(0, 1)`` on each axis, so 12 -> 6 instead of 5.

    The same formula serves convolution (§3.5) and pooling (§3.4); trailing rows that do not
    fill a whole window are dropped, as in cuda-convnet, Caffe's convolutions and PyTorch.
    AlexNet's geometry: 227 -conv 11/4-> 55 -pool 3/2-> 27 -conv 5/1 pad 2-> 27 -pool-> 13
    -conv 3/1 pad 1-> 13 -pool-> 6.

    Raises ``ValueError`` with the offending numbers when the window does not fit at all.
    """
    before, after = padding if isinstance(padding, (tuple, list)) else (padding, padding)
    for name, value, least in (
        ("size", size, 1),
        ("kernel_size", kernel_size, 1),
        ("stride", stride, 1),
        ("padding", before, 0),
        ("padding", after, 0),
    ):
        if int(value) != value or value < least:
            raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
    padded = size + before + after
    if padded < kernel_size:
        raise ValueError(
            f"a {kernel_size}-wide window does not fit an input of size {size} with padding "
            f"{padding} (padded size {padded}); use a larger input or a smaller kernel"
        )
    return (padded - kernel_size) // stride + 1
