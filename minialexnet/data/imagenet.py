"""ImageNet, ImageNet-100 or any folder of class folders, as training and validation sets.

``open_dataset`` is the one entry point the command-line tools call (``open_val_dataset``
when only the validation set is needed, e.g. for evaluation)::

    train, val, stats = open_dataset("/data/imagenet", subset="imagenet-100", image_size=64)

It checks the folder layout (``minialexnet.data.folders``), selects the classes
(``minialexnet.data.subsets``), decodes every image once into a cache
(``minialexnet.data.cache``) and returns memmap-backed ``ImageDataset`` objects plus the
training set's ``DatasetStats`` (mean image, §2; RGB PCA, §4.1).

Where the data comes from:

- ``data_dir`` given: ``<data_dir>/train/<class>/`` (+ ``val/``), or any folder of class
  folders (a user's own photos).
- ``data_dir=None`` with a subset: the first of ``data/imagenet`` (relative to the current
  folder: the repository's own ``data/`` folder when run from a clone's root),
  ``$MINIALEXNET_DATA``, ``$IMAGENET_ROOT``, ``~/data/imagenet``, ``~/datasets/imagenet``,
  ``/data/imagenet``, ``/datasets/imagenet`` that has a ``train/`` folder. ImageNet cannot be
  downloaded automatically: its licence requires registering at https://image-net.org.
- ``data_dir`` a prepared cache folder (one with ``dataset.json``, made by
  ``python -m minialexnet.prepare``, maybe copied from another machine): used as it is.

Validation: ``val/`` when there is one; otherwise a seeded, stratified hold-out of
``val_fraction`` of each class (``stratified_holdout``).

Where the cache goes: ``cache_dir`` if given, else
``~/.cache/minialexnet/datasets/<folder>-<subset>-S<size>-<hash>`` (``$MINIALEXNET_CACHE``
or ``$XDG_CACHE_HOME`` move it). The data folder itself is only ever read. Disk needed:
``N * 3 * S * S`` bytes (ImageNet-100 at S = 256: about 25 GB; at S = 64: 1.6 GB); a
hold-out split stores its two parts once more, and the free-space check before decoding
counts both.

Every problem with the data raises ``DataError`` (a ``ValueError``) with a message that says
what was found, where, and what to do.
"""
from __future__ import annotations

import os
import zlib
from functools import partial

import numpy as np

from minialexnet.checks import check_positive_int
from minialexnet.data.cache import build_split, exclusive, load_split
from minialexnet.data.cache_dir import default_cache_dir, open_cache_dir
from minialexnet.data.cache_files import (CACHE_FORMAT_VERSION, check_free_space, copy_rows,
                                          disk_full_is_reported, load_stats, read_json,
                                          save_stats, split_bytes, write_json, write_npy)
from minialexnet.data.dataset import DatasetStats, ImageDataset, compute_stats
from minialexnet.data.folders import (DataError, Layout, check_val_classes, inspect_layout,
                                      list_class_folders, list_flat_val)
from minialexnet.data.subsets import (imagenet1000, is_wnid, resolve_subset,
                                      subset_description)

__all__ = ["DataError", "open_dataset", "open_val_dataset", "dataset_record",
           "find_imagenet_root", "stratified_holdout",
           "LOCAL_DATA", "ENV_VARS", "DEFAULT_LOCATIONS"]

#: Looked at first: the repository's ``data/imagenet`` when a command runs from a clone's
#: root (relative to the current folder; its contents are ignored by git, see data/README.md).
LOCAL_DATA = os.path.join("data", "imagenet")
#: Environment variables naming the ImageNet root, checked in this order.
ENV_VARS = ("MINIALEXNET_DATA", "IMAGENET_ROOT")
#: Folders tried after the environment variables.
DEFAULT_LOCATIONS = ("~/data/imagenet", "~/datasets/imagenet", "/data/imagenet",
                     "/datasets/imagenet")


