"""Reading an image-classification folder tree: which files exist, and which class each is.

Two layouts are understood (hidden files and folders, names starting with ``.``, and folders
holding a minialexnet cache are ignored everywhere, so neither ``.DS_Store`` nor a cache kept
inside the data folder ever becomes a class):

1. The ImageNet layout::

       <root>/train/<class>/*.JPEG      one folder per class (for ImageNet: the wnid)
       <root>/val/<class>/*.JPEG        the same class folders ...
       <root>/val/*.JPEG                ... or a flat val/ folder plus a labels file

2. Any folder of class folders (a user's own photos)::

       <root>/<class>/*.jpg             no val/: a seeded, stratified hold-out is used

A flat ``val/`` (as ILSVRC2012_img_val.tar extracts) needs a labels file, given with
``--val-labels FILE`` or found under one of the names in ``VAL_LABEL_FILES`` in ``<root>``.
Accepted formats (one image per line; blank lines and ``#`` comments are ignored):

- ``filename class``: e.g. ``ILSVRC2012_val_00000001.JPEG n01751748``, separated by a tab,
  a comma or spaces (with spaces the last word is the class, so file names may contain
  spaces; a class name with spaces needs a tab). ``class`` is a class folder name (a wnid
  for ImageNet).
- ``filename index``: e.g. Caffe's ``val.txt`` (``ILSVRC2012_val_00000001.JPEG 65``). The
  integer is 0-based: into the standard sorted 1000-class ILSVRC-2012 list when every
  ``train/`` folder is an ImageNet wnid, else into the sorted ``train/`` class folders.
- Kaggle's ``LOC_val_solution.csv``: header ``ImageId,PredictionString``, then
  ``ILSVRC2012_val_00000001,n01751748 <box> ...`` (the first word of the prediction string).
- The devkit's ``ILSVRC2012_validation_ground_truth.txt``: one 1-based ILSVRC2012_ID per line,
  for the images in sorted filename order. Those ids are *not* the sorted-wnid order; they
  map to wnids through the devkit's ``meta.mat``, which must sit beside the file and needs
  SciPy to read (``pip install scipy``), or convert the file to ``filename class`` first.

A file name may be given with or without its extension. Every ``val/`` image must have a
label; labels for images that are not there are ignored.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np


class DataError(ValueError):
    """A data folder, labels file, subset or cache that cannot be used as given.

    The message says what was found, where, and what to do. Command-line tools print it and
    exit with status 2 instead of showing a traceback.
    """


#: File endings read as images (case-insensitive). Pillow decides the real format from the
#: file's contents, so a PNG saved with a ``.JPEG`` name loads too.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif",
                              ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm"})

#: Labels files for a flat ``val/`` looked for in the data root, in this order.
VAL_LABEL_FILES = ("val_labels.txt", "LOC_val_solution.csv",
                   "ILSVRC2012_validation_ground_truth.txt", "val.txt")

_ARCHIVE_ENDINGS = (".tar", ".tar.gz", ".tgz", ".zip")


def _visible(name: str) -> bool:
    return not name.startswith(".") and name != "__MACOSX"


def is_image_file(name: str) -> bool:
    """True when ``name`` ends in one of ``IMAGE_EXTENSIONS`` (case-insensitive)."""
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def image_paths(arguments) -> list[str]:
    """Image files as given; a folder becomes the image files directly inside it (sorted, not
    recursive, hidden files skipped). What ``predict`` and ``features`` read.

    Raises ``DataError`` for a path that does not exist or a folder without images.
    """
    paths = []
    for arg in [arguments] if isinstance(arguments, (str, os.PathLike)) else arguments:
        arg = os.fspath(arg)
        if os.path.isdir(arg):
            found = sorted(os.path.join(arg, name) for name in os.listdir(arg)
                           if not name.startswith(".") and is_image_file(name)
                           and os.path.isfile(os.path.join(arg, name)))
            if not found:
                raise DataError(f"the folder {arg} holds no image files")
            paths.extend(found)
        elif os.path.exists(arg):
            paths.append(arg)
        else:
            raise DataError(f"{arg} does not exist")
    return paths


def _entries(folder: str) -> tuple[list[str], list[str], list[str]]:
    """(sub-folders, image files, other files) directly inside ``folder``, each sorted.

    A sub-folder holding a minialexnet cache (``dataset.json``) is not a class: a user may
    put the cache inside the data folder with ``--cache-dir``.
    """
    dirs, images, others = [], [], []
    try:
        with os.scandir(folder) as it:
            for entry in it:
                if not _visible(entry.name):
                    continue
                if entry.is_dir():
                    if not os.path.isfile(os.path.join(entry.path, "dataset.json")):
                        dirs.append(entry.name)
                elif is_image_file(entry.name):
                    images.append(entry.name)
                else:
                    others.append(entry.name)
    except OSError as err:
        raise DataError(f"cannot list the folder {folder}: {err}") from None
    return sorted(dirs), sorted(images), sorted(others)


def _no_classes_message(folder: str, what: str, images: list[str], others: list[str]) -> str:
    """Why ``folder`` has no class folders, and what to do about it."""
    archives = [name for name in others if name.lower().endswith(_ARCHIVE_ENDINGS)]
    if archives:
        return (f"{what} {folder} holds {len(archives)} archive(s) (e.g. {archives[0]}) but no "
                f"class folders: extract them first (ILSVRC2012_img_train.tar holds one .tar "
                f"per class; extract each into a folder named after it, e.g. "
                f"train/n01440764/), then run again")
    if images:
        return (f"{what} {folder} holds {len(images)} image(s) directly (e.g. {images[0]}) but "
                f"no class folders; put each class's images in a folder of its own, e.g. "
                f"{os.path.join(folder, '<class>', images[0])}")
    return f"{what} {folder} is empty: it should hold one folder per class, each with images"


def _class_images(folder: str, cls: str) -> list[str]:
    """Absolute paths of the images in ``folder/cls``; ``DataError`` when there are none."""
    path = os.path.join(folder, cls)
    dirs, images, others = _entries(path)
    if not images:
        hint = ""
        if others:
            endings = sorted({os.path.splitext(name)[1] or name for name in others})[:5]
            hint = (f" ({len(others)} file(s) with endings not read as images: "
                    f"{', '.join(endings)}; readable endings: "
                    f"{', '.join(sorted(IMAGE_EXTENSIONS))})")
        elif dirs:
            hint = " (it has sub-folders; images must sit directly in the class folder)"
        raise DataError(f"the class folder {path} has no images{hint}; add images or delete "
                        f"the folder (or leave the class out with --subset)")
    return [os.path.join(path, name) for name in images]


def _missing_message(missing: list[str], folder: str) -> str:
    shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10
                                       else "")
    return f"{len(missing)} class folder(s) missing from {folder}: {shown}"


@dataclass
class FileList:
    """The images of one split: absolute ``paths`` (sorted by class, then name), ``labels``
    int64 ``(N,)`` indexing ``class_names``."""
    paths: list[str]
    labels: np.ndarray
    class_names: list[str]

    def __len__(self) -> int:
        return len(self.paths)


def list_class_folders(folder: str, class_names: list[str], what: str) -> FileList:
    """Every image of ``folder/<class>/`` for the given sorted ``class_names``.

    Labels are positions in ``class_names``. Raises ``DataError`` naming any class folder
    that is missing or holds no images.
    """
    present = set(_entries(folder)[0])
    missing = [cls for cls in class_names if cls not in present]
    if missing:
        raise DataError(_missing_message(missing, f"{what} {folder}") +
                        "; check --data-dir and --subset, or restore those folders")
    paths, labels = [], []
    for index, cls in enumerate(class_names):
        images = _class_images(folder, cls)
        paths.extend(images)
        labels.extend([index] * len(images))
    return FileList(paths, np.asarray(labels, dtype=np.int64), list(class_names))


def check_val_classes(layout: "Layout") -> None:
    """``DataError`` when ``val/`` has class folders that ``train/`` lacks (their images
    would have no label index)."""
    extra = sorted(set(_entries(layout.val_dir)[0]) - set(layout.classes))
    if extra:
        raise DataError(f"{layout.val_dir} has class folder(s) that {layout.train_dir} lacks: "
                        f"{', '.join(extra[:10])}; the two must hold the same classes")


@dataclass
class Layout:
    """What ``inspect_layout`` found in a data root.

    ``kind`` is ``"imagenet"`` (``train/`` and maybe ``val/``) or ``"classes"`` (class folders
    directly in the root). ``val_kind`` is ``"folders"``, ``"flat"`` or ``None`` (no val/:
    hold out part of train). ``classes``: every class folder of the training folder, sorted.
    """
    root: str
    kind: str
    train_dir: str
    classes: list[str]
    val_dir: str | None = None
    val_kind: str | None = None
    val_labels: str | None = None
    notes: list[str] = field(default_factory=list)


def inspect_layout(root: str | os.PathLike, val_labels: str | os.PathLike | None = None
                   ) -> Layout:
    """Check the layout of ``root`` (see the module docstring) and describe it.

    Raises ``DataError`` for the common mistakes: a missing folder, ``--data-dir`` pointing at
    ``train/`` or ``val/`` itself, a training folder without class folders (empty, flat images,
    unextracted archives), an empty ``val/``, or a flat ``val/`` without a labels file.
    """
    root = os.path.abspath(os.path.expanduser(os.fspath(root)))
    if not os.path.exists(root):
        raise DataError(f"the data folder {root} does not exist; check --data-dir")
    if not os.path.isdir(root):
        raise DataError(f"--data-dir must be a folder, but {root} is a file")
    parent, base = os.path.split(root)
    if base.lower() in ("train", "val") and os.path.isdir(os.path.join(parent, "train")) \
            and os.path.isdir(os.path.join(parent, "val")):
        raise DataError(f"--data-dir points at the {base}/ folder itself ({root}); point it at "
                        f"the folder that holds both train/ and val/: {parent}")
    dirs, images, others = _entries(root)
    train_dir = os.path.join(root, "train")
    if "train" not in dirs:
        kaggle = os.path.join(root, "ILSVRC", "Data", "CLS-LOC")
        if os.path.isdir(kaggle):
            raise DataError(f"{root} looks like the Kaggle ImageNet download; point --data-dir "
                            f"at {kaggle} (it holds train/ and val/) and pass --val-labels "
                            f"{os.path.join(root, 'LOC_val_solution.csv')}")
        if "val" in dirs:
            raise DataError(f"{root} has a val/ folder but no train/ folder; the ImageNet "
                            f"layout is <root>/train/<class>/ and <root>/val/")
        if not dirs:
            raise DataError(_no_classes_message(root, "the data folder", images, others))
        return Layout(root, "classes", root, dirs)

    train_classes, train_images, train_others = _entries(train_dir)
    if not train_classes:
        raise DataError(_no_classes_message(train_dir, "the training folder", train_images,
                                            train_others))
    layout = Layout(root, "imagenet", train_dir, train_classes)
    val_dir = os.path.join(root, "val")
    if not os.path.isdir(val_dir):
        layout.notes.append(f"no val/ folder in {root}: holding out part of train/ for "
                            f"validation")
        return layout
    val_classes, val_images, _ = _entries(val_dir)
    layout.val_dir = val_dir
    if val_classes:
        layout.val_kind = "folders"
        if val_images:
            layout.notes.append(f"ignoring {len(val_images)} image(s) directly in {val_dir}; "
                                f"its class folders are used")
        return layout
    if not val_images:
        raise DataError(f"the validation folder {val_dir} is empty; fill it, or remove it to "
                        f"hold out part of train/ instead")
    layout.val_kind = "flat"
    layout.val_labels = _find_val_labels(root, val_dir, len(val_images), val_labels)
    return layout


def _find_val_labels(root: str, val_dir: str, count: int, given) -> str:
    if given is not None:
        path = os.path.abspath(os.path.expanduser(os.fspath(given)))
        if not os.path.isfile(path):
            raise DataError(f"the val labels file {path} does not exist; check --val-labels")
        return path
    for name in VAL_LABEL_FILES:
        path = os.path.join(root, name)
        if os.path.isfile(path):
            return path
    raise DataError(f"{val_dir} holds {count} images directly, without class folders, and "
                    f"no labels file was given; pass --val-labels FILE (accepted: "
                    f"'filename wnid' lines, Caffe's val.txt, Kaggle's LOC_val_solution.csv, "
                    f"or the devkit's ILSVRC2012_validation_ground_truth.txt with meta.mat "
                    f"beside it) or put it in {root} as one of: {', '.join(VAL_LABEL_FILES)}")


def read_val_labels(path: str, filenames: list[str], index_classes: list[str]) -> list[str]:
    """The class name of each image in ``filenames`` (the sorted names in a flat ``val/``).

    ``path``: a labels file in one of the formats of the module docstring. ``index_classes``:
    the list that integer labels index (0-based). Returns ``list[str]`` aligned with
    ``filenames``. Raises ``DataError`` for an unreadable file, a malformed line, an unknown
    class or an image without a label.
    """
    try:
        with open(path, encoding="utf-8-sig") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read the val labels file {path}: {err}") from None
    rows = [(n, line.split("#", 1)[0].strip()) for n, line in enumerate(lines, start=1)]
    rows = [(n, line) for n, line in rows if line]
    if not rows:
        raise DataError(f"the val labels file {path} is empty")

    if rows[0][1].replace(" ", "").lower().startswith("imageid,predictionstring"):
        by_name = {}
        for n, line in rows[1:]:
            name, _, prediction = line.partition(",")
            if not prediction.split():
                raise DataError(f"{path}, line {n}: expected 'ImageId,<wnid> ...', got {line!r}")
            by_name[name.strip()] = prediction.split()[0]
        return _match_names(path, by_name, filenames)

    if all(line.isdigit() for _, line in rows):
        return _devkit_labels(path, [int(line) for _, line in rows], filenames)

    by_name = {}
    for n, line in rows:
        separator = "\t" if "\t" in line else "," if "," in line else None
        words = line.split(separator) if separator else line.rsplit(None, 1)
        words = [w.strip() for w in words]
        if len(words) != 2 or not all(words):
            raise DataError(f"{path}, line {n}: expected 'filename class' or 'filename index', "
                            f"got {line!r}")
        name, label = words
        if label.isdigit():
            index = int(label)
            if index >= len(index_classes):
                raise DataError(f"{path}, line {n}: class index {index} is out of range; "
                                f"integer labels are 0-based indices into {len(index_classes)} "
                                f"sorted classes")
            label = index_classes[index]
        by_name[name] = label
    return _match_names(path, by_name, filenames)


def _match_names(path: str, by_name: dict[str, str], filenames: list[str]) -> list[str]:
    """Look each file up by its full name, then by its name without the extension."""
    by_name = {os.path.basename(name.replace("\\", "/")): label
               for name, label in by_name.items()}
    labels, unlabelled = [], []
    for name in filenames:
        label = by_name.get(name, by_name.get(os.path.splitext(name)[0]))
        if label is None:
            unlabelled.append(name)
        labels.append(label)
    if unlabelled:
        raise DataError(f"{len(unlabelled)} val image(s) have no label in {path} (e.g. "
                        f"{unlabelled[0]}); the file must list every image of the val folder")
    return labels


def _devkit_labels(path: str, ids: list[int], filenames: list[str]) -> list[str]:
    """Labels from the devkit's ground truth: line i = ILSVRC2012_ID of the i-th sorted file."""
    if len(ids) != len(filenames):
        raise DataError(f"{path} has {len(ids)} labels (one ILSVRC2012_ID per line, in sorted "
                        f"file order) but the val folder has {len(filenames)} images; this "
                        f"format needs the complete val folder")
    meta = os.path.join(os.path.dirname(path), "meta.mat")
    if not os.path.isfile(meta):
        raise DataError(f"{path} numbers classes by ILSVRC2012_ID, which maps to wnids only "
                        f"through the devkit's meta.mat; put meta.mat beside it (it is in "
                        f"ILSVRC2012_devkit_t12/data/) or use a 'filename wnid' file instead")
    id_to_wnid = read_devkit_meta(meta)
    try:
        return [id_to_wnid[i] for i in ids]
    except KeyError as err:
        raise DataError(f"{path}: ILSVRC2012_ID {err.args[0]} is not a leaf class in "
                        f"{meta}") from None


