"""The cache's files: JSON and ``.npy`` helpers that never leave half a file behind.

Every small file (JSON, labels, statistics) is written atomically: a reader sees the old file
or the whole new one. The large image files are ``.npy`` files opened as memory maps; their
disk space is reserved before the first pixel is written (``new_npy``), so that a full disk
is an ``OSError`` with a message (``disk_full_is_reported``), not a ``Bus error`` that kills
the process.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil

import numpy as np

from minialexnet.atomic import atomic_write
from minialexnet.data.dataset import DatasetStats
from minialexnet.data.folders import DataError

#: Bumped whenever the cache's files or the decoding change, so old caches are rebuilt.
CACHE_FORMAT_VERSION = 1

#: What the small files of a split take at most besides its images, labels and statistics:
#: JSON (manifest, plan, one progress marker per chunk, skipped.txt) and file-system slack.
SMALL_FILES_BYTES = 2**20

_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def write_json(path: str, value) -> None:
    """Write ``value`` as JSON, atomically (a reader sees the old file or the whole new one)."""
    data = json.dumps(value, indent=1).encode("utf-8")
    atomic_write(path, lambda f: f.write(data))


def read_json(path: str):
    """The JSON value in ``path``; ``None`` when there is no such file, ``{}`` when it exists
    but cannot be read or parsed (treated as "not a valid cache file")."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}


def write_npy(path: str, array: np.ndarray) -> None:
    """``np.save`` atomically."""
    atomic_write(path, lambda f: np.save(f, array))


def save_stats(path: str, stats: DatasetStats) -> None:
    """Write ``stats`` as ``.npz`` (mean, pca_eigvals, pca_eigvecs), atomically."""
    atomic_write(path, lambda f: np.savez(f, mean=stats.mean, pca_eigvals=stats.pca_eigvals,
                                          pca_eigvecs=stats.pca_eigvecs))


def load_stats(path: str) -> DatasetStats:
    """Read what ``save_stats`` wrote."""
    with np.load(path, allow_pickle=False) as npz:
        return DatasetStats(mean=npz["mean"], pca_eigvals=npz["pca_eigvals"],
                            pca_eigvecs=npz["pca_eigvecs"])


def split_bytes(num_images: int, image_size: int, with_stats: bool) -> int:
    """Disk space one stored split of ``num_images`` images of S = ``image_size`` takes:
    uint8 images ``N * 3 * S * S``, int64 labels ``8 N``, the float32 mean image ``12 S^2``
    (training splits) and ``SMALL_FILES_BYTES`` for the JSON files."""
    pixels = 3 * image_size * image_size
    stats = 4 * pixels + 4096 if with_stats else 0
    return num_images * (pixels + 8) + stats + SMALL_FILES_BYTES


def _size(nbytes: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes} bytes"


def check_free_space(folder: str, needed: int, what: str) -> None:
    """Raise ``DataError`` before any work when ``folder``'s disk has less than ``needed``
    bytes free; ``what`` names what will be written (e.g. ``"train: the cache"``)."""
    free = shutil.disk_usage(folder).free
    if needed > free:
        exact = f" ({_size(needed)} needed, {_size(free)} free)" if needed < 2**30 else ""
        raise DataError(f"{what} needs {needed / 2**30:.1f} GiB but {folder} has only "
                        f"{free / 2**30:.1f} GiB free{exact}; free some space there, or choose "
                        f"another --cache-dir on a disk with room (or a smaller --image-size)")


@contextlib.contextmanager
def disk_full_is_reported(folder: str, needed: int, what: str):
    """Turn a full disk (``ENOSPC``, ``EDQUOT``) inside the ``with`` block into a
    ``DataError`` that says what was being written, how much it needs and what to do."""
    try:
        yield
    except OSError as err:
        if err.errno not in _DISK_FULL:
            raise
        free = shutil.disk_usage(folder).free
        raise DataError(f"{what}: the disk is full ({os.strerror(err.errno)}) while writing to "
                        f"{folder}; this needs about {_size(needed)} and {_size(free)} are free "
                        f"now. Free some space there, or choose another --cache-dir on a disk "
                        f"with room, then run the same command again") from None


def _reserve(path: str, start: int) -> None:
    """Allocate every disk block of ``path`` from byte ``start`` to its end."""
    with open(path, "r+b") as f:
        end = os.fstat(f.fileno()).st_size
        if hasattr(os, "posix_fallocate"):    # Linux, BSD: instant on ext4, xfs, tmpfs, ...
            os.posix_fallocate(f.fileno(), start, end - start)
            return
        f.seek(start)                         # elsewhere: write the zeros ourselves
        block = bytes(2**20)
        for offset in range(start, end, len(block)):
            f.write(block[:min(len(block), end - offset)])
        f.flush()
        os.fsync(f.fileno())


def new_npy(path: str, dtype, shape: tuple) -> np.memmap:
    """Create the ``.npy`` file ``path`` of zeros, its disk space reserved; return it as a
    writable memmap.

    Writing through a memory map into a sparse file finds a full disk only when the kernel
    pages the data out, and then kills the process with ``SIGBUS`` ("Bus error", exit 135).
    Reserving the blocks first makes a full disk an ``OSError(ENOSPC)`` here, before any
    pixel is written. On failure the file is removed.
    """
    try:
        array = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
        offset = array.offset
        del array
        _reserve(path, offset)
        return np.load(path, mmap_mode="r+")
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        raise


def copy_rows(source: np.ndarray, rows: np.ndarray, path: str, step: int = 256) -> None:
    """Copy ``source[rows]`` into a new ``.npy`` at ``path`` a few rows at a time (the whole
    selection never needs to fit in memory). The copy is written to ``path + ".partial"``,
    which is renamed when complete and removed on any failure."""
    tmp = path + ".partial"
    try:
        out = new_npy(tmp, source.dtype, (len(rows),) + source.shape[1:])
        for start in range(0, len(rows), step):
            out[start:start + step] = source[rows[start:start + step]]
        out.flush()
        del out
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def rewrite_npy_rows(path: str, rows: int) -> None:
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