def find_imagenet_root() -> str:
    """The ImageNet root when no ``--data-dir`` is given (see the module docstring).

    ``data/imagenet`` in the current folder comes first, then the environment variables: a
    set variable must point at a folder with ``train/`` (an error says so otherwise, since
    the user clearly meant it). Raises ``DataError`` listing every place looked at, how to
    point at the data, and how to obtain it.
    """
    local = os.path.abspath(LOCAL_DATA)
    if os.path.isdir(os.path.join(local, "train")):
        return local
    looked = [local]
    for var in ENV_VARS:
        value = os.environ.get(var)
        if not value:
            looked.append(f"${var} (not set)")
            continue
        path = os.path.abspath(os.path.expanduser(value))
        if os.path.isdir(os.path.join(path, "train")):
            return path
        raise DataError(f"${var} is set to {value!r}, but {path} has no train/ folder; point "
                        f"${var} at the folder that holds train/ and val/")
    for location in DEFAULT_LOCATIONS:
        path = os.path.expanduser(location)
        if os.path.isdir(os.path.join(path, "train")):
            return path
        looked.append(path)
    raise DataError(
        "ImageNet was not found. Looked at: " + "; ".join(looked) + ". Put it in data/imagenet "
        "(train/<wnid>/ and val/, see data/README.md; run from the repository's root), pass "
        "--data-dir /path/to/imagenet (the folder holding train/<wnid>/ and val/) or set "
        "MINIALEXNET_DATA=/path/to/imagenet. ImageNet cannot be downloaded automatically: "
        "register at https://image-net.org, download ILSVRC2012_img_train.tar and "
        "ILSVRC2012_img_val.tar, and extract them (one folder per class in train/). Without "
        "ImageNet, leave out --subset and --data-dir to train on the built-in synthetic data, "
        "or pass --data-dir with any folder of class folders (your own photos).")


