"""Decode every image once into a uint8 array on disk, so training reads pixels, not JPEGs.

The paper (§2) down-samples every image to 256x256 before training: the shorter side is
rescaled to 256 and the central 256x256 patch cropped out. Decoding a JPEG costs far more than
a training step reads, so ``build_split`` does it once for the whole split, in parallel
processes, and stores the result where every later run finds it:

    <cache>/<split>/images.npy    uint8 (N, 3, S, S), RGB, read back as an np.memmap
    <cache>/<split>/labels.npy    int64 (N,), indices into the class names
    <cache>/<split>/manifest.json what was decoded: source folder, split, subset, S, number
                                  and fingerprint (names, sizes, mtimes) of the files, class
                                  names, skipped files, format version; written last
    <cache>/<split>/stats.npz     training splits: mean image and RGB PCA (compute_stats)
    <cache>/<split>/skipped.txt   the files that could not be decoded, and why
    <cache>/dataset.json          which source, subset and S this cache folder belongs to

Resuming: the images are decoded in chunks of ``chunk_size`` files; each finished chunk gets a
marker file in ``<split>/progress/`` (written atomically after its rows are flushed to disk),
so an interrupted preparation (Ctrl-C, a crash, a full disk) continues where it stopped. The
build plan (the file fingerprint) is saved first, and a resume continues only when the
files are still the same.

Staleness: every run fingerprints the files again (one ``stat`` per file) and rebuilds a split
whose files changed; a cache folder that belongs to another source folder, subset or image
size is refused with a clear error rather than overwritten. Nothing is ever written into the
data folder, and the only files ever deleted are the cache's own (by name).

Unreadable images (truncated, corrupt, not an image at all) are skipped with a warning and
listed in ``skipped.txt``; they never stop the run.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing
import os
import shutil
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

from minialexnet.atomic import atomic_write
from minialexnet.data.dataset import DatasetStats, ImageDataset, compute_stats
from minialexnet.data.folders import DataError, FileList

#: Bumped whenever the cache's files or the decoding change, so old caches are rebuilt.
CACHE_FORMAT_VERSION = 1

#: How an image becomes S x S pixels; recorded in the manifest (a change means "rebuild").
DECODER = "pillow; exif-transpose; alpha on white; jpeg draft >= 2S; central square -> S bilinear"

DEFAULT_CHUNK_SIZE = 256
"""Largest number of images per work unit: large enough to amortise the per-chunk overhead,
small enough that an interruption loses little work and the progress bar moves. Small
datasets use smaller chunks (at least 16 images, about 64 chunks) so every worker gets some."""

_CACHE_FILES = ("images.npy", "labels.npy", "manifest.json", "stats.npz", "skipped.txt",
                "plan.json")


class UnreadableImage(DataError):
    """An image file that Pillow cannot decode (missing, truncated, corrupt, not an image).

    ``path`` and ``reason`` (Pillow's error, e.g. "OSError: image file is truncated") are
    kept as attributes for reports.
    """

    def __init__(self, path, reason: str):
        self.path, self.reason = os.fspath(path), reason
        super().__init__(f"cannot read the image {self.path} ({reason})")


# --------------------------------------------------------------------------------------------
# One image: file -> uint8 (3, S, S)
# --------------------------------------------------------------------------------------------

def _to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB.

    Greyscale (L, 1) is repeated over three channels, palette (P) images are looked up, CMYK
    is converted (Pillow undoes Adobe's inverted CMYK JPEGs); 16-bit and float greyscale are
    scaled to 0..255; transparent pixels are composited onto white, as a viewer shows them.
    """
    if image.mode == "RGB":
        return image
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        values = np.asarray(image, dtype=np.float32)
        if values.max(initial=0) > 255:              # 16-bit data: 65535 -> 255
            values = values * np.float32(255.0 / 65535.0)
        grey = np.clip(np.rint(values), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def decode_image(path: str | os.PathLike, size: int) -> np.ndarray:
    """Read an image file as the paper's S x S input: uint8 ``(3, size, size)``, RGB, CHW.

    §2: "we down-sampled the images to a fixed resolution of 256 x 256 ... we first rescaled
    the image such that the shorter side was of length 256, and then cropped out the central
    256x256 patch". Both steps are one resampling here: the central ``m x m`` square of the
    ``w x h`` image (``m = min(w, h)``) is resized to ``size x size`` with Pillow's
    antialiased bilinear filter (torchvision's default too).

    JPEG draft mode: libjpeg can decode at 1/2, 1/4 or 1/8 scale almost for free by dropping
    DCT coefficients, which makes large photos several times faster to read. Its reduction is
    a plain block average, so it is only asked for a size whose shorter side stays at least
    ``2 * size``; the final antialiased resize then does the real work. On the 100 ImageNet
    sample images at S = 64 the result differs from a full-resolution decode by 1.0 grey
    level on average (half of what choosing bicubic instead of bilinear changes, 2.0) and
    decodes about 1.4x faster; at S = 256 draft mode rarely applies (it needs a shorter side
    of 1024). Pillow's ``Image.thumbnail`` makes the same trade-off.

    Any format Pillow reads works, whatever the file's name says (a PNG named ``.JPEG``);
    greyscale, palette, CMYK and 16-bit images become RGB (``_to_rgb``), and the EXIF
    orientation of phone photos is applied. Raises ``UnreadableImage`` when the file cannot be
    decoded. The file is only read.
    """
    try:
        with Image.open(path) as image:
            if image.format == "JPEG":
                width, height = image.size
                short = min(width, height)
                if short >= 4 * size:                # draft only when it can halve at least
                    scale = 2 * size / short
                    image.draft("RGB", (int(np.ceil(width * scale)),
                                        int(np.ceil(height * scale))))
            image.load()
            image = ImageOps.exif_transpose(image)
            image = _to_rgb(image)
            width, height = image.size
            short = min(width, height)
            left, top = (width - short) / 2.0, (height - short) / 2.0
            square = image.resize((size, size), Image.Resampling.BILINEAR,
                                  box=(left, top, left + short, top + short))
            pixels = np.asarray(square, dtype=np.uint8)          # (S, S, 3), HWC
    except UnreadableImage:
        raise
    except Exception as err:  # noqa: BLE001 - Pillow raises many types for a bad file
        raise UnreadableImage(path, f"{type(err).__name__}: {err}") from None
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))       # (3, S, S), CHW


