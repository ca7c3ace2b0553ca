"""Numba CPU kernels: compiled twins of kernels/numpy/, same file and function names."""
import importlib

_WHERE = {"im2col": "im2col", "col2im": "im2col",
          "lrn_forward": "lrn", "lrn_backward": "lrn",
          "maxpool_forward": "maxpool", "maxpool_backward": "maxpool"}
__all__ = list(_WHERE)


def __getattr__(name):  # import each kernel file on first use
    if name in _WHERE:
        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
