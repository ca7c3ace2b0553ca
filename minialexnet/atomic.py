"""Atomic file writes: readers see the old file or the complete new one, never half a file.

Checkpoints, ``metrics.csv``, the training-curve plot and the dataset cache's JSON files are all
written this way, so a crash, a full disk or Ctrl-C in the middle of a write loses nothing.
"""

from __future__ import annotations

import os
import tempfile

# The process's umask, read once at import (os.umask can only be read by setting it, which is
# not safe while other threads create files). atomic_write gives its files the usual
# permissions, 0o666 & ~umask, instead of mkstemp's private 0o600.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def atomic_write(path, write) -> None:
    """Call ``write(f)`` on a temporary binary file beside ``path``, then move it into place.

    ``os.replace`` is atomic on POSIX and Windows: readers see the old file or the complete
    new one, with the permissions of a newly created file (``0o666 & ~umask``). On any
    failure (including ``KeyboardInterrupt``) the temporary file is removed and the exception
    propagates; the old file, if any, is untouched. Used for checkpoints, ``metrics.csv``,
    the training-curve plot and the dataset cache's JSON files.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        # mkstemp creates the file readable by its owner only; a shared ImageNet cache or a
        # run folder should be readable by whoever may read a normally created file.
        os.chmod(tmp, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def leftover_temp_files(path) -> list[str]:
    """The temporary files of ``atomic_write(path, ...)`` calls that never finished.

    A process killed outright (``kill -9``, power loss) cannot remove its temporary file, which
    stays beside ``path`` as ``.<name>.<random>.tmp``. Returns their paths, sorted. Only a
    caller that knows no other process is writing ``path`` may delete them (e.g. one holding
    the folder's lock): a live writer's file looks the same.
    """
    folder, name = os.path.split(os.path.abspath(os.fspath(path)))
    prefix = f".{name}."
    try:
        entries = os.listdir(folder)
    except FileNotFoundError:
        return []
    return sorted(
        os.path.join(folder, entry)
        for entry in entries
        if entry.startswith(prefix) and entry.endswith(".tmp")
    )
