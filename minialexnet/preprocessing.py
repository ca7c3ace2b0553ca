"""What a network expects of its input pixels, carried with the network (§2).

A trained network only works on pixels prepared the way its training pixels were. The paper
subtracts "the mean activity over the training set from each pixel" of RGB images in the
0..255 scale (§2); BVLC's Caffe AlexNet was trained on BGR images (OpenCV's order) minus a
mean *pixel*, (104, 117, 123) in BGR order, and so are the ONNX model zoo's files made from
it. Feed one network the other's pixels and it still answers, just badly. So every
``AlexNet`` carries a preprocessing description in ``model.config["preprocessing"]`` (and
with it in checkpoints and exported ONNX files), a JSON-ready dict::

    {"channels": "RGB", "mean": "image"}                  # our networks (the default)
    {"channels": "BGR", "mean": [104.0, 117.0, 123.0]}    # BVLC AlexNet

- ``channels``: the order of the network's three input channels, ``"RGB"`` or ``"BGR"``.
- ``mean``: ``"image"``, the training set's mean image (``DatasetStats.mean``, RGB, cropped at
  the crop's place), or a pixel triple subtracted everywhere, in the network's channel
  order, on 0..255 values.

:func:`preprocess` applies it to uint8 RGB images.
"""

from __future__ import annotations

import numbers

import numpy as np

from minialexnet.checks import check_positive_int

CHANNEL_ORDERS = ("RGB", "BGR")
PAPER_PREPROCESSING = {"channels": "RGB", "mean": "image"}
BVLC_PREPROCESSING = {"channels": "BGR", "mean": [104.0, 117.0, 123.0]}


def check_preprocessing(preprocessing) -> dict:
    """A validated, JSON-ready copy of a preprocessing description (see the module docstring);
    ``None`` gives the paper's ``{"channels": "RGB", "mean": "image"}``."""
    if preprocessing is None:
        return dict(PAPER_PREPROCESSING)
    if not isinstance(preprocessing, dict) or set(preprocessing) != {"channels", "mean"}:
        raise ValueError(
            f"preprocessing must be a dict with exactly the keys 'channels' and "
            f"'mean', e.g. {PAPER_PREPROCESSING} or {BVLC_PREPROCESSING}; got "
            f"{preprocessing!r}"
        )
    channels, mean = preprocessing["channels"], preprocessing["mean"]
    if channels not in CHANNEL_ORDERS:
        raise ValueError(
            f"preprocessing 'channels' must be one of {CHANNEL_ORDERS}, got {channels!r}"
        )
    if mean != "image":
        if (
            not isinstance(mean, (list, tuple))
            or len(mean) != 3
            or not all(
                isinstance(v, numbers.Real) and not isinstance(v, bool) and np.isfinite(v)
                for v in mean
            )
        ):
            raise ValueError(
                f"preprocessing 'mean' must be 'image' (the training mean image) "
                f"or three finite numbers (a mean pixel in the network's channel "
                f"order, 0..255 scale), got {mean!r}"
            )
        mean = [float(v) for v in mean]
    return {"channels": channels, "mean": mean}


def check_class_names(class_names, num_classes: int) -> list | None:
    """``None`` or a list of ``num_classes`` strings (fc8's output ``i`` is class ``i``)."""
    if class_names is None:
        return None
    names = list(class_names) if isinstance(class_names, (list, tuple)) else None
    if names is None or not all(isinstance(n, str) for n in names):
        raise ValueError(f"class_names must be a list of strings, got {class_names!r:.200}")
    if len(names) != check_positive_int(num_classes, "num_classes"):
        raise ValueError(
            f"class_names has {len(names)} names but the network has "
            f"{num_classes} classes; give one name per output of fc8"
        )
    return names


def preprocess(
    images: np.ndarray, preprocessing: dict, mean_image: np.ndarray | None = None
) -> np.ndarray:
    """Network input from uint8 RGB images: float32 ``(N, 3, H, W)``.

    ``images``: uint8 ``(N, 3, H, W)``, RGB, already cropped to the network's input size.
    ``preprocessing``: a description (module docstring), e.g. ``model.config["preprocessing"]``.
    ``mean_image``: float32 ``(3, H, W)`` RGB, the training mean image cropped at the same
    place, needed when ``preprocessing["mean"] == "image"``.

    ``x = reorder(images) - mean``, where ``reorder`` puts the channels in the network's order
    and the mean is the pixel triple (already in that order) or the reordered mean image.
    """
    p = check_preprocessing(preprocessing)
    if (
        not isinstance(images, np.ndarray)
        or images.dtype != np.uint8
        or images.ndim != 4
        or images.shape[1] != 3
    ):
        what = (
            f"dtype {images.dtype}, shape {images.shape}"
            if isinstance(images, np.ndarray)
            else type(images).__name__
        )
        raise ValueError(f"preprocess expects uint8 RGB images of shape (N, 3, H, W), got {what}")
    order = slice(None) if p["channels"] == "RGB" else slice(None, None, -1)
    x = images[:, order].astype(np.float32)
    if p["mean"] == "image":
        if mean_image is None or np.shape(mean_image) != images.shape[1:]:
            raise ValueError(
                f"this network subtracts the training mean image: pass "
                f"mean_image of shape {images.shape[1:]} (the dataset statistics' "
                f"mean, cropped like the images), got "
                f"{None if mean_image is None else np.shape(mean_image)}"
            )
        x -= np.asarray(mean_image, dtype=np.float32)[order]
    else:
        x -= np.asarray(p["mean"], dtype=np.float32)[:, None, None]
    return x


def preprocessing_of(net) -> dict:
    """The preprocessing of a network or an engine (its ``model``'s), else the paper's.

    ``net``: an ``AlexNet``, a ``TwoTowerAlexNet`` (both carry ``config``), any engine
    (``minialexnet.engine``: its host ``model``), or anything else (the paper's default).
    """
    for candidate in (net, getattr(net, "model", None)):
        config = getattr(candidate, "config", None)
        if isinstance(config, dict) and "preprocessing" in config:
            return check_preprocessing(config["preprocessing"])
    return dict(PAPER_PREPROCESSING)


def subtracted_mean(
    preprocessing: dict, mean_image: np.ndarray | None, image_size: int
) -> np.ndarray:
    """What the batch loader subtracts from RGB images: float32 ``(3, S, S)``, RGB order.

    The training mean image itself (the same array, so the paper's path is unchanged) for
    ``mean == "image"``; else the mean pixel at every position, put in RGB order (the loader
    reorders the channels to the network's order after subtracting, ``to_network_order``).
    """
    p = check_preprocessing(preprocessing)
    if p["mean"] == "image":
        if mean_image is None:
            raise ValueError(
                "this network subtracts the training set's mean image (§2), but "
                "none was given: pass the training statistics (a checkpoint "
                "stores them; an ONNX file does not)"
            )
        return mean_image
    pixel = np.asarray(p["mean"], dtype=np.float32)
    if p["channels"] == "BGR":
        pixel = pixel[::-1]
    return np.ascontiguousarray(np.broadcast_to(pixel[:, None, None], (3, image_size, image_size)))


def to_network_order(x: np.ndarray, preprocessing: dict) -> np.ndarray:
    """Batches ``(B, 3, H, W)`` in RGB order put into the network's channel order (a
    C-contiguous copy for ``"BGR"``; ``x`` itself for ``"RGB"``)."""
    if check_preprocessing(preprocessing)["channels"] == "RGB":
        return x
    return np.ascontiguousarray(x[:, ::-1])
