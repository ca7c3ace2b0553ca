"""Checkpoints: one ``.npz`` file per snapshot, written atomically, read without pickle.

Layout (every entry a plain NumPy array, so ``np.load(path, allow_pickle=False)`` reads it)::

    param/<name>      every model parameter, e.g. param/conv1.W  (F, C/groups, KH, KW) float32
    optim/<name>      the SGD momentum buffer of each parameter (same shape and dtype)
    data/mean         the training set's mean image, float32 (3, S, S)         (§2)
    data/pca_eigvals  eigenvalues of the RGB covariance, float32 (3,)          (§4.1)
    data/pca_eigvecs  its eigenvectors as columns, float32 (3, 3)
    meta              a 0-d string array holding JSON: format_version, arch, model (the
                      AlexNet constructor's arguments), num_classes, input_size, image_size,
                      class_names, epoch, best_top1, lr, schedule, rng, optimizer, history, ...

Writing goes to a temporary file in the destination's folder that replaces the destination
with ``os.replace`` only when complete, so a crash, a full disk or Ctrl-C leaves either the old
checkpoint or the new one, never half a file.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field

import numpy as np

from minialexnet.atomic import atomic_write

FORMAT_VERSION = 1
#: The first bytes of every ``.npz`` file (a zip archive; an empty one starts PK\x05\x06).
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable, or does not fit the model it is loaded into."""


@dataclass
class Checkpoint:
    """What ``load_checkpoint`` returns.

    ``meta``: the JSON dict; ``params``: name -> array (``"conv1.W"``, ...); ``optim``: name ->
    momentum buffer (empty when saved without an optimizer); ``stats``: the ``DatasetStats``
    saved with it, or ``None``.
    """

    meta: dict
    params: dict = field(default_factory=dict)
    optim: dict = field(default_factory=dict)
    stats: object = None


def save_checkpoint(path, model, optimizer=None, stats=None, meta: dict | None = None) -> None:
    """Write ``model`` (and optionally optimizer momentum, dataset statistics, and ``meta``).

    ``meta`` is merged over what is derived from the model (format_version, arch, model,
    num_classes, input_size) and, with an optimizer, its hyperparameters (``"optimizer"``:
    lr, momentum, weight_decay) and ``lr``; with ``stats``, ``image_size``. Every value must be
    JSON-serialisable. The file is written atomically (temporary file + ``os.replace``).
    """
    path = os.fspath(path)
    info = {
        "format_version": FORMAT_VERSION,
        "arch": model.config["variant"],
        "model": model.config,
        "num_classes": model.num_classes,
        "input_size": model.input_size,
    }
    # Single-device names (conv1.W) even for the two-tower split (§3.2), whose state_dict
    # and merge() translate tower0.conv1.W + tower1.conv1.W back: one checkpoint format.
    arrays = {f"param/{name}": p for name, p in model.state_dict().items()}
    if optimizer is not None:
        state = optimizer.state_dict()
        velocity = state.pop("velocity")
        if hasattr(model, "merge"):
            velocity = model.merge(velocity)
        arrays.update({f"optim/{name}": v for name, v in velocity.items()})
        info["optimizer"] = state
        info["lr"] = state["lr"]
    if stats is not None:
        arrays["data/mean"] = np.asarray(stats.mean, dtype=np.float32)
        arrays["data/pca_eigvals"] = np.asarray(stats.pca_eigvals, dtype=np.float32)
        arrays["data/pca_eigvecs"] = np.asarray(stats.pca_eigvecs, dtype=np.float32)
        info["image_size"] = int(stats.mean.shape[-1])
    info.update(meta or {})
    try:
        arrays["meta"] = np.array(json.dumps(info))
    except TypeError as err:
        raise TypeError(f"checkpoint meta must be JSON-serialisable: {err}") from None
    atomic_write(path, lambda f: np.savez(f, **arrays))


