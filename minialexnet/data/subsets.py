"""Class lists: which ImageNet classes to train on, and the human-readable name of each.

ImageNet names its classes by WordNet id ("wnid", e.g. ``n01440764``), which is also the name
of each class folder in ``train/`` and ``val/``. Two lists ship with the package (plain text,
one ``wnid name`` per line):

- ``imagenet1000.txt``: the 1000 classes of ILSVRC-2012 in sorted wnid order, so line ``i``
  (0-based) is the usual ImageNet class index ``i``. The paper (§2) trains on these.
- ``imagenet100.txt``: ImageNet-100, the 100-class subset published with CMC (Tian, Krishnan &
  Isola, 2019), in that list's order. A smaller ImageNet that trains in hours, not days.

A subset is chosen with ``--subset``: ``imagenet-100``, ``imagenet-1k``, or the path of a text
file whose lines each begin with a class folder name (``#`` starts a comment; anything after
the first word is ignored, so the two shipped files are valid subset files themselves).

Class indices always follow the *sorted* class names, whatever the order of the list: the
model's output ``k`` is the ``k``-th name in ``sorted(classes)``. For the full ImageNet this
is exactly the standard index.
"""
from __future__ import annotations

import functools
import os
import re
from importlib import resources

from minialexnet.data.folders import DataError

#: Names accepted by ``--subset`` for the shipped lists (several spellings of each).
SUBSET_ALIASES = {
    "imagenet-100": "imagenet100.txt", "imagenet100": "imagenet100.txt",
    "in100": "imagenet100.txt",
    "imagenet-1k": "imagenet1000.txt", "imagenet1k": "imagenet1000.txt",
    "imagenet-1000": "imagenet1000.txt", "imagenet1000": "imagenet1000.txt",
    "in1k": "imagenet1000.txt",
}

_WNID = re.compile(r"^n\d{8}$")


def is_wnid(name: str) -> bool:
    """True for a WordNet id such as ``n01440764`` (``n`` and eight digits)."""
    return bool(_WNID.match(name))


def _parse_class_list(lines, source: str) -> list[tuple[str, str]]:
    """``[(class, name), ...]`` from lines ``class [name ...]``; ``#`` comments, blanks skipped."""
    entries = []
    seen = set()
    for number, line in enumerate(lines, start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        words = line.split(None, 1)
        cls = words[0]
        if cls in seen:
            raise DataError(f"{source}, line {number}: class {cls!r} is listed twice; "
                            f"each class may appear once")
        seen.add(cls)
        entries.append((cls, words[1].strip() if len(words) > 1 else cls))
    if not entries:
        raise DataError(f"{source} lists no classes; write one class folder name (e.g. a wnid "
                        f"such as n01440764) per line")
    return entries


@functools.lru_cache(maxsize=None)
def _shipped_list(filename: str) -> tuple[tuple[str, str], ...]:
    text = resources.files("minialexnet.data").joinpath(filename).read_text(encoding="utf-8")
    return tuple(_parse_class_list(text.splitlines(), f"minialexnet/data/{filename}"))


def imagenet1000() -> list[str]:
    """The 1000 ILSVRC-2012 wnids, sorted; index ``i`` is the standard class index ``i``."""
    return [wnid for wnid, _ in _shipped_list("imagenet1000.txt")]


@functools.lru_cache(maxsize=None)
def _names() -> dict[str, str]:
    names = dict(_shipped_list("imagenet1000.txt"))
    names.update(_shipped_list("imagenet100.txt"))  # identical names; keeps the lists honest
    return names


def display_name(class_name: str) -> str:
    """A human-readable label: ``"tench (n01440764)"`` for a known wnid, else the name itself.

    The wnid stays in the label because a few ImageNet names are not unique (two "crane"s:
    the bird n02012849 and the machine n03126707; two "maillot"s).
    """
    readable = _names().get(class_name)
    return f"{readable} ({class_name})" if readable else class_name


def subset_description(subset: str | os.PathLike | None) -> str:
    """How a subset argument is recorded in manifests and checkpoints (stable across runs).

    A shipped list is recorded by its canonical name (``"imagenet-100"``); a user file by its
    absolute path; no subset as ``"all"`` (every class folder found).
    """
    if subset is None:
        return "all"
    key = str(subset).strip().lower()
    if key in SUBSET_ALIASES:
        return "imagenet-100" if SUBSET_ALIASES[key] == "imagenet100.txt" else "imagenet-1k"
    return os.path.abspath(os.path.expanduser(str(subset)))


def resolve_subset(subset: str | os.PathLike) -> list[str]:
    """The sorted class names selected by ``subset`` (a shipped list's name or a file path).

    Returns ``list[str]`` sorted, so that position = class index. Raises ``DataError`` for an
    unknown name, a missing or empty file, or a class listed twice.
    """
    key = str(subset).strip().lower()
    if key in SUBSET_ALIASES:
        return sorted(cls for cls, _ in _shipped_list(SUBSET_ALIASES[key]))
    path = os.path.expanduser(str(subset))
    if not os.path.isfile(path):
        known = ", ".join(sorted({"imagenet-100", "imagenet-1k"}))
        raise DataError(f"--subset {subset!r} is neither a known subset ({known}) nor an "
                        f"existing file; pass one of those names or the path of a text file "
                        f"with one class folder name (wnid) per line")
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read the subset file {path}: {err}") from None
    return sorted(cls for cls, _ in _parse_class_list(lines, path))
