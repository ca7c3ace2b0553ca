"""One place for each input check, so every layer and command reports bad input the same way.

Errors say what was wrong and what to do, instead of surfacing as a broadcasting traceback
from deep inside NumPy.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

FLOAT_DTYPES = (np.float32, np.float64)


def check_positive_int(value, name: str, minimum: int = 1) -> int:
    """Return ``value`` as an int, or raise ``ValueError`` if it is not an integer >= minimum."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_real(
    value,
    name: str,
    low: float | None = None,
    high: float | None = None,
    *,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
) -> float:
    """Return ``value`` as a float, or raise ``ValueError`` unless it is a finite real number
    within the bounds (``low <= value`` or ``low < value``; likewise for ``high``)."""
    ok = not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)
    if ok and low is not None:
        ok = value >= low if low_inclusive else value > low
    if ok and high is not None:
        ok = value <= high if high_inclusive else value < high
    if not ok:
        bounds = []
        if low is not None:
            bounds.append(f"{'>=' if low_inclusive else '>'} {low:g}")
        if high is not None:
            bounds.append(f"{'<=' if high_inclusive else '<'} {high:g}")
        raise ValueError(
            f"{name} must be a finite number{' ' if bounds else ''}"
            f"{' and '.join(bounds)}, got {value!r}"
        )
    return float(value)


def check_rng(rng, who: str) -> None:
    """Raise a clear error unless ``rng`` is a ``numpy.random.Generator``."""
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"{who} needs a numpy.random.Generator for its random choices, got "
            f"{type(rng).__name__}; pass rng=np.random.default_rng(seed)"
        )


def check_pair(value, name: str, minimum: int = 1) -> tuple[int, int]:
    """Accept ``k`` or ``(kh, kw)``; return ``(kh, kw)`` of ints >= minimum."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or a pair (height, width), got {value!r}")
        return (
            check_positive_int(value[0], f"{name}[0]", minimum),
            check_positive_int(value[1], f"{name}[1]", minimum),
        )
    v = check_positive_int(value, name, minimum)
    return v, v


def check_array(
    x,
    layer: str,
    ndim: int | None,
    layout: str,
    channels: int | None = None,
    channel_name: str = "C",
) -> np.ndarray:
    """Check that ``x`` is a float32/float64 NumPy array with ``ndim`` axes (any number with
    ``None``) and, if given, ``channels`` along axis 1.

    ``layout`` names the axes for the message, e.g. ``"(N, C, H, W)"``. Returns ``x`` unchanged.
    """
    if not isinstance(x, np.ndarray):
        raise TypeError(
            f"{layer} expects a NumPy array of shape {layout}, got "
            f"{type(x).__name__}; convert with np.asarray(x, dtype=np.float32)"
        )
    if x.dtype.type not in FLOAT_DTYPES:
        raise TypeError(
            f"{layer} expects float32 (or float64 for gradient checks), got "
            f"dtype {x.dtype}; convert with x.astype(np.float32)"
        )
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{layer} expects an array of shape {layout}, got shape {x.shape}")
    if channels is not None and x.shape[1] != channels:
        raise ValueError(
            f"{layer} expects {channel_name}={channels} along axis 1 of "
            f"{layout}, got shape {x.shape}"
        )
    if x.size == 0:
        raise ValueError(f"{layer} got an empty array of shape {x.shape}")
    return x


def check_same_shape(dy: np.ndarray, expected: tuple, layer: str) -> np.ndarray:
    """Check an upstream gradient against the shape of the forward output it belongs to."""
    if not isinstance(dy, np.ndarray) or dy.shape != tuple(expected):
        got = dy.shape if isinstance(dy, np.ndarray) else type(dy).__name__
        raise ValueError(
            f"{layer}.backward expects dy of the forward output's shape "
            f"{tuple(expected)}, got {got}"
        )
    return dy


def check_labels(labels, n: int, num_classes: int, who: str) -> np.ndarray:
    """Integer class labels of shape (n,), each in [0, num_classes)."""
    labels = np.asarray(labels)
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"{who} expects integer labels of shape ({n},), got dtype "
            f"{labels.dtype} and shape {labels.shape}"
        )
    if n and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"{who}: labels must lie in [0, {num_classes}), got values from "
            f"{labels.min()} to {labels.max()}"
        )
    return labels
