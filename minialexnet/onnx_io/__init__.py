"""ONNX import and export of AlexNet (needs the optional ``onnx`` package:
``pip install "minialexnet[onnx]"``).

``load_onnx(path) -> AlexNet`` (``reader.py``) and ``save_onnx(model, path)`` (``writer.py``);
both raise ``ONNXFormatError`` (a ``ValueError``, ``errors.py``) for files they cannot
handle. ``minialexnet.load_onnx`` / ``minialexnet.save_onnx`` import this package lazily.
"""

from minialexnet.onnx_io.errors import ONNXFormatError
from minialexnet.onnx_io.reader import load_onnx
from minialexnet.onnx_io.writer import save_onnx

__all__ = ["load_onnx", "save_onnx", "ONNXFormatError"]
