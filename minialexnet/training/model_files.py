"""One entry point for every file that holds a network: a checkpoint (``.npz``) or ONNX.

``load_model(path) -> (model, ckpt)`` is what ``evaluate``, ``predict``, ``export``,
``features`` and ``train --pretrained`` call, so wherever a checkpoint is taken an ``.onnx``
file is taken too. For an ONNX file ``ckpt`` is a ``Checkpoint`` made up from the network
itself (no parameters, momentum or statistics): its ``meta`` has the entries a checkpoint's
has (arch, model, num_classes, input_size, image_size, class_names), so the callers never
ask which kind of file they read.

What the two kinds of file carry about the input (``minialexnet.preprocessing``): both carry
the network's preprocessing and class names (in ``model.config``); only a checkpoint carries
the training set's mean image and the stored image size S. A network that subtracts a mean
*pixel* (BVLC's) needs neither; one that subtracts the mean image needs its checkpoint
(``needs_mean_image``).
"""

from __future__ import annotations

import os

from minialexnet.preprocessing import check_preprocessing
from minialexnet.training.checkpoint import (
    FORMAT_VERSION,
    Checkpoint,
    CheckpointError,
    model_from_checkpoint,
)
from minialexnet.training.config import ARCH_DEFAULTS

ONNX_SUFFIX = ".onnx"

#: The side S of the stored images a network's input crops are cut from, for files that do
#: not record it (ONNX): the paper's 256 for 224/227 inputs (BVLC: resize to 256, crop 224).
STORED_SIZE = {"paper": 256, "bvlc": 256, "mini": 64, "tiny": 32}


def is_onnx(path) -> bool:
    """Is ``path`` an ONNX file (by its name)?"""
    return os.fspath(path).lower().endswith(ONNX_SUFFIX)


def load_model(path, rng=None):
    """``(model, ckpt)`` from a checkpoint ``.npz`` or an ``.onnx`` file (module docstring).

    ``rng`` becomes the model's dropout generator. Raises ``CheckpointError`` (a
    ``ValueError``) naming the file for anything unreadable: missing, truncated, not a
    checkpoint, not ONNX, not an AlexNet, or ``onnx`` not installed for an ``.onnx`` file.
    """
    path = os.fspath(path)
    if not is_onnx(path):
        return model_from_checkpoint(path, rng=rng)
    if not os.path.isfile(path):
        raise CheckpointError(f"{path} does not exist (or is not a file)")
    try:
        from minialexnet import load_onnx  # optional dependency: onnx

        model = load_onnx(path, rng=rng)
    except ImportError as err:
        raise CheckpointError(f"{path}: {err}") from None
    except ValueError as err:  # ONNXFormatError and bad metadata
        raise CheckpointError(str(err)) from None
    meta = {
        "format_version": FORMAT_VERSION,
        "arch": model.config["variant"],
        "model": model.config,
        "num_classes": model.num_classes,
        "input_size": model.input_size,
        "image_size": stored_image_size(model),
        "class_names": model.class_names,
        "source": "onnx",
    }
    return model, Checkpoint(meta=meta)


def stored_image_size(model, ckpt: Checkpoint | None = None) -> int:
    """S of the stored images for ``model``: the checkpoint's, else ``STORED_SIZE`` of its
    variant, else the input size plus an eighth (224 -> 256, like the paper's 227 of 256)."""
    if ckpt is not None and ckpt.meta.get("image_size"):
        return int(ckpt.meta["image_size"])
    variant = model.config["variant"]
    size = STORED_SIZE.get(variant) or ARCH_DEFAULTS.get(variant, {}).get("image_size")
    return int(size or round(model.input_size * 8 / 7))


def needs_mean_image(config: dict) -> bool:
    """Does the network of ``config`` (``model.config``) subtract the training mean image?"""
    return check_preprocessing(config.get("preprocessing"))["mean"] == "image"


def check_mean_image(model, ckpt: Checkpoint, path) -> None:
    """``CheckpointError`` when ``model`` subtracts a mean image that ``ckpt`` lacks."""
    if needs_mean_image(model.config) and ckpt.stats is None:
        kind = "ONNX files do not store it" if is_onnx(path) else "it was saved without stats"
        raise CheckpointError(
            f"{path}: this network subtracts its training set's mean image "
            f"(§2), which the file does not hold ({kind}); use the "
            f"training checkpoint (.npz) instead"
        )
