"""What the four command lines share: argument types, the data options, the back-end choice,
opening the datasets (the user's, or the one a checkpoint records), and the checks of
``--devices``. (The output folder is held by ``minialexnet.training.runfolder``.)

``python -m minialexnet.train``, ``evaluate``, ``predict`` and ``prepare`` each import this
module (and ``minialexnet.training`` / ``minialexnet.data``), never one another, so each
check and each message lives in one place. Every error here is one a user can fix: it becomes
a one-line usage message, never a traceback.
"""

from __future__ import annotations

import argparse
import math
import os

from minialexnet.backend import set_backend
from minialexnet.data import imagenet
from minialexnet.data.synthetic import CLASS_NAMES as SYNTHETIC_CLASSES
from minialexnet.data.synthetic import make_synthetic
from minialexnet.kernels.cuda import require_cuda
from minialexnet.parallel import NUM_TOWERS, parse_devices
from minialexnet.training.config import TrainConfig
from minialexnet.training.engines import make_engine

BACKENDS = ("numba", "numpy", "cuda")


class UsageError(Exception):
    """Anything the user must fix; printed as ``error: ...`` with exit status 2."""


# -- argparse types --------------------------------------------------------------------------


def integer_at_least(minimum: int, words: str):
    """argparse type: an integer >= ``minimum`` (``words`` names it in the usage error)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {words}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {words}, got {value}")
        return value

    return parse


positive_int = integer_at_least(1, "a positive integer")
nonnegative_int = integer_at_least(0, "an integer >= 0")


def fraction(text: str) -> float:
    """argparse type: a number strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must lie strictly between 0 and 1, got {text}")
    return value


