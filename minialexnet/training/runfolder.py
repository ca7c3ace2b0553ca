"""The output folder of a training run, held by one run at a time.

Two runs writing ``checkpoint_last.npz`` into the same folder would overwrite each other's
checkpoints, epoch after epoch, without a word. ``hold_output`` takes an exclusive
``fcntl.flock`` on a lock file inside the folder and keeps it for the whole run; a second run
is refused at once with a message naming the first (its process id, host, start time and
command). The kernel releases the lock when its process ends in any way (``kill -9``
included), so a dead run never blocks the folder.

Holding the lock proves that no other run writes there, which is what makes it safe to
delete what a killed run left behind: the temporary files of its unfinished atomic writes
(``minialexnet.atomic.leftover_temp_files``), up to a checkpoint's size each.

A folder that ``hold_output`` created and that holds nothing but the lock file when the run
ends (it failed before writing anything) is removed again.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shlex
import socket
import sys
import tempfile
import time
from contextlib import contextmanager

from minialexnet.atomic import leftover_temp_files

#: The lock file inside a run's output folder (kept after the run: removing it could let two
#: runs lock two different files of the same name).
LOCK_NAME = ".minialexnet-run.lock"

#: Folders this process holds (real path -> depth), so that the command line and ``fit``
#: can both hold the same folder: a second flock from this process would refuse itself.
_HELD: dict[str, int] = {}


class OutputFolderError(ValueError):
    """The output folder cannot be used: it is a file, not writable, or held by another run."""


@contextmanager
def hold_output(folder, run_files=(), log=print):
    """Hold ``folder`` (created if missing) for this run: ``with hold_output(out): ...``.

    ``run_files``: the names of the files the run writes atomically; the leftover temporary
    files of each (from a killed run) are deleted once the lock is held. Raises
    ``OutputFolderError`` when ``folder`` is a file, cannot be written to, or another run
    holds it. Re-entrant within one process. Yields the absolute path of the folder.
    """
    folder = os.path.abspath(os.fspath(folder))
    key = os.path.realpath(folder)
    if key in _HELD:
        _HELD[key] += 1
        try:
            yield folder
        finally:
            _HELD[key] -= 1
        return
    created = _make_folder(folder)
    try:
        fd = _lock(folder)
    except BaseException:
        _remove_if_unused(folder, created)
        raise
    _HELD[key] = 1
    try:
        _remove_leftovers(folder, run_files, log)
        yield folder
    finally:
        del _HELD[key]
        os.close(fd)  # releases the lock
        _remove_if_unused(folder, created)


def _make_folder(folder: str) -> str | None:
    """Create ``folder``; return the topmost folder this created (``None`` if it existed)."""
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise OutputFolderError(
            f"the output folder {folder} is a file, not a folder; choose a "
            f"folder for the run's checkpoints (--output runs/NAME; it is "
            f"created if missing)"
        )
    top = None
    path = folder
    while path and not os.path.exists(path):
        top, path = path, os.path.dirname(path)
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise OutputFolderError(
            f"cannot write to the output folder {folder}: "
            f"{err.strerror or err}; choose another --output"
        ) from None
    return top


def _lock(folder: str) -> int:
    """An open descriptor of the folder's lock file, exclusively locked; or an error."""
    path = os.path.join(folder, LOCK_NAME)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = _read_holder(fd)
            os.close(fd)
            if err.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise OutputFolderError(
                    f"cannot lock the output folder {folder} ({err}); choose another --output"
                ) from None
            raise OutputFolderError(
                f"another training run is writing to {folder} ({holder}); two runs in one "
                f"folder would overwrite each other's checkpoints. Wait for it to finish (or "
                f"stop it), or choose another --output"
            ) from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the file was removed between open and flock: lock the new one
    info = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": shlex.join([os.path.basename(sys.executable), *sys.argv]),
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(info).encode("utf-8"), 0)
    return fd


def _read_holder(fd: int) -> str:
    """The lock holder as words, from what it wrote into the lock file."""
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode("utf-8"))
        return (
            f"process {info['pid']} on {info['host']}, started {info['started']}: "
            f"{info['command']}"
        )
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that is just starting"


def _remove_leftovers(folder: str, run_files, log) -> None:
    stale = [tmp for name in run_files for tmp in leftover_temp_files(os.path.join(folder, name))]
    size = 0
    for tmp in stale:
        try:
            size += os.path.getsize(tmp)
            os.unlink(tmp)
        except FileNotFoundError:
            pass
    if stale:
        log(
            f"removed {len(stale)} temporary file(s) ({size / 2**20:.1f} MB) that an "
            f"interrupted run left in {folder}"
        )


def _remove_if_unused(folder: str, created: str | None) -> None:
    """Remove the folders ``_make_folder`` created if the run left nothing in them."""
    if created is None:
        return
    try:
        if set(os.listdir(folder)) <= {LOCK_NAME}:
            lock = os.path.join(folder, LOCK_NAME)
            if os.path.exists(lock):
                os.unlink(lock)
            path = folder
            while True:
                os.rmdir(path)
                if path == created:
                    break
                path = os.path.dirname(path)
    except OSError:
        pass  # something else appeared meanwhile: leave it
