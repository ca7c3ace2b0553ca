"""Decode every image once into a uint8 array on disk, so training reads pixels, not JPEGs.

The paper (§2) down-samples every image to 256x256 before training (``decode_image`` in
``minialexnet.data.decode``). Decoding a JPEG costs far more than a training step reads, so
``build_split`` does it once for the whole split, in parallel processes
(``minialexnet.data.progress``), and stores the result where every later run finds it
(``minialexnet.data.cache_dir``):

    <cache>/<split>/images.npy    uint8 (N, 3, S, S), RGB, read back as an np.memmap
    <cache>/<split>/labels.npy    int64 (N,), indices into the class names
    <cache>/<split>/manifest.json what was decoded: source folder, split, subset, S, number
                                  and fingerprint (names, sizes, mtimes) of the files, class
                                  names, skipped files, format version; written last
    <cache>/<split>/stats.npz     training splits: mean image and RGB PCA (compute_stats)
    <cache>/<split>/skipped.txt   the files that could not be decoded, and why
    <cache>/<split>/.lock         held by the process building the split (``exclusive``)
    <cache>/dataset.json          which source, subset and S this cache folder belongs to

Resuming: the images are decoded in chunks of ``chunk_size`` files; each finished chunk gets a
marker file in ``<split>/progress/`` (written atomically after its rows are flushed to disk),
so an interrupted preparation (Ctrl-C, ``kill -9``, a crash, a full disk) continues where it
stopped. The build plan (the file fingerprint) is saved first, and a resume continues only
when the files are still the same.

Staleness: every run fingerprints the files again (one ``stat`` per file) and rebuilds a split
whose files changed; a cache folder that belongs to another source folder, subset or image
size is refused with a clear error rather than overwritten. Nothing is ever written into the
data folder, and the only files ever deleted are the cache's own (by name).

Disk space: everything a split will write (and what the caller will copy from it afterwards,
``reserve_bytes``: the hold-out split) is checked against the free space before decoding
starts, and the images file is allocated in full before the first pixel is written, so a
full disk is a clear error (``minialexnet.data.cache_files``), never a crash.

Unreadable images (truncated, corrupt, not an image at all) are skipped with a warning and
listed in ``skipped.txt``; they never stop the run.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import time
import warnings
from dataclasses import dataclass

import numpy as np

from minialexnet.atomic import atomic_write
from minialexnet.data.cache_dir import fingerprint
from minialexnet.data.cache_files import (CACHE_FORMAT_VERSION, check_free_space,
                                          disk_full_is_reported, load_stats, new_npy,
                                          read_json, rewrite_npy_rows, save_stats,
                                          split_bytes, write_json, write_npy)
from minialexnet.data.dataset import DatasetStats, ImageDataset, compute_stats
from minialexnet.data.decode import DECODER, UnreadableImage, decode_image
from minialexnet.data.folders import DataError, FileList
from minialexnet.data.progress import Chunk, Progress, run_chunks

try:
    import fcntl
except ImportError:                   # Windows: no advisory locks in the standard library
    fcntl = None

DEFAULT_CHUNK_SIZE = 256
"""Largest number of images per work unit: large enough to amortise the per-chunk overhead,
small enough that an interruption loses little work and the progress bar moves. Small
datasets use smaller chunks (at least 16 images, about 64 chunks) so every worker gets some."""

_CACHE_FILES = ("images.npy", "labels.npy", "manifest.json", "stats.npz", "skipped.txt",
                "plan.json")


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


@dataclass
class _Build:
    """One split being built: where, from which files, how (the arguments of build_split)."""
    folder: str
    files: FileList
    signature: dict
    chunk_size: int
    workers: int
    with_stats: bool
    log: object
    reserve_bytes: int = 0
    lock_fd: int | None = None

    @property
    def split(self) -> str:
        return self.signature["split"]

    @property
    def size(self) -> int:
        return int(self.signature["image_size"])

    @property
    def num_chunks(self) -> int:
        return -(-len(self.files) // self.chunk_size)

    def path(self, *names: str) -> str:
        return os.path.join(self.folder, *names)


# --------------------------------------------------------------------------------------------
# The lock, and opening a finished split
# --------------------------------------------------------------------------------------------

def _holder(lock_path: str) -> str:
    """`` (pid 1234)`` when the lock file names the process holding it, else ``""``."""
    with contextlib.suppress(OSError), open(lock_path, encoding="ascii") as f:
        pid = f.read().strip()
        return f" (pid {pid})" if pid.isdigit() else ""
    return ""


@contextlib.contextmanager
def exclusive(folder: str, log=print):
    """Hold an exclusive lock on ``folder`` (its ``.lock`` file) for the ``with`` block;
    yield the lock file's descriptor (``None`` where there is no lock).

    Two runs started at once on the same data (two training jobs, a prepare and a train)
    would otherwise decode into the same files; the second waits, then finds the cache made.
    The lock is ``flock`` on the open file, which the kernel releases when the last
    descriptor of that file is closed -- also when the holder dies (``kill -9``, a crash), so
    the lock is never stale. Worker processes forked meanwhile get copies of the descriptor:
    ``run_chunks`` must be told about it (``inherited_fds``). The holder writes its pid into
    the file, for the message of whoever waits. POSIX only; elsewhere no lock is taken.
    """
    if fcntl is None:
        yield None
        return
    lock_path = os.path.join(folder, ".lock")
    with open(lock_path, "a", encoding="ascii") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"waiting for another process{_holder(lock_path)} that is preparing "
                f"{folder} ...")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            handle.truncate(0)
            handle.write(f"{os.getpid()}\n")
            handle.flush()
            yield handle.fileno()
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def load_split(folder: str, mmap: bool = True) -> SplitCache:
    """Open a finished split cache (no checks against the source; see ``build_split``)."""
    manifest = read_json(os.path.join(folder, "manifest.json"))
    if not manifest:
        raise DataError(f"{folder} holds no finished cache (manifest.json is missing or broken)")
    images = np.load(os.path.join(folder, "images.npy"), mmap_mode="r" if mmap else None)
    labels = np.load(os.path.join(folder, "labels.npy"))
    stats_path = os.path.join(folder, "stats.npz")
    stats = load_stats(stats_path) if os.path.exists(stats_path) else None
    return SplitCache(ImageDataset(images, labels, manifest["class_names"]), stats, manifest,
                      folder)


def _remove_cache_files(folder: str) -> None:
    for name in _CACHE_FILES:
        path = os.path.join(folder, name)
        if os.path.exists(path):
            os.unlink(path)
    shutil.rmtree(os.path.join(folder, "progress"), ignore_errors=True)


# --------------------------------------------------------------------------------------------
# Build or reuse one split
# --------------------------------------------------------------------------------------------

def build_split(folder: str, files: FileList, identity: dict, split: str, *,
                workers: int = 1, with_stats: bool = False, log=print,
                chunk_size: int | None = None, reserve_bytes: int = 0) -> SplitCache:
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
        reserve_bytes: what the caller will write beside the split afterwards (the hold-out
            copy of an ``"all"`` split), counted in the free-space check.

    Returns a ``SplitCache`` whose dataset is an ``np.memmap`` of uint8 ``(N, 3, S, S)``, N =
    the number of files that could be decoded. Raises ``DataError`` when none could, or when
    the disk has too little space (before decoding) or fills up (then resumable).
    """
    os.makedirs(folder, exist_ok=True)
    if chunk_size is None:
        chunk_size = min(DEFAULT_CHUNK_SIZE, max(16, -(-len(files) // 64)))
    with exclusive(folder, log) as lock_fd:
        signature = {"format_version": CACHE_FORMAT_VERSION, "decoder": DECODER,
                     "split": split, **identity, "num_files": len(files),
                     "files_sha256": fingerprint(files, identity["source_root"]),
                     "class_names": files.class_names}
        manifest = read_json(os.path.join(folder, "manifest.json"))
        if manifest is not None:
            if {k: manifest.get(k) for k in signature} == signature:
                return _reuse(folder, manifest, split, with_stats, log)
            log(f"{split}: the cache in {folder} is out of date "
                f"({_what_changed(manifest, signature)}); rebuilding it")
            _remove_cache_files(folder)
        return _build(_Build(folder, files, signature, chunk_size, workers, with_stats, log,
                             reserve_bytes, lock_fd))


def _reuse(folder: str, manifest: dict, split: str, with_stats: bool, log) -> SplitCache:
    """The up-to-date split in ``folder``; its statistics are added if asked for and missing."""
    log(f"{split}: using the cache in {folder} ({manifest['num_images']} images)")
    if manifest.get("skipped"):
        log(f"{split}: note: {len(manifest['skipped'])} unreadable file(s) were left "
            f"out, see {os.path.join(folder, 'skipped.txt')}")
    found = load_split(folder)
    if with_stats and found.stats is None:       # made without them: add them now
        found.stats = compute_stats(found.dataset)
        save_stats(os.path.join(folder, "stats.npz"), found.stats)
    return found


def _what_changed(old: dict, new: dict) -> str:
    if old.get("format_version") != new["format_version"] or old.get("decoder") != new["decoder"]:
        return "made by another minialexnet version"
    if old.get("class_names") != new["class_names"]:
        return "the classes changed"
    if old.get("num_files") != new["num_files"]:
        return f"it holds {old.get('num_files')} files, the folder now {new['num_files']}"
    return "files were added, removed or modified"


def _build(job: _Build) -> SplitCache:
    """Decode (or finish decoding) ``job``'s files, drop the unreadable ones, write the rest."""
    total = len(job.files)
    if not total:
        raise DataError(f"{job.split}: there are no image files to decode")
    needed = split_bytes(total, job.size, job.with_stats) + job.reserve_bytes
    with disk_full_is_reported(job.folder, needed, f"{job.split}: the cache"):
        done = _start_or_resume(job, needed)
        seconds, decoded = _decode(job, done)
        skipped = _read_failures(job)
        labels = _drop_unreadable(job, skipped)
        return _finish(job, labels, skipped, seconds, decoded)


def _start_or_resume(job: _Build, needed: int) -> set:
    """The chunks already decoded by an interrupted run of the same plan; otherwise start
    over: check the free space, allocate the images file, save the plan. Returns the set of
    finished chunk indices."""
    plan_path, images_path = job.path("plan.json"), job.path("images.npy")
    progress_dir = job.path("progress")
    plan = dict(job.signature, chunk_size=job.chunk_size)
    old_plan = read_json(plan_path)
    if old_plan == plan and os.path.exists(images_path):
        if not os.path.isdir(progress_dir):
            return set()
        return {int(name.split(".")[0]) for name in os.listdir(progress_dir)
                if name.endswith(".json")}
    if old_plan and old_plan.get("compacting"):
        job.log(f"{job.split}: the last preparation was interrupted while removing unreadable "
                f"files; starting over")
    elif old_plan is not None:
        job.log(f"{job.split}: an unfinished preparation of other files (or settings) was "
                f"found; starting over")
    _remove_cache_files(job.folder)
    what = f"{job.split}: the cache" + (" with its hold-out copy" if job.reserve_bytes else "")
    check_free_space(job.folder, needed, what)
    new_npy(images_path, np.uint8, (len(job.files), 3, job.size, job.size)).flush()
    os.makedirs(progress_dir, exist_ok=True)
    write_json(plan_path, plan)
    return set()


def _decode_rows(images_path: str, start: int, paths: list, size: int) -> list:
    """Worker: decode ``paths`` into rows ``start...`` of the images file; return the
    failures as ``[row, reason]``. The rows are flushed to disk before returning, so the
    caller may mark the chunk done."""
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
    return failures


def _decode(job: _Build, done: set) -> tuple[float, int]:
    """Decode every chunk not in ``done``; return (seconds taken, images decoded)."""
    total, step = len(job.files), job.chunk_size
    chunks = [Chunk(c, len(job.files.paths[c * step:(c + 1) * step]),
                    (job.path("images.npy"), c * step, job.files.paths[c * step:(c + 1) * step],
                     job.size))
              for c in range(job.num_chunks) if c not in done]
    already = total - sum(chunk.count for chunk in chunks)
    if already:
        job.log(f"{job.split}: resuming an interrupted preparation ({already}/{total} images "
                f"done)")
    job.log(f"{job.split}: decoding {total - already} images to {job.size}x{job.size} with "
            f"{job.workers} process(es) into {job.folder}")
    progress = Progress(total, job.split, job.log, done=already)

    def mark_done(index: int, failures: list) -> None:
        write_json(job.path("progress", f"{index:06d}.json"), failures)

    started = time.monotonic()
    try:
        run_chunks(_decode_rows, chunks, workers=job.workers, progress=progress,
                   on_done=mark_done, log=job.log,
                   inherited_fds=() if job.lock_fd is None else (job.lock_fd,))
    except KeyboardInterrupt:
        job.log(f"{job.split}: interrupted at {progress.done}/{total} images; run the same "
                f"command again to resume")
        raise
    return time.monotonic() - started, total - already


def _read_failures(job: _Build) -> list:
    """``[[row, path relative to the source, reason], ...]`` of every unreadable file, by
    row; ``DataError`` when no file at all could be decoded."""
    failures = []
    for c in range(job.num_chunks):
        failures += read_json(job.path("progress", f"{c:06d}.json")) or []
    if len(failures) == len(job.files):
        raise DataError(f"{job.split}: none of the {len(job.files)} images could be decoded "
                        f"(first error: {failures[0][1]})")
    root = job.signature["source_root"]
    return [[row, os.path.relpath(job.files.paths[row], root), reason]
            for row, reason in sorted(failures)]


def _drop_unreadable(job: _Build, skipped: list) -> np.ndarray:
    """Report the unreadable files, remove their rows from the images file; return the
    labels of the rows left."""
    bad = [row for row, _, _ in skipped]
    if bad:
        report = job.path("skipped.txt")
        text = "".join(f"{rel}\t{reason}\n" for _, rel, reason in skipped).encode("utf-8")
        atomic_write(report, lambda f: f.write(text))
        for _, rel, reason in skipped[:5]:
            job.log(f"{job.split}: WARNING: skipping {rel}: {reason}")
        message = f"{job.split}: skipped {len(bad)} unreadable file(s); the list is in {report}"
        job.log(f"WARNING: {message}")
        warnings.warn(message, stacklevel=4)   # the caller of build_split
        # The plan first says "compacting": rows then move, so an interruption cannot resume.
        write_json(job.path("plan.json"),
                   dict(job.signature, chunk_size=job.chunk_size, compacting=True))
        _compact(job.path("images.npy"), bad, len(job.files))
    labels = np.delete(job.files.labels, bad)
    names = job.files.class_names
    empty = [names[k] for k in range(len(names)) if not np.any(labels == k)]
    if empty:
        job.log(f"{job.split}: WARNING: no readable image left for class(es) "
                f"{', '.join(empty[:10])}")
    return labels.astype(np.int64)


def _compact(images_path: str, bad: list[int], total: int) -> int:
    """Drop the rows ``bad`` from the images file by moving later rows down; return N left."""
    images = np.load(images_path, mmap_mode="r+")
    keep = np.setdiff1d(np.arange(total), np.asarray(bad, dtype=np.int64))
    for dst, src in enumerate(keep.tolist()):      # dst <= src: never overwrites unread rows
        if dst != src:
            images[dst] = images[src]
    images.flush()
    del images
    rewrite_npy_rows(images_path, len(keep))
    return len(keep)


def _finish(job: _Build, labels: np.ndarray, skipped: list, seconds: float,
            decoded: int) -> SplitCache:
    """Write labels, statistics and (last) the manifest; remove the plan and markers."""
    write_npy(job.path("labels.npy"), labels)
    images = np.load(job.path("images.npy"), mmap_mode="r")
    dataset = ImageDataset(images, labels, job.files.class_names)
    stats = None
    if job.with_stats:
        job.log(f"{job.split}: computing the mean image and RGB PCA (§2, §4.1)")
        stats = compute_stats(dataset)
        save_stats(job.path("stats.npz"), stats)
    manifest = dict(job.signature, num_images=int(len(labels)),
                    skipped=[[rel, reason] for _, rel, reason in skipped],
                    created=time.strftime("%Y-%m-%d %H:%M:%S"))
    write_json(job.path("manifest.json"), manifest)
    os.unlink(job.path("plan.json"))
    shutil.rmtree(job.path("progress"), ignore_errors=True)
    rate = decoded / max(seconds, 1e-9)
    job.log(f"{job.split}: {len(labels)} images ready in {job.folder} ({seconds:.1f} s, "
            f"{rate:.0f} img/s)")
    return SplitCache(dataset, stats, manifest, job.folder, decoded=decoded, seconds=seconds)