def float_at_least(minimum: float, allow_equal: bool):
    """argparse type factory: a finite number ``>= minimum`` (``> minimum`` unless
    ``allow_equal``), e.g. ``float_at_least(0, False)`` for a learning rate."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value) or value < minimum or (value == minimum and not allow_equal):
            bound = f">= {minimum:g}" if allow_equal else f"> {minimum:g}"
            raise argparse.ArgumentTypeError(f"must be a finite number {bound}, got {text}")
        return value

    return parse


def add_data_arguments(
    parser: argparse.ArgumentParser, image_size_default: int | None = 256
) -> None:
    """The data options of ``prepare`` (same names and meaning as in train and evaluate)."""
    parser.add_argument(
        "--data-dir",
        default=None,
        help="data root: <dir>/train/<class>/ (+ val/), or any folder of class "
        "folders; default with --subset: $MINIALEXNET_DATA, "
        "$IMAGENET_ROOT, ~/data/imagenet, ...",
    )
    parser.add_argument(
        "--subset",
        default=None,
        help="imagenet-100, imagenet-1k, or a file with one class folder name "
        "(wnid) per line; default: every class folder",
    )
    parser.add_argument(
        "--image-size",
        type=positive_int,
        default=image_size_default,
        metavar="S",
        help="side of the stored images (the paper: 256; the mini model: 64)",
    )
    parser.add_argument(
        "--val-labels",
        default=None,
        metavar="FILE",
        help="labels of a flat val/ folder ('filename wnid' lines, Caffe's "
        "val.txt, Kaggle's LOC_val_solution.csv or the devkit's ground "
        "truth with meta.mat)",
    )
    parser.add_argument(
        "--val-fraction",
        type=fraction,
        default=0.1,
        help="share of each class held out for validation when there is no "
        "val/ folder (default 0.1)",
    )
    parser.add_argument(
        "--seed", type=nonnegative_int, default=0, help="seed of that hold-out (default 0)"
    )
    parser.add_argument(
        "--workers", type=positive_int, default=None, help="decoding processes (default: all CPUs)"
    )
    parser.add_argument(
        "--cache-dir",
        default=None,
        help="this dataset's cache folder (default: "
        "~/.cache/minialexnet/datasets/<name>-<subset>-S<S>-<hash>, or "
        "under $MINIALEXNET_CACHE)",
    )


# -- the back end ----------------------------------------------------------------------------


def select_backend(name: str) -> None:
    """The one place that switches the hot loops: ``numba``/``numpy`` CPU kernels, or CUDA.

    Raises ``ValueError`` for an unknown name, ``RuntimeError`` when ``cuda`` has no GPU.
    """
    if name == "cuda":
        require_cuda("--backend cuda")
        name = "numba"  # what still runs on the host (augmentation) stays compiled
    set_backend(name)


def inference_engine(model, backend: str, batch_size: int, gemm: str = "auto"):
    """The engine that runs ``model``'s forward pass on ``--backend`` (evaluate, predict).

    ``batch_size``: the largest batch the GPU engine reserves memory for; ``gemm``: its
    matrix products (``TrainConfig.gemm``). Raises
    ``UsageError`` when the backend cannot be used (no GPU, numba-cuda missing).
    """
    device = "cuda" if backend == "cuda" else "cpu"
    try:
        if device == "cpu":
            select_backend(backend)
        return make_engine(
            model, None, TrainConfig(batch_size=batch_size, device=device, gemm=gemm)
        )
    except ValueError as err:
        raise UsageError(str(err)) from None
    except (ImportError, RuntimeError) as err:
        raise UsageError(f"--backend cuda is not usable here: {err}") from None


# -- data and output -------------------------------------------------------------------------


def open_datasets(args, image_size: int, val_only: bool = False):
    """``(train_set, val_set, stats, name)`` for the train command's data arguments.

    Without ``--data-dir``/``--subset``: the built-in synthetic dataset drawn at
    ``image_size`` px (``stats`` is ``None``: ``fit`` computes them). Otherwise the one call
    into ``minialexnet.data.imagenet`` (its ``DataError`` says what is missing and how to
    get it), with ``--cache-dir``, ``--val-labels`` and the hold-out's ``val_fraction`` and
    ``holdout_seed`` when ``args`` has them. With ``val_only`` the training set is not built
    (``None``).
    """
    if args.data_dir is None and args.subset is None:
        train_set = None if val_only else make_synthetic("train", image_size=image_size)
        return train_set, make_synthetic("val", image_size=image_size), None, "synthetic"
    name = os.path.splitext(os.path.basename(os.path.normpath(args.subset or args.data_dir)))[0]
    options = {
        "image_size": image_size,
        "log": print_line,
        "cache_dir": getattr(args, "cache_dir", None),
        "val_labels": getattr(args, "val_labels", None),
        "val_fraction": getattr(args, "val_fraction", None) or 0.1,
        "seed": getattr(args, "holdout_seed", None) or 0,
    }
    if val_only:
        return None, imagenet.open_val_dataset(args.data_dir, args.subset, **options), None, name
    train_set, val_set, stats = imagenet.open_dataset(args.data_dir, args.subset, **options)
    return train_set, val_set, stats, name


def recorded_dataset(meta: dict, path) -> dict:
    """The dataset a checkpoint was trained on, for a command given no ``--data-dir``.

    ``meta``: the checkpoint's metadata, whose ``"dataset"`` entry training writes
    (``minialexnet.data.imagenet.dataset_record``): ``{"kind": "synthetic", ...}`` or
    ``{"kind": "folder", "data_dir", "subset", "val_fraction", "seed", "val_labels"}``. A
    checkpoint without that entry whose classes are the built-in shapes counts as
    synthetic. Raises ``UsageError`` when the checkpoint does not say where its data was,
    and when that folder (or labels file) is no longer there, naming where it was.
    """
    record = meta.get("dataset") if isinstance(meta.get("dataset"), dict) else {}
    kind = record.get("kind") or meta.get("data")
    names = meta.get("class_names")
    if kind == "synthetic" or (
        not record and names is not None and list(names) == list(SYNTHETIC_CLASSES[: len(names)])
    ):
        return {**record, "kind": "synthetic"}
    data_dir, subset = record.get("data_dir"), record.get("subset")
    if data_dir is None and subset is None:
        raise UsageError(
            f"{path} does not record where its data came from; pass "
            f"--data-dir (and --subset if it was trained on one)"
        )
    also = f" (and --subset {subset})" if subset else ""
    if data_dir is not None and not os.path.isdir(data_dir):
        raise UsageError(
            f"{path} was trained on the data in {data_dir}, which is not there "
            f"any more (moved or deleted?); pass --data-dir with its new "
            f"location{also}"
        )
    labels = record.get("val_labels")
    if labels and not os.path.isfile(labels):
        raise UsageError(
            f"{path} was trained with the val labels file {labels}, which is not "
            f"there any more; pass --val-labels with its new location"
        )
    return record


def check_devices(spec: str | None) -> None:
    """``UsageError`` for a ``--devices`` list that cannot be read, does not name two
    devices, or names CPU threads this machine does not have (before any data is built).

    A CPU "device" ``cpu:i`` is not a core: it is the thread of tower ``i`` of the §3.2
    split. An index at or above the number of CPUs available here almost always means "the
    i-th core", which is not what it selects. (GPU names are checked when the GPU engine
    starts.)
    """
    if not spec:
        return
    if "cuda" not in spec.lower():
        try:
            devices = parse_devices(spec)
        except ValueError as err:
            raise UsageError(f"--devices {spec}: {err}") from None
        if len(devices) != NUM_TOWERS:
            raise UsageError(
                f"--devices {spec} names {len(devices)} device(s); the split of "
                f"§3.2 runs on exactly {NUM_TOWERS}, e.g. cpu:0,cpu:1"
            )
    cpus = (
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    )
    # cpu:0,cpu:1 always works (two threads, even on one core); beyond that an index names a
    # CPU, which must exist.
    limit = max(cpus, NUM_TOWERS)
    for part in spec.split(","):
        kind, _, index = part.strip().lower().partition(":")
        if kind == "cpu" and index.isdigit() and int(index) >= limit:
            raise UsageError(
                f"--devices {spec}: {part.strip()} asks for CPU {index}, but this machine has "
                f"{cpus} CPU(s). On the CPU a device is a thread of this process, one per "
                f"tower of the two-tower split (§3.2), not a particular core; pass --devices "
                f"cpu:0,cpu:1"
            )


def print_line(line: str) -> None:
    """``print`` that flushes, so progress shows at once when the output is a pipe."""
    print(line, flush=True)


def model_file(positional: str | None, option: str | None) -> str:
    """The network file of ``evaluate``/``predict``, given either positionally or as
    ``--checkpoint`` (exactly one of the two): a checkpoint ``.npz`` or an ``.onnx`` file."""
    if positional is not None and option is not None:
        raise UsageError(
            f"two network files given ({option} with --checkpoint and "
            f"{positional}); pass one, positionally or with --checkpoint"
        )
    if positional is None and option is None:
        raise UsageError(
            "no network file: pass a checkpoint .npz or an .onnx file, "
            "positionally or with --checkpoint"
        )
    return positional if positional is not None else option
