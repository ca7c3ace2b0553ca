"""Where a dataset's cache lives, and whether a folder may hold it.

One cache folder per dataset: the source folder, the subset and the image size S decide it
(``default_cache_dir``); ``open_cache_dir`` refuses a folder that belongs to another dataset
or is not a minialexnet cache at all, so nothing a user keeps there is ever overwritten.
``fingerprint`` says whether the image files are still the ones a split was built from.
"""
from __future__ import annotations

import hashlib
import os

from minialexnet.data.cache_files import CACHE_FORMAT_VERSION, read_json, write_json
from minialexnet.data.folders import DataError, FileList


def default_cache_root() -> str:
    """Where caches live unless ``--cache-dir`` says otherwise.

    ``$MINIALEXNET_CACHE`` if set, else ``$XDG_CACHE_HOME/minialexnet/datasets``, else
    ``~/.cache/minialexnet/datasets`` -- outside the data folder, which is never written to.
    """
    if os.environ.get("MINIALEXNET_CACHE"):
        return os.path.abspath(os.path.expanduser(os.environ["MINIALEXNET_CACHE"]))
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "minialexnet", "datasets")


def default_cache_dir(source_root: str, subset: str, image_size: int) -> str:
    """``<default_cache_root()>/<folder name>-<subset>-S<size>-<hash>``, one per dataset.

    The hash of the absolute source path keeps two data folders with the same name apart.
    """
    digest = hashlib.sha256(f"{source_root}\n{subset}\n{image_size}".encode()).hexdigest()[:10]
    name = os.path.basename(source_root.rstrip(os.sep)) or "data"
    label = "all" if subset == "all" else os.path.basename(subset).replace(".txt", "")
    return os.path.join(default_cache_root(), f"{name}-{label}-S{image_size}-{digest}")


def _describe(identity: dict) -> str:
    return (f"source {identity.get('source_root')!r}, subset {identity.get('subset')!r}, "
            f"image size {identity.get('image_size')!r}")


def open_cache_dir(cache_dir: str, identity: dict) -> str:
    """Create or check the cache folder of one dataset; return its absolute path.

    ``identity``: ``{"source_root", "subset", "image_size"}``. A folder already holding the
    cache of another dataset raises ``DataError`` (never overwritten); so does an existing,
    non-empty folder that is not a minialexnet cache at all (it could be someone's photos).
    """
    cache_dir = os.path.abspath(os.path.expanduser(cache_dir))
    marker = os.path.join(cache_dir, "dataset.json")
    if os.path.isdir(cache_dir) and os.listdir(cache_dir) and not os.path.exists(marker):
        raise DataError(f"the cache folder {cache_dir} exists and is not a minialexnet cache (no "
                        f"dataset.json); choose a new or empty folder with --cache-dir")
    os.makedirs(cache_dir, exist_ok=True)
    found = read_json(marker)
    expected = dict(identity, format_version=CACHE_FORMAT_VERSION)
    if found is not None and found != expected and \
            {k: found.get(k) for k in identity} == identity:
        found = None             # same dataset, older cache format: its splits get rebuilt
    if found is None:
        write_json(marker, expected)
    elif found != expected:
        raise DataError(f"the cache folder {cache_dir} belongs to another dataset "
                        f"({_describe(found)}); this run needs {_describe(expected)}. Choose "
                        f"another --cache-dir (or leave it out for the default, one folder per "
                        f"dataset), or delete {cache_dir} to rebuild it")
    return cache_dir


def fingerprint(files: FileList, source_root: str) -> str:
    """SHA-256 over each file's path (relative to ``source_root``), size, mtime and label.

    Any added, removed, renamed, rewritten or relabelled file changes it. Raises
    ``DataError`` when a listed file cannot be stat-ed (it vanished since the scan).
    """
    digest = hashlib.sha256()
    for path, label in zip(files.paths, files.labels.tolist()):
        try:
            st = os.stat(path)
        except OSError as err:
            raise DataError(f"cannot read {path}: {err}") from None
        rel = os.path.relpath(path, source_root)
        digest.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\0{label}\n".encode())
    digest.update("\n".join(files.class_names).encode())
    return digest.hexdigest()