# --------------------------------------------------------------------------------------------
# Small file helpers
# --------------------------------------------------------------------------------------------

def _write_json(path: str, value) -> None:
    """Write ``value`` as JSON, atomically (a reader sees the old file or the whole new one)."""
    data = json.dumps(value, indent=1).encode("utf-8")
    atomic_write(path, lambda f: f.write(data))


def _read_json(path: str):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}            # present but unreadable: treated as "not a valid cache file"


def _write_npy(path: str, array: np.ndarray) -> None:
    atomic_write(path, lambda f: np.save(f, array))


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
    found = _read_json(marker)
    expected = dict(identity, format_version=CACHE_FORMAT_VERSION)
    if found is not None and found != expected and \
            {k: found.get(k) for k in identity} == identity:
        found = None             # same dataset, older cache format: its splits get rebuilt
    if found is None:
        _write_json(marker, expected)
    elif found != expected:
        def describe(d):
            return (f"source {d.get('source_root')!r}, subset {d.get('subset')!r}, image size "
                    f"{d.get('image_size')!r}")
        raise DataError(f"the cache folder {cache_dir} belongs to another dataset "
                        f"({describe(found)}); this run needs {describe(expected)}. Choose "
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


# --------------------------------------------------------------------------------------------
# Progress bar (plain text, through the caller's log function)
# --------------------------------------------------------------------------------------------

class Progress:
    """Logs ``what: done/total (pct), rate img/s, time left`` at most every ``every`` seconds."""

    def __init__(self, total: int, what: str, log, every: float = 5.0, done: int = 0):
        self.total, self.what, self.log, self.every = total, what, log, every
        self.done = done
        self.start_done = done
        self.start = self.last = time.monotonic()

    @property
    def rate(self) -> float:
        """Images per second since this run started (resumed work not counted)."""
        return (self.done - self.start_done) / max(time.monotonic() - self.start, 1e-9)

    def update(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
        if now - self.last >= self.every or self.done >= self.total:
            self.last = now
            left = (self.total - self.done) / self.rate if self.rate > 0 else float("nan")
            eta = f", about {_duration(left)} left" if self.done < self.total else ""
            self.log(f"  {self.what}: {self.done}/{self.total} images "
                     f"({100.0 * self.done / max(self.total, 1):.0f}%), "
                     f"{self.rate:.0f} img/s{eta}")


def _duration(seconds: float) -> str:
    if not np.isfinite(seconds):
        return "?"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


# --------------------------------------------------------------------------------------------
# One split: decode in resumable chunks
# --------------------------------------------------------------------------------------------

def _decode_chunk(task: tuple) -> tuple[int, list]:
    """Worker: decode ``paths`` into rows ``start...`` of the images file; return failures.

    The rows are flushed to disk before returning, so the caller may mark the chunk done.
    """
    chunk_id, images_path, start, paths, size = task
    images = np.load(images_path, mmap_mode="r+")
    failures = []
    for offset, path in enumerate(paths):
        try:
            images[start + offset] = decode_image(path, size)
        except UnreadableImage as err:
            images[start + offset] = 0
            failures.append([start + offset, err.reason])
    images.flush()
    del images
    return chunk_id, failures


def _pool_context():
    """How worker processes start: "fork" on Linux, "spawn" elsewhere.

    Fork needs no re-import of the caller's ``__main__``, so a script without an
    ``if __name__ == "__main__":`` guard, code piped through stdin or a notebook all work (with
    "spawn" each worker would re-run an unguarded script). Forking a process whose BLAS or
    Numba threads hold locks is only unsafe if the child uses them; the workers only run
    Pillow and write to a memmap. On macOS and Windows, "spawn" is the safe choice, and a
    script that prepares data there needs the ``__main__`` guard.
    """
    return multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")


def _run_chunks(tasks: list, workers: int, progress: Progress, on_done, log) -> None:
    """Run ``_decode_chunk`` over ``tasks`` (in this process when ``workers <= 1``), calling
    ``on_done(chunk_id, failures)`` as each chunk finishes, in whatever order they finish.

    Worker processes that cannot start (e.g. a script fed through stdin, which "spawn" cannot
    re-import) make the pool "broken"; the remaining chunks then run in this process, so the
    preparation never hangs or fails for that reason.
    """
    sizes = {task[0]: len(task[3]) for task in tasks}
    finished = set()
    if workers > 1 and len(tasks) > 1:
        pool = ProcessPoolExecutor(min(workers, len(tasks)), mp_context=_pool_context())
        try:
            with warnings.catch_warnings():   # Python >= 3.12 warns about any fork (see above)
                warnings.filterwarnings("ignore", message=".*fork", category=DeprecationWarning)
                futures = [pool.submit(_decode_chunk, task) for task in tasks]
            for future in as_completed(futures):
                chunk_id, failures = future.result()
                on_done(chunk_id, failures)
                finished.add(chunk_id)
                progress.update(sizes[chunk_id])
        except BrokenProcessPool as err:
            log(f"  worker processes failed ({err}); decoding in this process instead")
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    for task in tasks:
        if task[0] not in finished:
            chunk_id, failures = _decode_chunk(task)
            on_done(chunk_id, failures)
            progress.update(sizes[chunk_id])


def _rewrite_npy_rows(path: str, rows: int) -> None:
    """Shrink the first axis recorded in an ``.npy`` header to ``rows``, in place.

    The new header is padded with spaces to the old one's length (``rows`` has no more digits
    than before), so the data offset does not move; the file is then truncated.
    """
    with open(path, "r+b") as f:
        version = np.lib.format.read_magic(f)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, fortran, dtype = read_header(f)
        data_offset = f.tell()
        header = repr({"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": fortran,
                       "shape": (rows,) + tuple(shape[1:])})
        prefix_len = 8 + (2 if version == (1, 0) else 4)
        room = data_offset - prefix_len
        f.seek(prefix_len)
        f.write((header.ljust(room - 1) + "\n").encode("latin1"))
        f.truncate(data_offset + rows * int(np.prod(shape[1:])) * dtype.itemsize)


def _compact(images_path: str, bad: list[int], total: int, size: int) -> int:
    """Drop the rows ``bad`` from the images file by moving later rows down; return N left."""
    images = np.load(images_path, mmap_mode="r+")
    keep = np.setdiff1d(np.arange(total), np.asarray(bad, dtype=np.int64))
    for dst, src in enumerate(keep.tolist()):      # dst <= src: never overwrites unread rows
        if dst != src:
            images[dst] = images[src]
    images.flush()
    del images
    _rewrite_npy_rows(images_path, len(keep))
    return len(keep)


@dataclass
class SplitCache:
    """A finished split cache: ``dataset`` (memmap-backed ImageDataset), ``stats`` (training
    splits, else None), ``manifest`` (dict), ``folder``; ``decoded``: images decoded by this
    call (0 when reused); ``seconds``: time spent decoding."""
    dataset: ImageDataset
    stats: DatasetStats | None
    manifest: dict
    folder: str
    decoded: int = 0
    seconds: float = 0.0


def _remove_cache_files(folder: str) -> None:
    for name in _CACHE_FILES:
        path = os.path.join(folder, name)
        if os.path.exists(path):
            os.unlink(path)
    shutil.rmtree(os.path.join(folder, "progress"), ignore_errors=True)


def load_split(folder: str, mmap: bool = True) -> SplitCache:
    """Open a finished split cache (no checks against the source; see ``build_split``)."""
    manifest = _read_json(os.path.join(folder, "manifest.json"))
    if not manifest:
        raise DataError(f"{folder} holds no finished cache (manifest.json is missing or broken)")
    images = np.load(os.path.join(folder, "images.npy"), mmap_mode="r" if mmap else None)
    labels = np.load(os.path.join(folder, "labels.npy"))
    stats_path = os.path.join(folder, "stats.npz")
    stats = load_stats(stats_path) if os.path.exists(stats_path) else None
    return SplitCache(ImageDataset(images, labels, manifest["class_names"]), stats, manifest,
                      folder)


def save_stats(path: str, stats: DatasetStats) -> None:
    """Write ``stats`` as ``.npz`` (mean, pca_eigvals, pca_eigvecs), atomically."""
    atomic_write(path, lambda f: np.savez(f, mean=stats.mean, pca_eigvals=stats.pca_eigvals,
                                          pca_eigvecs=stats.pca_eigvecs))


def load_stats(path: str) -> DatasetStats:
    """Read what ``save_stats`` wrote."""
    with np.load(path, allow_pickle=False) as npz:
        return DatasetStats(mean=npz["mean"], pca_eigvals=npz["pca_eigvals"],
                            pca_eigvecs=npz["pca_eigvecs"])


@contextlib.contextmanager
def exclusive(folder: str, log=print):
    """Hold an exclusive lock on ``folder`` (its ``.lock`` file) for the ``with`` block.

    Two runs started at once on the same data (two training jobs, a prepare and a train)
    would otherwise decode into the same files; the second waits, then finds the cache made.
    POSIX only (``fcntl``); elsewhere no lock is taken.
    """
    try:
        import fcntl
    except ImportError:            # Windows: no advisory locks in the standard library
        yield
        return
    with open(os.path.join(folder, ".lock"), "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"waiting for another process that is preparing {folder} ...")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build_split(folder: str, files: FileList, identity: dict, split: str, *,
                workers: int = 1, with_stats: bool = False, log=print,
                chunk_size: int | None = None) -> SplitCache:
    """Decode ``files`` into the split cache ``folder``, or reuse it if it is up to date.

    Arguments:
        folder: the split's cache folder (created if needed), e.g. ``<cache>/train``.
        files: the images and labels to decode (``folders.FileList``).
        identity: ``{"source_root", "subset", "image_size"}`` of the dataset.
        split: ``"train"``, ``"val"`` or ``"all"`` (recorded in the manifest).
        workers: decoding processes (1: in this process).
        with_stats: also compute and store ``DatasetStats`` (for training splits).
        log: a ``print``-like function for progress and warnings.
        chunk_size: files per resumable work unit (default: ``DEFAULT_CHUNK_SIZE``, less for
            small splits; it depends on the number of files only, so a resumed run with
            another number of workers still continues).

    Returns a ``SplitCache`` whose dataset is an ``np.memmap`` of uint8 ``(N, 3, S, S)``, N =
    the number of files that could be decoded. Raises ``DataError`` when none could.
    """
    os.makedirs(folder, exist_ok=True)
    with exclusive(folder, log):
        if chunk_size is None:
            chunk_size = min(DEFAULT_CHUNK_SIZE, max(16, -(-len(files) // 64)))
        return _build_or_reuse(folder, files, identity, split, workers, with_stats, log,
                               chunk_size)


def _build_or_reuse(folder, files, identity, split, workers, with_stats, log, chunk_size):
    size = int(identity["image_size"])
    signature = {"format_version": CACHE_FORMAT_VERSION, "decoder": DECODER, "split": split,
                 **identity, "num_files": len(files),
                 "files_sha256": fingerprint(files, identity["source_root"]),
                 "class_names": files.class_names}
    manifest_path = os.path.join(folder, "manifest.json")
    manifest = _read_json(manifest_path)
    if manifest is not None:
        if {k: manifest.get(k) for k in signature} == signature:
            log(f"{split}: using the cache in {folder} ({manifest['num_images']} images)")
            if manifest.get("skipped"):
                log(f"{split}: note: {len(manifest['skipped'])} unreadable file(s) were left "
                    f"out, see {os.path.join(folder, 'skipped.txt')}")
            found = load_split(folder)
            if with_stats and found.stats is None:       # made without them: add them now
                found.stats = compute_stats(found.dataset)
                save_stats(os.path.join(folder, "stats.npz"), found.stats)
            return found
        log(f"{split}: the cache in {folder} is out of date ({_what_changed(manifest, signature)}"
            f"); rebuilding it")
        _remove_cache_files(folder)
    return _build(folder, files, signature, split, size, workers, with_stats, log, chunk_size)


def _what_changed(old: dict, new: dict) -> str:
    if old.get("format_version") != new["format_version"] or old.get("decoder") != new["decoder"]:
        return "made by another minialexnet version"
    if old.get("class_names") != new["class_names"]:
        return "the classes changed"
    if old.get("num_files") != new["num_files"]:
        return f"it holds {old.get('num_files')} files, the folder now {new['num_files']}"
    return "files were added, removed or modified"


def _build(folder, files, signature, split, size, workers, with_stats, log, chunk_size):
    images_path = os.path.join(folder, "images.npy")
    progress_dir = os.path.join(folder, "progress")
    plan_path = os.path.join(folder, "plan.json")
    plan = dict(signature, chunk_size=chunk_size)
    total = len(files)
    if not total:
        raise DataError(f"{split}: there are no image files to decode")
    old_plan = _read_json(plan_path)
    if old_plan == plan and os.path.exists(images_path):
        done = {int(name.split(".")[0]) for name in os.listdir(progress_dir)
                if name.endswith(".json")} if os.path.isdir(progress_dir) else set()
    else:
        if old_plan and old_plan.get("compacting"):
            log(f"{split}: the last preparation was interrupted while removing unreadable "
                f"files; starting over")
        elif old_plan is not None:
            log(f"{split}: an unfinished preparation of other files (or settings) was found; "
                f"starting over")
        _remove_cache_files(folder)
        needed = total * 3 * size * size
        free = shutil.disk_usage(folder).free
        if needed > free:
            raise DataError(f"{split}: the cache needs {needed / 2**30:.1f} GiB but {folder} has "
                            f"only {free / 2**30:.1f} GiB free; choose a smaller --image-size "
                            f"or another --cache-dir")
        np.lib.format.open_memmap(images_path, mode="w+", dtype=np.uint8,
                                  shape=(total, 3, size, size)).flush()
        os.makedirs(progress_dir, exist_ok=True)
        _write_json(plan_path, plan)
        done = set()

    n_chunks = (total + chunk_size - 1) // chunk_size
    tasks = [(c, images_path, c * chunk_size, files.paths[c * chunk_size:(c + 1) * chunk_size],
              size) for c in range(n_chunks) if c not in done]
    already = total - sum(len(t[3]) for t in tasks)
    if already:
        log(f"{split}: resuming an interrupted preparation ({already}/{total} images done)")
    log(f"{split}: decoding {total - already} images to {size}x{size} with {workers} "
        f"process(es) into {folder}")
    progress = Progress(total, split, log, done=already)

    def mark_done(chunk_id: int, failures: list) -> None:
        _write_json(os.path.join(progress_dir, f"{chunk_id:06d}.json"), failures)

    started = time.monotonic()
    try:
        _run_chunks(tasks, workers, progress, mark_done, log)
    except KeyboardInterrupt:
        log(f"{split}: interrupted at {progress.done}/{total} images; run the same command "
            f"again to resume")
        raise
    seconds = time.monotonic() - started

    failures = []
    for c in range(n_chunks):
        failures += _read_json(os.path.join(progress_dir, f"{c:06d}.json")) or []
    bad = sorted(index for index, _ in failures)
    if len(bad) == total:
        raise DataError(f"{split}: none of the {total} images could be decoded (first error: "
                        f"{failures[0][1]})")
    skipped = [[os.path.relpath(files.paths[i], signature["source_root"]), reason]
               for i, reason in sorted(failures)]
    if bad:
        report = os.path.join(folder, "skipped.txt")
        text = "".join(f"{rel}\t{reason}\n" for rel, reason in skipped).encode("utf-8")
        atomic_write(report, lambda f: f.write(text))
        for rel, reason in skipped[:5]:
            log(f"{split}: WARNING: skipping {rel}: {reason}")
        message = f"{split}: skipped {len(bad)} unreadable file(s); the list is in {report}"
        log(f"WARNING: {message}")
        warnings.warn(message, stacklevel=4)   # the caller of build_split
        # Plan first says "compacting": rows then move, so an interruption now cannot resume.
        _write_json(plan_path, dict(plan, compacting=True))
        _compact(images_path, bad, total, size)
    labels = np.delete(files.labels, bad)
    empty = [files.class_names[k] for k in range(len(files.class_names))
             if not np.any(labels == k)]
    if empty:
        log(f"{split}: WARNING: no readable image left for class(es) {', '.join(empty[:10])}")
    _write_npy(os.path.join(folder, "labels.npy"), labels.astype(np.int64))

    images = np.load(images_path, mmap_mode="r")
    dataset = ImageDataset(images, labels, files.class_names)
    stats = None
    if with_stats:
        log(f"{split}: computing the mean image and RGB PCA (§2, §4.1)")
        stats = compute_stats(dataset)
        save_stats(os.path.join(folder, "stats.npz"), stats)
    manifest = dict(signature, num_images=int(len(labels)), skipped=skipped,
                    created=time.strftime("%Y-%m-%d %H:%M:%S"))
    _write_json(os.path.join(folder, "manifest.json"), manifest)
    os.unlink(plan_path)
    shutil.rmtree(progress_dir, ignore_errors=True)
    rate = (total - already) / max(seconds, 1e-9)
    log(f"{split}: {len(labels)} images ready in {folder} ({seconds:.1f} s, {rate:.0f} img/s)")
    return SplitCache(dataset, stats, manifest, folder, decoded=total - already, seconds=seconds)
