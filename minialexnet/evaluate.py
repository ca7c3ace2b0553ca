"""Top-1 and top-5 error of a trained checkpoint, with the paper's test protocol (§4.1, §6).

    python -m minialexnet.evaluate runs/mini/checkpoint_best.npz            # its own val set
    python -m minialexnet.evaluate ckpt.npz --data-dir /data/imagenet --subset imagenet-100
    python -m minialexnet.evaluate ckpt.npz --crops ten -b 64 --backend numpy
    python -m minialexnet.evaluate --checkpoint bvlcalexnet-12.onnx --data-dir /data/imagenet

The network comes from a checkpoint ``.npz`` or an ``.onnx`` file, given positionally or as
``--checkpoint``; its own preprocessing (``model.config["preprocessing"]``: our networks
subtract the training mean image stored in the checkpoint, BVLC's take BGR minus a mean
pixel) and class names are used, without flags. An ONNX file records no dataset: pass
``--data-dir``.

Crops: ``center`` (one centre crop of ``input_size`` from each stored S x S image, the usual
validation during training), ``ten`` (the paper: the softmax averaged over the four corner
crops, the centre crop and their horizontal reflections, §4.1), or ``both`` (the default).
The paper's one-CNN result on ILSVRC-2012 val is 40.7% top-1 and 18.2% top-5 error (ten
crops; Table 2).

Which data: ``--data-dir``/``--subset`` (same meaning as for training; only the validation
split is decoded), else the dataset recorded in the checkpoint (``meta["dataset"]`` as
written by training; the built-in synthetic data when that says so). The checkpoint's own
mean image (§2) is subtracted, never one recomputed from the evaluation data, and its class
list must equal the data's.

Exit status 0, or 2 with a one-line message (no traceback) for a missing or corrupt
checkpoint, unusable data, or classes that do not match.
"""

from __future__ import annotations

import argparse
import json
import sys

