"""The one output-size helper: every layer, kernel and test imports it from here."""
from __future__ import annotations


def conv_output_size(size: int, kernel_size: int, stride: int = 1, padding: int = 0) -> int:
    """Spatial output size of a convolution or pooling window sliding over one axis.

    ``out = floor((size + 2 * padding - kernel_size) / stride) + 1``

    The same formula serves convolution (§3.5) and pooling (§3.4); trailing rows that do not
    fill a whole window are dropped, as in cuda-convnet, Caffe's convolutions and PyTorch.
    AlexNet's geometry: 227 -conv 11/4-> 55 -pool 3/2-> 27 -conv 5/1 pad 2-> 27 -pool-> 13
    -conv 3/1 pad 1-> 13 -pool-> 6.

    Raises ``ValueError`` with the offending numbers when the window does not fit at all.
    """
    for name, value, least in (("size", size, 1), ("kernel_size", kernel_size, 1),
                               ("stride", stride, 1), ("padding", padding, 0)):
        if int(value) != value or value < least:
            raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
    padded = size + 2 * padding
    if padded < kernel_size:
        raise ValueError(
            f"a {kernel_size}-wide window does not fit an input of size {size} with padding "
            f"{padding} (padded size {padded}); use a larger input or a smaller kernel")
    return (padded - kernel_size) // stride + 1