def read_devkit_meta(path: str) -> dict[int, str]:
    """``{ILSVRC2012_ID: wnid}`` for the 1000 leaf classes in the devkit's ``meta.mat``.

    Needs SciPy (``scipy.io.loadmat``), which minialexnet does not otherwise depend on.
    """
    try:
        from scipy.io import loadmat
    except ImportError:
        raise DataError(f"reading {path} needs SciPy, which is not installed: pip install "
                        f"scipy, or convert the ground truth to 'filename wnid' lines") from None
    try:
        synsets = loadmat(path, squeeze_me=True)["synsets"]
        # Leaves (num_children == 0) are the 1000 classes; fields are ILSVRC2012_ID, WNID, ...
        return {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in synsets
                if int(s["num_children"]) == 0}
    except Exception as err:  # noqa: BLE001 - any failure means "not the devkit's meta.mat"
        raise DataError(f"{path} is not the ILSVRC-2012 devkit's meta.mat ({err})") from None


def list_flat_val(layout: Layout, class_names: list[str], index_classes: list[str]
                  ) -> tuple[FileList, int]:
    """The images of a flat ``val/`` whose class is in ``class_names``, with their labels.

    Returns ``(FileList, dropped)``, where ``dropped`` counts images of classes outside
    ``class_names`` (e.g. the 900 other classes when training on ImageNet-100).
    """
    _, names, _ = _entries(layout.val_dir)
    labels = read_val_labels(layout.val_labels, names, index_classes)
    known = set(layout.classes)
    unknown = sorted({label for label in labels if label not in known})
    if unknown:
        raise DataError(f"{layout.val_labels} names {len(unknown)} class(es) that have no "
                        f"folder in {layout.train_dir} (e.g. {unknown[0]}); is it the labels "
                        f"file of this dataset?")
    position = {cls: i for i, cls in enumerate(class_names)}
    keep = [(os.path.join(layout.val_dir, name), position[label])
            for name, label in zip(names, labels) if label in position]
    keep.sort(key=lambda item: (item[1], item[0]))  # by class, then name, like the folders
    missing = sorted(set(class_names) - {label for label in labels})
    if missing:
        raise DataError(_missing_message(missing, f"the val labels of {layout.val_labels}") +
                        " (no val image has these classes)")
    paths = [p for p, _ in keep]
    return FileList(paths, np.asarray([k for _, k in keep], dtype=np.int64),
                    list(class_names)), len(names) - len(keep)