def load_checkpoint(path) -> Checkpoint:
    """Read a checkpoint written by ``save_checkpoint`` (no pickle involved).

    Raises ``CheckpointError`` naming the file when it does not exist, is not a readable
    ``.npz`` (truncated, corrupt, another format), or is an ``.npz`` without minialexnet's
    ``meta`` entry or with an unknown ``format_version``.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path} does not exist (or is not a file)")
    _check_is_zip(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as err:
        raise CheckpointError(
            f"cannot read checkpoint {path}: the file is corrupt, truncated or "
            f"not an .npz file ({type(err).__name__}: {err})"
        ) from None
    if "meta" not in arrays:
        raise CheckpointError(
            f"{path} is an .npz file but not a minialexnet checkpoint (it has no 'meta' entry)"
        )
    try:
        meta = json.loads(str(arrays.pop("meta")))
    except ValueError as err:
        raise CheckpointError(f"checkpoint {path} has unreadable metadata: {err}") from None
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        version = meta.get("format_version") if isinstance(meta, dict) else None
        raise CheckpointError(
            f"checkpoint {path} has format_version {version!r}; this "
            f"minialexnet reads version {FORMAT_VERSION}"
        )
    for key in ("arch", "model", "num_classes", "input_size"):
        if key not in meta:
            raise CheckpointError(f"checkpoint {path} lacks the metadata entry {key!r}")
    ckpt = Checkpoint(meta=meta)
    for key, value in arrays.items():
        group, _, name = key.partition("/")
        if group == "param":
            ckpt.params[name] = value
        elif group == "optim":
            ckpt.optim[name] = value
    if "data/mean" in arrays:
        from minialexnet.data.dataset import DatasetStats

        ckpt.stats = DatasetStats(
            mean=arrays["data/mean"],
            pca_eigvals=arrays["data/pca_eigvals"],
            pca_eigvecs=arrays["data/pca_eigvecs"],
        )
    return ckpt


def _check_is_zip(path: str) -> None:
    """``CheckpointError`` unless the file starts like a zip archive (what ``.npz`` is).

    Without this, ``np.load`` tries other formats and ends in advice about ``allow_pickle``,
    which a checkpoint never needs.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as err:
        raise CheckpointError(f"cannot read checkpoint {path}: {err.strerror or err}") from None
    if head not in ZIP_MAGIC:
        what = (
            "it is empty" if not head else "the file is corrupt, truncated or not an .npz archive"
        )
        raise CheckpointError(
            f"{path} is not a minialexnet checkpoint ({what}); pass a "
            f"checkpoint_last.npz or checkpoint_best.npz written by training"
        )


def read_meta(path) -> dict:
    """Only the JSON metadata of a checkpoint (cheap: the weights are not read); ``{}`` when
    the file cannot be read as a checkpoint."""
    try:
        with np.load(os.fspath(path), allow_pickle=False) as npz:
            meta = json.loads(str(npz["meta"]))
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError):
        return {}
    return meta if isinstance(meta, dict) else {}


def check_finite(ckpt: Checkpoint, path) -> None:
    """``CheckpointError`` when a parameter or momentum buffer holds NaN or infinity.

    Such weights come from a run that diverged; evaluating them gives chance-level errors
    and predicting gives "nan%", so they are refused with a message instead.
    """
    for group, arrays in (("weights", ckpt.params), ("momentum", ckpt.optim)):
        bad = [
            name
            for name, a in arrays.items()
            if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all()
        ]
        if bad:
            raise CheckpointError(
                f"{path} holds NaN or infinite {group} ({', '.join(bad[:3])}"
                f"{' ...' if len(bad) > 3 else ''}): it was saved from a run that diverged. "
                f"Use an earlier checkpoint of that run, or train again with a smaller "
                f"learning rate (--lr)"
            )


def restore_model(model, ckpt: Checkpoint, path: str = "the checkpoint") -> None:
    """Load ``ckpt``'s parameters into ``model`` after checking that it is the same network.

    Raises ``CheckpointError`` with both descriptions when the architecture (variant,
    classes, activation, ablation switches) differs, and when a parameter is missing or
    mis-shaped, and (``check_finite``) when the weights hold NaN or infinity.
    """
    saved = ckpt.meta["model"]
    if not same_network(saved, model.config):
        if same_network(dict(saved, num_classes=model.config.get("num_classes")), model.config):
            advice = (
                f"it was trained on {saved.get('num_classes')} classes and this data has "
                f"{model.config.get('num_classes')}: use the data it was trained on "
                f"(--data-dir, --subset)"
            )
        else:
            advice = "pass the matching --arch, or start a new run without --resume"
        raise CheckpointError(
            f"{path} holds a different network: {_describe(saved)}, but this "
            f"run builds {_describe(model.config)}; {advice}"
        )
    check_finite(ckpt, path)
    try:
        model.load_state_dict(ckpt.params)
    except ValueError as err:
        raise CheckpointError(f"{path}: {err}") from None


#: Entries of ``AlexNet.config`` that describe how inputs are prepared and named, not the
#: network: a checkpoint restores into a model that differs only in these.
NOT_ARCHITECTURE = ("preprocessing", "class_names")


def same_network(saved: dict, built: dict) -> bool:
    """Do two ``AlexNet.config`` dicts describe the same layers and parameter shapes?

    Preprocessing and class names are ignored (``NOT_ARCHITECTURE``), and an entry that an
    older checkpoint does not store yet counts as the default this version builds.
    """
    keys = (set(saved) | set(built)) - set(NOT_ARCHITECTURE)
    return all(saved.get(key, built.get(key)) == built.get(key) for key in keys)


def _describe(config: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in config.items())


def model_from_checkpoint(path, rng: np.random.Generator | None = None):
    """``(model, ckpt)``: an ``AlexNet`` rebuilt from the checkpoint's metadata, with its
    parameters loaded; ``rng`` becomes the model's dropout generator."""
    from minialexnet.model import AlexNet

    ckpt = load_checkpoint(path)
    try:
        model = AlexNet.from_config(ckpt.meta["model"], rng=rng)
    except (TypeError, ValueError, KeyError) as err:
        raise CheckpointError(
            f"checkpoint {path} describes a network this minialexnet cannot build ({err})"
        ) from None
    restore_model(model, ckpt, path)
    return model, ckpt
