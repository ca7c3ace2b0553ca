"""Feature extraction: one layer's activations for a folder of images, for scikit-learn and
other tools (a pretrained network as a fixed feature extractor).

    from minialexnet.features import extract_features
    features, names = extract_features("bvlcalexnet-12.onnx", "my_photos/cats/", layer="fc7")
    # features: float32 (N, 4096), names: the N image paths, in the same order

    python -m minialexnet.features MODEL FOLDER -o feats.npy --layer fc7
    # writes feats.npy (N, D) float32 and feats.txt (the N image paths, one per line)

Each image is seen exactly as ``predict`` sees it (decoded at the network's stored size S,
centre crop, the network's own preprocessing), then run through the network (no dropout) up
to and including ``layer``, and flattened. ``layer`` is any of ``model.layers``: ``fc7`` is
the fully connected layer's output before its ReLU, ``relu7`` after it (Caffe's in-place
``fc7`` blob), ``pool5`` the last convolutional maps (flattened).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from minialexnet.data.dataset import ImageDataset
from minialexnet.data.decode import UnreadableImage, decode_image
from minialexnet.data.folders import DataError, image_paths
from minialexnet.data.loader import BatchLoader
from minialexnet.training.checkpoint import CheckpointError
from minialexnet.training.model_files import check_mean_image, load_model, stored_image_size


def extract_features(
    model,
    images,
    layer: str = "fc7",
    *,
    stats=None,
    image_size: int | None = None,
    batch_size: int = 32,
):
    """``(features, names)``: float32 ``(N, D)`` activations of ``layer`` and the N paths.

    Parameters
    ----------
    model : an ``AlexNet``, or the path of a checkpoint ``.npz`` / ``.onnx`` file (its
        statistics and stored image size are then used)
    images : a folder (its image files, sorted), an image path, or a list of either
    layer : a name of ``model.layers`` (default ``"fc7"``)
    stats : the training set's ``DatasetStats`` for a network that subtracts the mean image
        (a checkpoint brings its own); ``None`` for a mean-pixel network such as BVLC's
    image_size : S, the side images are decoded at before the centre crop (default: the
        checkpoint's, else the network's usual, e.g. 256 for a 224 input)

    Raises ``DataError`` for missing or unreadable images, ``CheckpointError`` for a bad
    model file, ``ValueError`` for an unknown layer.
    """
    ckpt = None
    if isinstance(model, (str, os.PathLike)):
        path = model
        model, ckpt = load_model(path)
        check_mean_image(model, ckpt, path)
        stats = ckpt.stats if stats is None else stats
    if layer not in model.layers:
        raise ValueError(
            f"the network has no layer {layer!r}; choose one of {', '.join(model.layers)}"
        )
    size = image_size or stored_image_size(model, ckpt)
    names = image_paths(images)
    decoded = np.stack([decode_image(name, size) for name in names])
    dataset = ImageDataset(decoded, np.zeros(len(names), dtype=np.int64), ["image"])
    loader = BatchLoader(
        dataset,
        batch_size,
        model.input_size,
        stats,
        train=False,
        preprocessing=model.preprocessing,
    )
    return np.concatenate([_activations(model, x, layer) for x, _ in loader]), names


def _activations(model, x: np.ndarray, layer: str) -> np.ndarray:
    """``model``'s layers on ``x`` up to and including ``layer``, flattened: (B, D) float32."""
    for name, step in model.layers.items():
        x = step.forward(x, train=False)
        if name == layer:
            return np.ascontiguousarray(x.reshape(len(x), -1), dtype=np.float32)
    raise ValueError(f"no layer {layer!r}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m minialexnet.features",
        description="Write one layer's activations for a folder of images to .npy (with the "
        "file names beside it), for scikit-learn and other tools.",
    )
    parser.add_argument("model", metavar="MODEL", help="a checkpoint .npz or an .onnx file")
    parser.add_argument(
        "images", nargs="+", metavar="IMG", help="image files or folders of images"
    )
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="FEATS.npy",
        help="the (N, D) float32 array; the N file names go to FEATS.txt "
        "(one per line, same order) or FEATS.json with --json-names",
    )
    parser.add_argument(
        "--layer", default="fc7", help="fc7 (default; before its ReLU), relu7, fc6, pool5, ..."
    )
    parser.add_argument("-b", "--batch-size", type=int, default=32)
    parser.add_argument(
        "--json-names",
        action="store_true",
        help="write the file names as a JSON list instead of a text file",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m minialexnet.features`` / ``minialexnet-features``."""
    args = build_parser().parse_args(argv)
    try:
        features, names = extract_features(
            args.model, args.images, args.layer, batch_size=args.batch_size
        )
    except (CheckpointError, DataError, UnreadableImage, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    stem = args.output.removesuffix(".npy")
    np.save(f"{stem}.npy", features)
    if args.json_names:
        with open(f"{stem}.json", "w", encoding="utf-8") as f:
            json.dump(names, f, indent=1)
    else:
        with open(f"{stem}.txt", "w", encoding="utf-8") as f:
            f.write("".join(f"{name}\n" for name in names))
    print(
        f"{stem}.npy: {features.shape[0]} images x {features.shape[1]} features of "
        f"{args.layer}; names in {stem}.{'json' if args.json_names else 'txt'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
