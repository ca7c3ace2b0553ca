"""The one error type of ONNX import and export (no ``onnx`` import: catchable without it)."""

from __future__ import annotations


class ONNXFormatError(ValueError):
    """A file that is not an ONNX model, is damaged, or holds a network that ``load_onnx``
    cannot reproduce exactly; the message names the file, node, op and attribute."""
