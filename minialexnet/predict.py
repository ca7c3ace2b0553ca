"""Classify your own photos with a trained checkpoint: the top-k classes and their probabilities.

    python -m minialexnet.predict --checkpoint runs/in100/checkpoint_best.npz cat.jpg dog.png
    python -m minialexnet.predict --checkpoint ckpt.npz ~/Pictures/holiday/ --topk 3 --ten-crop
    python -m minialexnet.predict bvlcalexnet-12.onnx cat.jpg      # the network positionally

The network comes from a checkpoint ``.npz`` or an ``.onnx`` file (``--checkpoint FILE``, or
as the first positional argument), and brings its own preprocessing and class names.

Each image (any size; JPEG, PNG, ... whatever its name says; greyscale, palette, CMYK and
16-bit images become RGB; the EXIF orientation of phone photos is applied) goes through the
same steps as the training data (§2): the shorter side is scaled to the checkpoint's S and the
central S x S square kept (``minialexnet.data.decode.decode_image``); then the centre crop of
the network's input size, or the ten crops of §4.1 with ``--ten-crop`` (softmax averaged),
prepared as the network expects: minus the training set's mean image stored in the
checkpoint, or (BVLC's networks) in BGR order minus their mean pixel. A folder argument stands for
the images directly inside it.

Output, per image: its path, then ``rank. probability  class``, where the class is the
training folder's name, with the human-readable ImageNet name for a wnid ("tench
(n01440764)").

A model trained on the built-in synthetic shapes says so first: it knows only those classes.

Exit status 0; 2 with a message (no traceback) for a missing or corrupt checkpoint or when an
image cannot be read (the readable ones are still classified).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from minialexnet.cli import BACKENDS, UsageError, inference_engine, positive_int
from minialexnet.data.dataset import ImageDataset
from minialexnet.data.decode import UnreadableImage, decode_image
from minialexnet.data.folders import DataError, image_paths
from minialexnet.data.subsets import display_name
from minialexnet.metrics import predict_proba
from minialexnet.training.checkpoint import CheckpointError
from minialexnet.training.model_files import check_mean_image, load_model, stored_image_size


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m minialexnet.predict",
        description="Top-k classes of your own images, with a trained minialexnet checkpoint.",
    )
    parser.add_argument(
        "--checkpoint",
        "-c",
        default=None,
        metavar="MODEL",
        help="a checkpoint .npz written by training, or an .onnx file; without "
        "it the first positional argument is the network file",
    )
    parser.add_argument(
        "images", nargs="+", metavar="IMG", help="[MODEL] then image files, or folders of images"
    )
    parser.add_argument(
        "--topk", "-k", type=positive_int, default=5, help="classes to show (default 5)"
    )
    parser.add_argument(
        "--ten-crop",
        action="store_true",
        help="average the softmax over the paper's ten crops (§4.1)",
    )
    parser.add_argument(
        "-b",
        "--batch-size",
        type=positive_int,
        default=32,
        help="images per forward pass (default 32; with --ten-crop each image "
        "is 10 inputs); lower it if memory runs out",
    )
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="numba",
        help="kernels: numba (compiled CPU, default), numpy (readable "
        "reference), cuda (an NVIDIA GPU)",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    return parser


def predict_images(
    model,
    stats,
    class_names: list[str],
    images: np.ndarray,
    topk: int = 5,
    ten_crop: bool = False,
    batch_size: int = 32,
) -> list[list[tuple[str, float]]]:
    """Top-``topk`` ``(class name, probability)`` pairs, most probable first, per image.

    ``images``: uint8 ``(N, 3, S, S)`` as ``decode_image`` makes them, S = the checkpoint's
    image size. Cropping and preprocessing are ``minialexnet.metrics.predict_proba``'s (the
    model's own, ``stats`` may be ``None`` for a mean-pixel network), so a photo is seen
    exactly as a validation image is. ``model``: a network or an engine
    (anything with ``forward``, ``input_size`` and ``num_classes``).
    """
    dataset = ImageDataset(images, np.zeros(len(images), dtype=np.int64), class_names)
    probs = predict_proba(
        model, dataset, stats, batch_size=batch_size, crops="ten" if ten_crop else "center"
    )
    k = min(topk, probs.shape[1])
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return [[(class_names[c], float(p[c])) for c in row] for p, row in zip(probs, order)]


def what_it_knows(meta: dict, class_names: list[str]) -> str | None:
    """A note for a model trained on the built-in synthetic shapes, which gives every photo
    one of its few classes (a person may come out as "stripes 53%"); ``None`` otherwise."""
    record = meta.get("dataset") if isinstance(meta.get("dataset"), dict) else {}
    if (record.get("kind") or meta.get("data")) != "synthetic":
        return None
    return (
        f"note: this model was trained on the built-in synthetic shapes and knows only "
        f"these {len(class_names)} classes: {', '.join(class_names)}; every image gets "
        f"one of them, whatever it shows"
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m minialexnet.predict`` / ``minialexnet-predict``."""
    args = build_parser().parse_args(argv)
    try:
        if args.checkpoint is None and len(args.images) < 2:
            raise UsageError(
                "pass the network file (a checkpoint .npz or an .onnx file) and "
                "at least one image: predict MODEL IMG... or predict "
                "--checkpoint MODEL IMG..."
            )
        if args.checkpoint is None:
            args.checkpoint, args.images = args.images[0], args.images[1:]
        paths = image_paths(args.images)
        model, ckpt = load_model(args.checkpoint)
        check_mean_image(model, ckpt, args.checkpoint)
        net = inference_engine(model, args.backend, args.batch_size * (10 if args.ten_crop else 1))
    except (CheckpointError, DataError, UsageError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    size = stored_image_size(model, ckpt)
    class_names = list(
        ckpt.meta.get("class_names")
        or model.class_names
        or [f"class {k}" for k in range(model.num_classes)]
    )
    readable, decoded, status = [], [], 0
    for path in paths:
        try:
            if os.path.getsize(path) == 0:
                raise UnreadableImage(path, "the file is empty: 0 bytes")
            decoded.append(decode_image(path, size))
            readable.append(path)
        except UnreadableImage as err:
            print(f"error: {err}", file=sys.stderr)
            status = 2
    if not readable:
        return 2
    note = what_it_knows(ckpt.meta, class_names)
    if note:
        print(note, file=sys.stderr if args.json else sys.stdout)
    results = predict_images(
        net, ckpt.stats, class_names, np.stack(decoded), args.topk, args.ten_crop, args.batch_size
    )
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "image": path,
                        "top": [
                            {"class": name, "name": display_name(name), "probability": p}
                            for name, p in top
                        ],
                    }
                    for path, top in zip(readable, results)
                ],
                indent=1,
            )
        )
        return status
    for path, top in zip(readable, results):
        print(path)
        for rank, (name, p) in enumerate(top, start=1):
            print(f"  {rank}. {100 * p:5.1f}%  {display_name(name)}")
    return status


if __name__ == "__main__":
    sys.exit(main())