from minialexnet.cli import (
    BACKENDS,
    UsageError,
    fraction,
    inference_engine,
    model_file,
    nonnegative_int,
    positive_int,
    recorded_dataset,
)
from minialexnet.data.folders import DataError
from minialexnet.data.imagenet import open_val_dataset
from minialexnet.data.synthetic import make_synthetic
from minialexnet.training.checkpoint import CheckpointError
from minialexnet.training.evaluation import check_has_stats, evaluate_checkpoint
from minialexnet.training.model_files import load_model


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m minialexnet.evaluate",
        description="Top-1/top-5 error of a checkpoint with centre-crop and/or 10-crop testing "
        "(§4.1).",
    )
    parser.add_argument(
        "checkpoint",
        nargs="?",
        default=None,
        metavar="MODEL",
        help="a checkpoint .npz written by training, or an .onnx file (also "
        "accepted as --checkpoint)",
    )
    parser.add_argument(
        "--checkpoint",
        "-c",
        dest="checkpoint_option",
        default=None,
        metavar="MODEL",
        help="the same, as an option",
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        help="data root or prepared cache (default: the checkpoint's dataset)",
    )
    parser.add_argument("--subset", default=None, help="imagenet-100, imagenet-1k or a file")
    parser.add_argument(
        "--val-labels", default=None, metavar="FILE", help="labels file of a flat val/ folder"
    )
    parser.add_argument(
        "--val-fraction",
        type=fraction,
        default=None,
        help="hold-out share when there is no val/ (default: the checkpoint's, else 0.1)",
    )
    parser.add_argument(
        "--seed",
        type=nonnegative_int,
        default=None,
        help="hold-out seed (default: the checkpoint's, else 0)",
    )
    parser.add_argument("--cache-dir", default=None, help="the dataset's cache folder")
    parser.add_argument(
        "--crops",
        choices=("center", "ten", "both"),
        default="both",
        help="center: one centre crop per image; ten: the softmax averaged over "
        "the four corners, the centre and their reflections (the paper's "
        "test protocol, §4.1, 10x slower); both (default): report each",
    )
    parser.add_argument(
        "-b",
        "--batch-size",
        type=positive_int,
        default=64,
        help="images per forward pass (default 64; with ten crops each image "
        "is 10 inputs); lower it if memory runs out",
    )
    parser.add_argument(
        "--workers",
        type=nonnegative_int,
        default=0,
        help="threads preparing batches (0: the main thread)",
    )
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="numba",
        help="kernels: numba (compiled CPU), numpy (readable reference), cuda",
    )
    parser.add_argument(
        "--gemm",
        choices=("auto", "numba", "cublas"),
        default="auto",
        help="with --backend cuda, the matrix products: cuBLAS where "
        "nvmath-python is installed (auto), the hand-written SGEMM (numba) "
        "or cublas",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    return parser


def validation_set_for(meta: dict, args, log=print):
    """The validation ``ImageDataset`` to evaluate on (see the module docstring).

    ``meta``: the checkpoint's metadata; ``args``: the parsed command line. Raises
    ``UsageError`` when neither names a dataset or the recorded data folder is gone
    (``minialexnet.cli.recorded_dataset``), ``DataError`` for unusable data.
    """
    record = meta.get("dataset") if isinstance(meta.get("dataset"), dict) else {}
    image_size = int(meta.get("image_size") or record.get("image_size") or 0)
    if not image_size:
        raise UsageError(
            "the checkpoint does not record its image size S (meta "
            "'image_size'); it cannot be evaluated"
        )
    val_fraction = (
        args.val_fraction if args.val_fraction is not None else record.get("val_fraction", 0.1)
    )
    seed = args.seed if args.seed is not None else record.get("seed", 0)
    data_dir, subset = args.data_dir, args.subset
    if data_dir is None and subset is None:
        record = recorded_dataset(meta, args.checkpoint)
        if record["kind"] == "synthetic":
            return make_synthetic(
                "val",
                num_classes=int(meta["num_classes"]),
                image_size=image_size,
                seed=int(record.get("seed", 0)),
            )
        data_dir, subset = record.get("data_dir"), record.get("subset")
        if args.val_labels is None and record.get("val_labels"):
            args.val_labels = record["val_labels"]
    return open_val_dataset(
        data_dir,
        subset,
        image_size=image_size,
        val_fraction=val_fraction,
        seed=seed,
        cache_dir=args.cache_dir,
        log=log,
        val_labels=args.val_labels,
    )


def run(args, log=print) -> dict:
    """Evaluate as the command line says; return ``{"center": {"top1_err", "top5_err",
    "images"}, ...}`` (``minialexnet.training.evaluation.evaluate_checkpoint``).

    Errors in ``UsageError``, ``CheckpointError`` or ``DataError`` (all reported by ``main``).
    """
    args.checkpoint = model_file(args.checkpoint, args.checkpoint_option)
    model, ckpt = load_model(args.checkpoint)
    check_has_stats(ckpt, args.checkpoint)  # before any data is decoded
    engine = inference_engine(
        model,
        args.backend,
        args.batch_size * (1 if args.crops == "center" else 10),
        gemm=args.gemm,
    )
    dataset = validation_set_for(ckpt.meta, args, log)
    crops = ("center", "ten") if args.crops == "both" else (args.crops,)
    return evaluate_checkpoint(
        engine,
        ckpt,
        dataset,
        args.checkpoint,
        crops=crops,
        batch_size=args.batch_size,
        workers=args.workers,
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m minialexnet.evaluate`` / ``minialexnet-evaluate``."""
    args = build_parser().parse_args(argv)
    log = (lambda line: print(line, file=sys.stderr)) if args.json else print
    try:
        results = run(args, log)
    except (UsageError, CheckpointError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(results, indent=1))
        return 0
    n = next(iter(results.values()))["images"]
    print(f"{args.checkpoint}: {n} validation images")
    print(f"{'crops':<8}{'top-1 error':>12}{'top-5 error':>13}")
    for crops, r in results.items():
        print(f"{crops:<8}{100 * r['top1_err']:>11.2f}%{100 * r['top5_err']:>12.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