def stratified_holdout(labels: np.ndarray, class_names: list[str], val_fraction: float,
                       seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split row indices into training and held-out validation rows, class by class.

    ``labels``: int64 ``(N,)``. Each class with ``n >= 2`` images gives
    ``clip(round(val_fraction * n), 1, n - 1)`` randomly chosen images to validation (so every
    class is in both sets); a class with one image stays in training. Each class's choice is
    drawn from its own generator, seeded by ``(seed, crc32(class name))``: the split of a class
    depends only on the seed and that class's files, not on which other classes are present.
    Returns ``(train_idx, val_idx)``, sorted int64 arrays that together cover ``0..N-1``.
    """
    if not 0.0 < float(val_fraction) < 1.0:
        raise DataError(f"val_fraction must lie strictly between 0 and 1 (e.g. 0.1), got "
                        f"{val_fraction!r}")
    seed = check_positive_int(seed, "seed", minimum=0)
    labels = np.asarray(labels, dtype=np.int64)
    val_parts = []
    for k, name in enumerate(class_names):
        rows = np.flatnonzero(labels == k)
        n = len(rows)
        if n < 2:
            continue
        n_val = int(min(max(round(val_fraction * n), 1), n - 1))
        rng = np.random.default_rng([seed, zlib.crc32(name.encode("utf-8"))])
        val_parts.append(rows[rng.permutation(n)[:n_val]])
    val_idx = np.sort(np.concatenate(val_parts)) if val_parts else np.zeros(0, dtype=np.int64)
    train_idx = np.setdiff1d(np.arange(len(labels), dtype=np.int64), val_idx)
    return train_idx.astype(np.int64), val_idx.astype(np.int64)


def _holdout(cache_dir: str, whole, val_fraction: float, seed: int, log
             ) -> tuple[ImageDataset, ImageDataset, DatasetStats]:
    """Training/validation datasets held out of the ``all`` split cache, cached themselves.

    The two parts are written as their own memmap files (a copy, not a re-decode) in
    ``<cache>/holdout-seed<seed>-val<fraction>/`` so a large folder never has to be loaded
    into memory; the statistics are those of the training part only.
    """
    folder = os.path.join(cache_dir, f"holdout-seed{seed}-val{val_fraction:g}")
    os.makedirs(folder, exist_ok=True)
    with exclusive(folder, log):
        return _holdout_locked(folder, whole, val_fraction, seed, log)


_HOLDOUT_FILES = ("train_images.npy", "val_images.npy", "train_labels.npy", "val_labels.npy",
                  "stats.npz", "holdout.json")


def _holdout_locked(folder, whole, val_fraction, seed, log):
    key = {"format_version": CACHE_FORMAT_VERSION, "seed": seed, "val_fraction": val_fraction,
           "source_sha256": whole.manifest["files_sha256"],
           "num_images": whole.manifest["num_images"]}
    names = whole.dataset.class_names
    if read_json(os.path.join(folder, "holdout.json")) != key:
        train_idx, val_idx = stratified_holdout(whole.dataset.labels, names, val_fraction, seed)
        if not len(val_idx):
            raise DataError(f"no class has two or more images, so nothing can be held out "
                            f"for validation in {whole.manifest['source_root']}; add images or "
                            f"a val/ folder")
        log(f"holding out {len(val_idx)} of {len(whole.dataset)} images for validation "
            f"(val_fraction={val_fraction:g}, seed={seed}, stratified by class)")
        _write_holdout(folder, whole.dataset, train_idx, val_idx)
        write_json(os.path.join(folder, "holdout.json"), key)
    else:
        log(f"using the cached hold-out split in {folder}")
    parts = []
    for part in ("train", "val"):
        parts.append(ImageDataset(np.load(os.path.join(folder, f"{part}_images.npy"),
                                          mmap_mode="r"),
                                  np.load(os.path.join(folder, f"{part}_labels.npy")), names))
    return parts[0], parts[1], load_stats(os.path.join(folder, "stats.npz"))


def _write_holdout(folder: str, whole: ImageDataset, train_idx, val_idx) -> None:
    """Copy the two parts of ``whole`` into ``folder`` and store the training part's stats.

    Whatever an earlier, unfinished copy left (``*.partial`` files included) is removed
    first, so that its space counts as free; a full disk is a ``DataError``.
    """
    for name in os.listdir(folder):
        if name in _HOLDOUT_FILES or name.endswith(".partial"):
            os.unlink(os.path.join(folder, name))
    size = whole.images.shape[-1]
    needed = split_bytes(len(whole), size, with_stats=True)
    what = "holding out validation images: the copy of the two parts"
    check_free_space(folder, needed, what)
    with disk_full_is_reported(folder, needed, what):
        for part, idx in (("train", train_idx), ("val", val_idx)):
            copy_rows(whole.images, idx, os.path.join(folder, f"{part}_images.npy"))
            write_npy(os.path.join(folder, f"{part}_labels.npy"), whole.labels[idx])
        train = ImageDataset(np.load(os.path.join(folder, "train_images.npy"), mmap_mode="r"),
                             np.load(os.path.join(folder, "train_labels.npy")), whole.class_names)
        save_stats(os.path.join(folder, "stats.npz"), compute_stats(train))


def dataset_record(data_dir=None, subset=None, val_fraction: float = 0.1, seed: int = 0,
                   val_labels=None) -> dict:
    """What a checkpoint should store (as ``meta["dataset"]``) to find its data again.

    ``{"kind": "synthetic"}`` when ``data_dir`` and ``subset`` are both ``None`` (the built-in
    dataset), else ``{"kind": "folder", "data_dir": <absolute path or None>, "subset":
    <canonical name or absolute path>, "val_fraction", "seed", "val_labels"}``. The evaluate
    command reads it to default to the dataset a checkpoint was trained on.
    """
    if data_dir is None and subset is None:
        return {"kind": "synthetic"}
    return {"kind": "folder", "data_dir": _absolute(data_dir),
            "subset": None if subset is None else subset_description(subset),
            "val_fraction": float(val_fraction), "seed": int(seed),
            "val_labels": _absolute(val_labels)}


def _absolute(path) -> str | None:
    return None if path is None else os.path.abspath(os.path.expanduser(os.fspath(path)))


def _default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def _val_files(layout: Layout, classes: list[str], subset, log):
    """The validation FileList of an ImageNet layout with a val/ folder."""
    if layout.val_kind == "folders":
        if subset is None:
            check_val_classes(layout)
        return list_class_folders(layout.val_dir, classes, "the validation folder")
    # A flat val/ plus a labels file; integer labels index the standard ILSVRC-2012 list
    # when the training folders are ImageNet wnids (Caffe's val.txt), else the sorted folders.
    standard = imagenet1000()
    known = set(standard)
    index_classes = standard if all(is_wnid(c) and c in known for c in layout.classes) \
        else layout.classes
    files, dropped = list_flat_val(layout, classes, index_classes)
    log(f"val: {len(files)} images labelled by {layout.val_labels}"
        + (f" ({dropped} of other classes left out)" if dropped else ""))
    return files


def _classes(layout: Layout, subset) -> list[str]:
    """The sorted class folders to use; ``DataError`` naming any subset class not on disk."""
    if subset is None:
        return layout.classes
    classes = resolve_subset(subset)
    missing = sorted(set(classes) - set(layout.classes))
    if missing:
        shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more"
                                           if len(missing) > 10 else "")
        raise DataError(f"--subset {subset}: {len(missing)} of its {len(classes)} classes have "
                        f"no folder in {layout.train_dir}: {shown}. Is --data-dir the right "
                        f"ImageNet folder (and fully extracted)?")
    return classes


def _check_two_classes(classes: list[str], layout: Layout, subset) -> None:
    """``DataError`` unless there are two classes or more (before anything is decoded)."""
    if len(classes) >= 2:
        return
    where = f"--subset {subset} names" if subset is not None else \
        f"the training folder {layout.train_dir} holds"
    raise DataError(f"{where} only one class ({', '.join(classes)}); a classifier needs at "
                    f"least 2 classes: add a folder of images for each other class"
                    + (" or choose a larger --subset" if subset is not None else ""))


def _require_every_class(split, folder_of) -> None:
    """``DataError`` when a class of the decoded ``split`` (a ``SplitCache``) has no image.

    Unreadable files are skipped; a class whose every file was unreadable would be trained
    on without a single example (and validated as 0% error). ``folder_of(name)``: where that
    class's images are.
    """
    names = split.dataset.class_names
    counts = np.bincount(np.asarray(split.dataset.labels), minlength=len(names))
    empty = [names[k] for k in np.flatnonzero(counts == 0)]
    if empty:
        more = f" (and {len(empty) - 1} other class(es))" if len(empty) > 1 else ""
        raise DataError(f"the class {empty[0]!r}{more} has no readable image in "
                        f"{folder_of(empty[0])}: every file failed to decode (the list is in "
                        f"{os.path.join(split.folder, 'skipped.txt')}); replace those images, "
                        f"or leave the class out (delete its folder, or use --subset)")


def _val_folder(layout: Layout, name: str) -> str:
    """Where the validation images of class ``name`` are (its folder, or the flat val/)."""
    return os.path.join(layout.val_dir, name) if layout.val_kind == "folders" else \
        f"{layout.val_dir} (labelled by {layout.val_labels})"


def _is_prepared_cache(folder) -> bool:
    return folder is not None and os.path.isfile(os.path.join(os.fspath(folder), "dataset.json"))


def _open_prepared(folder, subset, image_size: int, val_fraction: float, seed: int, log
                   ) -> tuple[ImageDataset, ImageDataset, DatasetStats]:
    """Train/val/stats straight from a prepared cache folder given as ``data_dir``.

    This trains on a machine that has the cache but not the original images (copy the cache
    folder over); no source files are checked. The subset and S must match the cache's.
    """
    folder = os.path.abspath(os.fspath(folder))
    identity = read_json(os.path.join(folder, "dataset.json")) or {}
    wanted = {"subset": subset_description(subset) if subset is not None
              else identity.get("subset"), "image_size": image_size}
    for key, value in wanted.items():
        if identity.get(key) != value:
            raise DataError(f"the prepared cache {folder} holds {key} {identity.get(key)!r}, "
                            f"this run needs {value!r}; prepare the data again with those "
                            f"settings (python -m minialexnet.prepare)")
    log(f"using the prepared cache {folder} (made from {identity.get('source_root')})")
    if os.path.isfile(os.path.join(folder, "train", "manifest.json")):
        train = load_split(os.path.join(folder, "train"))
        val = load_split(os.path.join(folder, "val"))
        return train.dataset, val.dataset, train.stats
    if os.path.isfile(os.path.join(folder, "all", "manifest.json")):
        return _holdout(folder, load_split(os.path.join(folder, "all")), val_fraction, seed, log)
    raise DataError(f"the prepared cache {folder} is unfinished; finish it where the images "
                    f"are (run python -m minialexnet.prepare again there)")


def _open(data_dir, subset, image_size, workers, cache_dir, log, val_labels):
    """Shared first steps: find and check the data, pick the classes, open the cache folder.

    Returns ``(layout, classes, identity, cache_dir, workers)``.
    """
    image_size = check_positive_int(image_size, "image_size")
    if data_dir is None:
        if subset is None:
            raise DataError("no data folder given: pass --data-dir (a folder with train/ and "
                            "val/, or any folder of class folders), or --subset imagenet-100 "
                            "to look for ImageNet in the usual places")
        data_dir = find_imagenet_root()
        log(f"found ImageNet at {data_dir}")
    layout = inspect_layout(data_dir, val_labels)
    for note in layout.notes:
        log(note)
    classes = _classes(layout, subset)
    _check_two_classes(classes, layout, subset)
    identity = {"source_root": layout.root, "subset": subset_description(subset),
                "image_size": image_size}
    cache_dir = open_cache_dir(cache_dir or default_cache_dir(layout.root, identity["subset"],
                                                              image_size), identity)
    workers = _default_workers() if workers is None else check_positive_int(workers, "workers")
    return layout, classes, identity, cache_dir, workers


def _whole_split(cache_dir: str, files, identity: dict, workers: int, log):
    """The ``all`` split of a folder without ``val/``; its free-space check counts the
    hold-out copy that follows (the same images stored once more)."""
    reserve = split_bytes(len(files), identity["image_size"], with_stats=True)
    return build_split(os.path.join(cache_dir, "all"), files, identity, "all", workers=workers,
                       log=log, reserve_bytes=reserve)


def open_dataset(data_dir=None, subset=None, image_size: int = 256, val_fraction: float = 0.1,
                 seed: int = 0, workers: int | None = None, cache_dir=None, log=print,
                 val_labels=None) -> tuple[ImageDataset, ImageDataset, DatasetStats]:
    """Training set, validation set and training statistics of a folder of images.

    Arguments:
        data_dir: the data root (see the module docstring), or ``None`` to look for ImageNet
            (only with a ``subset``).
        subset: ``"imagenet-100"``, ``"imagenet-1k"``, a path to a file of class names, or
            ``None`` for every class folder found.
        image_size: S, the side of the stored images (256 as in §2; 64 for the mini model).
        val_fraction, seed: the stratified hold-out used when there is no ``val/`` folder.
        workers: decoding processes on the first run (default: the CPUs available).
        cache_dir: the folder of this dataset's cache (default: see the module docstring).
        log: a ``print``-like function for progress, notes and warnings.
        val_labels: the labels file of a flat ``val/`` folder (default: looked for by name in
            ``data_dir``; formats in ``minialexnet.data.folders``).

    Returns ``(train, val, stats)``: ``ImageDataset`` objects backed by read-only memmaps of
    uint8 ``(N, 3, S, S)`` with int64 labels indexing the sorted class names, and the
    training set's ``DatasetStats``. The first call decodes the images (which can take
    hours for ImageNet; ``python -m minialexnet.prepare`` does it ahead); later calls reuse
    the cache after checking the files did not change. Raises ``DataError`` (a
    ``ValueError``) with an actionable message for any problem with the data.
    """
    if _is_prepared_cache(data_dir):
        return _open_prepared(data_dir, subset, image_size, val_fraction, seed, log)
    layout, classes, identity, cache_dir, workers = _open(data_dir, subset, image_size,
                                                          workers, cache_dir, log, val_labels)
    train_files = list_class_folders(layout.train_dir, classes, "the training folder")
    log(f"{len(classes)} classes, {len(train_files)} training images in {layout.train_dir}; "
        f"cache: {cache_dir}")
    in_train = partial(os.path.join, layout.train_dir)
    if layout.val_kind is None:
        whole = _whole_split(cache_dir, train_files, identity, workers, log)
        _require_every_class(whole, in_train)
        return _holdout(cache_dir, whole, val_fraction, seed, log)
    val_files = _val_files(layout, classes, subset, log)
    train = build_split(os.path.join(cache_dir, "train"), train_files, identity, "train",
                        workers=workers, with_stats=True, log=log)
    _require_every_class(train, in_train)
    val = build_split(os.path.join(cache_dir, "val"), val_files, identity, "val",
                      workers=workers, log=log)
    _require_every_class(val, partial(_val_folder, layout))
    return train.dataset, val.dataset, train.stats


def open_val_dataset(data_dir=None, subset=None, image_size: int = 256,
                     val_fraction: float = 0.1, seed: int = 0, workers: int | None = None,
                     cache_dir=None, log=print, val_labels=None) -> ImageDataset:
    """Only the validation set of ``open_dataset`` (same arguments, same cache), for
    evaluation: with a ``val/`` folder the training images are neither listed nor decoded.
    Without one, the hold-out needs the whole folder decoded (once, into the cache)."""
    if _is_prepared_cache(data_dir):
        return _open_prepared(data_dir, subset, image_size, val_fraction, seed, log)[1]
    layout, classes, identity, cache_dir, workers = _open(data_dir, subset, image_size,
                                                          workers, cache_dir, log, val_labels)
    if layout.val_kind is None:
        train_files = list_class_folders(layout.train_dir, classes, "the training folder")
        whole = _whole_split(cache_dir, train_files, identity, workers, log)
        _require_every_class(whole, partial(os.path.join, layout.train_dir))
        return _holdout(cache_dir, whole, val_fraction, seed, log)[1]
    val_files = _val_files(layout, classes, subset, log)
    val = build_split(os.path.join(cache_dir, "val"), val_files, identity, "val",
                      workers=workers, log=log)
    _require_every_class(val, partial(_val_folder, layout))
    return val.dataset
