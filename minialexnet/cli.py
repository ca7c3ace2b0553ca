"""What the four command lines share: argument types, the data options, the back-end choice,
opening the datasets, and the output-folder check.

``python -m minialexnet.train``, ``evaluate``, ``predict`` and ``prepare`` each import this
module (and ``minialexnet.training`` / ``minialexnet.data``), never one another, so each
check and each message lives in one place. Every error here is one a user can fix: it becomes
a one-line usage message, never a traceback.
"""
from __future__ import annotations

import argparse
import math
import os
import tempfile

from minialexnet.backend import set_backend
from minialexnet.data import imagenet
from minialexnet.data.synthetic import make_synthetic
from minialexnet.kernels.cuda import require_cuda
from minialexnet.training.config import TrainConfig
from minialexnet.training.engines import make_engine

BACKENDS = ("numba", "numpy", "cuda")


class UsageError(Exception):
    """Anything the user must fix; printed as ``error: ...`` with exit status 2."""


# -- argparse types --------------------------------------------------------------------------

def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (a clear usage error otherwise)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def nonnegative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {value}")
    return value


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


def add_data_arguments(parser: argparse.ArgumentParser, image_size_default: int | None = 256
                       ) -> None:
    """The data options of ``prepare`` (same names and meaning as in train and evaluate)."""
    parser.add_argument("--data-dir", default=None,
                        help="data root: <dir>/train/<class>/ (+ val/), or any folder of class "
                             "folders; default with --subset: $MINIALEXNET_DATA, "
                             "$IMAGENET_ROOT, ~/data/imagenet, ...")
    parser.add_argument("--subset", default=None,
                        help="imagenet-100, imagenet-1k, or a file with one class folder name "
                             "(wnid) per line; default: every class folder")
    parser.add_argument("--image-size", type=positive_int, default=image_size_default,
                        metavar="S",
                        help="side of the stored images (the paper: 256; the mini model: 64)")
    parser.add_argument("--val-labels", default=None, metavar="FILE",
                        help="labels of a flat val/ folder ('filename wnid' lines, Caffe's "
                             "val.txt, Kaggle's LOC_val_solution.csv or the devkit's ground "
                             "truth with meta.mat)")
    parser.add_argument("--val-fraction", type=fraction, default=0.1,
                        help="share of each class held out for validation when there is no "
                             "val/ folder (default 0.1)")
    parser.add_argument("--seed", type=nonnegative_int, default=0,
                        help="seed of that hold-out (default 0)")
    parser.add_argument("--workers", type=positive_int, default=None,
                        help="decoding processes (default: all CPUs)")
    parser.add_argument("--cache-dir", default=None,
                        help="this dataset's cache folder (default: "
                             "~/.cache/minialexnet/datasets/<name>-<subset>-S<S>-<hash>, or "
                             "under $MINIALEXNET_CACHE)")


# -- the back end ----------------------------------------------------------------------------

def select_backend(name: str) -> None:
    """The one place that switches the hot loops: ``numba``/``numpy`` CPU kernels, or CUDA.

    Raises ``ValueError`` for an unknown name, ``RuntimeError`` when ``cuda`` has no GPU.
    """
    if name == "cuda":
        require_cuda("--backend cuda")
        name = "numba"          # what still runs on the host (augmentation) stays compiled
    set_backend(name)


def inference_engine(model, backend: str, batch_size: int):
    """The engine that runs ``model``'s forward pass on ``--backend`` (evaluate, predict).

    ``batch_size``: the largest batch the GPU engine reserves memory for. Raises
    ``UsageError`` when the backend cannot be used (no GPU, numba-cuda missing).
    """
    device = "cuda" if backend == "cuda" else "cpu"
    try:
        if device == "cpu":
            select_backend(backend)
        return make_engine(model, None, TrainConfig(batch_size=batch_size, device=device))
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
    get it). With ``val_only`` the training set is not built (``None``).
    """
    if args.data_dir is None and args.subset is None:
        train_set = None if val_only else make_synthetic("train", image_size=image_size)
        return train_set, make_synthetic("val", image_size=image_size), None, "synthetic"
    name = os.path.splitext(os.path.basename(os.path.normpath(args.subset or args.data_dir)))[0]
    if val_only:
        return None, imagenet.open_val_dataset(args.data_dir, args.subset, image_size=image_size,
                                               log=print_line), None, name
    train_set, val_set, stats = imagenet.open_dataset(args.data_dir, args.subset,
                                                      image_size=image_size, log=print_line)
    return train_set, val_set, stats, name


def prepare_output(folder: str) -> None:
    """Create ``folder`` and prove it is writable (a clear error now, not after an epoch)."""
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise ValueError(f"cannot write to the output folder {folder!r}: "
                         f"{err.strerror or err}; choose another --output") from None


def print_line(line: str) -> None:
    """``print`` that flushes, so progress shows at once when the output is a pipe."""
    print(line, flush=True)


def model_file(positional: str | None, option: str | None) -> str:
    """The network file of ``evaluate``/``predict``, given either positionally or as
    ``--checkpoint`` (exactly one of the two): a checkpoint ``.npz`` or an ``.onnx`` file."""
    if positional is not None and option is not None:
        raise UsageError(f"two network files given ({option} with --checkpoint and "
                         f"{positional}); pass one, positionally or with --checkpoint")
    if positional is None and option is None:
        raise UsageError("no network file: pass a checkpoint .npz or an .onnx file, "
                         "positionally or with --checkpoint")
    return positional if positional is not None else option

