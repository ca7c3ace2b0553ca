"""``python -m minialexnet.export CHECKPOINT -o model.onnx``: a trained network as ONNX.

    python -m minialexnet.export runs/mini/checkpoint_best.npz -o mini.onnx

Writes the checkpoint's network with ``minialexnet.save_onnx`` (standard operators, opset
13; needs ``pip install "minialexnet[onnx]"``), its preprocessing and class names in the
file's ``metadata_props``, so ``load_onnx``, ``evaluate``, ``predict`` and ``train
--pretrained`` read it back completely. The training set's mean image is not part of an ONNX
file: a network that subtracts one is best evaluated from its checkpoint. An ``.onnx`` input
is re-written (e.g. to normalize a file from another tool).

Exit status 0, or 2 with a one-line message for a missing or unreadable file, or without the
``onnx`` package.
"""

from __future__ import annotations

import argparse
import os
import sys

from minialexnet.training.checkpoint import CheckpointError
from minialexnet.training.model_files import load_model


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m minialexnet.export",
        description="Write a checkpoint's network (with its preprocessing and class names) "
        "as an ONNX file.",
    )
    parser.add_argument(
        "checkpoint",
        metavar="MODEL",
        help="a checkpoint .npz written by training (or an .onnx file)",
    )
    parser.add_argument(
        "-o", "--output", required=True, metavar="FILE.onnx", help="the ONNX file to write"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m minialexnet.export`` / ``minialexnet-export``."""
    args = build_parser().parse_args(argv)
    try:
        model, _ = load_model(args.checkpoint)
        from minialexnet import save_onnx  # optional dependency: onnx

        save_onnx(model, args.output)
    except (CheckpointError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"error: cannot write {args.output}: {err.strerror or err}", file=sys.stderr)
        return 2
    print(
        f"{args.output}: {model!r}, {model.num_parameters():,} parameters, "
        f"{os.path.getsize(args.output):,} bytes"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
