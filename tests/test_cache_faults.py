"""The cache under faults: a preparation killed mid-decoding, and a disk that fills up.

Kill tests run a real preparation in a child process and send it a real signal; disk-full
tests inject ``OSError(ENOSPC)`` and, where this process may mount one, use a small tmpfs.
"""

import errno
import os
import shutil
import signal
import subprocess
import sys
import time
import types

import numpy as np
import pytest
from helpers import REPO
from PIL import Image

from minialexnet.data import cache_files
from minialexnet.data.cache import build_split, exclusive
from minialexnet.data.folders import DataError, list_class_folders
from minialexnet.data.imagenet import open_dataset
from minialexnet.data.progress import Chunk, Progress, run_chunks

LINUX = sys.platform.startswith("linux")


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIALEXNET_CACHE", str(tmp_path / "default-cache"))


def quiet(*_):
    pass


def make_folder(root, n_per_class, classes=("a", "b"), size=(16, 12)):
    for k, cls in enumerate(classes):
        os.makedirs(root / cls, exist_ok=True)
        for i in range(n_per_class):
            Image.new("RGB", size, (50 * k + 10, i % 256, 77)).save(root / cls / f"{i}.png")


def files_of(root):
    return list_class_folders(str(root), sorted(os.listdir(root)), "test")


def identity(root, size=8):
    return {"source_root": str(root), "subset": "all", "image_size": size}


# -- a preparation killed while its workers decode -------------------------------------------

# Builds a split with two worker processes; every decode takes 20 ms longer, so the kill
# lands while the workers are busy. argv: data root, split folder, "kernel" or "watchdog"
# (the second pretends prctl is unavailable, as on macOS, to test the fallback).
PREPARE = r"""
import sys, time
from minialexnet.data import cache, progress
from minialexnet.data.folders import list_class_folders

root, folder, mode = sys.argv[1:4]
real = cache.decode_image
def slow(path, size):
    time.sleep(0.02)
    return real(path, size)
cache.decode_image = slow
if mode == "watchdog":
    progress._set_parent_death_signal = lambda: False
files = list_class_folders(root, ["a", "b"], "test")
identity = {"source_root": root, "subset": "all", "image_size": 8}
split = cache.build_split(folder, files, identity, "train", workers=2, log=print,
                          chunk_size=4)
print("images:", len(split.dataset))
"""


def _children(pid: int) -> list[int]:
    """The pids of ``pid``'s child processes (Linux ``/proc``)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                found.append(int(entry))
    return found


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie has exited: it holds no files and no lock)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _wait_for(condition, what: str, limit: float = 60.0) -> None:
    """Poll ``condition()`` until true; fail the test after ``limit`` seconds (a hang)."""
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up after {limit:.0f} s waiting for {what}")
        time.sleep(0.05)


@pytest.mark.skipif(not LINUX, reason="finds the worker processes through Linux's /proc")
@pytest.mark.parametrize(
    "sig, mode",
    [(signal.SIGKILL, "kernel"), (signal.SIGTERM, "kernel"), (signal.SIGKILL, "watchdog")],
)
def test_a_killed_preparation_leaves_no_worker_and_no_lock(tmp_path, sig, mode):
    root, folder = tmp_path / "data", tmp_path / "cache" / "train"
    make_folder(root, n_per_class=100)  # 200 images, 50 chunks
    # Output goes to a file: orphaned workers would hold a pipe open, and reading it hang.
    with open(tmp_path / "first.log", "w") as log:
        child = subprocess.Popen(
            [sys.executable, "-c", PREPARE, str(root), str(folder), mode],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        progress_dir = folder / "progress"
        _wait_for(
            lambda: (
                child.poll() is not None
                or (progress_dir.is_dir() and len(os.listdir(progress_dir)) >= 2)
            ),
            "the first decoded chunks",
        )
        assert child.poll() is None, (tmp_path / "first.log").read_text()
        workers = _children(child.pid)
        assert len(workers) == 2 and all(_alive(w) for w in workers)
        os.kill(child.pid, sig)
        child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    try:
        _wait_for(lambda: not any(_alive(w) for w in workers), "the orphaned workers to exit")
    finally:
        survivors = [w for w in workers if _alive(w)]
        for pid in survivors:  # leave no orphan behind, even when failing
            os.kill(pid, signal.SIGKILL)

    # The lock went with its holders: a second preparation resumes and finishes.
    again = subprocess.run(
        [sys.executable, "-c", PREPARE, str(root), str(folder), "kernel"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert "waiting for another process" not in again.stdout
    assert "resuming an interrupted preparation" in again.stdout
    assert "images: 200" in again.stdout
    reference = build_split(
        str(tmp_path / "ref"), files_of(root), identity(root), "train", log=quiet
    )
    resumed = np.load(folder / "images.npy")
    assert np.array_equal(resumed, np.asarray(reference.dataset.images))


def _points_to(fd: int) -> str:
    """Worker: what the descriptor ``fd`` refers to in this process."""
    return os.readlink(f"/proc/self/fd/{fd}")


@pytest.mark.skipif(not LINUX, reason="reads descriptors through Linux's /proc")
def test_workers_do_not_keep_the_lock_they_inherit(tmp_path):
    seen = []
    with exclusive(str(tmp_path), quiet) as fd:
        run_chunks(
            _points_to,
            [Chunk(i, 1, (fd,)) for i in range(2)],
            workers=2,
            progress=Progress(2, "test", quiet),
            on_done=lambda i, r: seen.append(r),
            log=quiet,
            inherited_fds=(fd,),
        )
        assert _points_to(fd) == str(tmp_path / ".lock")  # the parent still holds it
    assert seen == [os.devnull, os.devnull]


@pytest.mark.skipif(os.name != "posix", reason="the cache lock uses fcntl (POSIX)")
def test_the_lock_names_its_holder(tmp_path):
    root = tmp_path / "data"
    make_folder(root, n_per_class=2)
    folder = tmp_path / "c"
    build_split(str(folder), files_of(root), identity(root), "train", log=quiet)
    assert (folder / ".lock").read_text() == f"{os.getpid()}\n"


# -- a full disk -----------------------------------------------------------------------------


def _disk_full(*_):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_full_disk_when_allocating_the_images_is_a_clear_error(tmp_path, monkeypatch):
    root = tmp_path / "data"
    make_folder(root, n_per_class=3)
    folder = tmp_path / "c"
    monkeypatch.setattr(cache_files, "_reserve", _disk_full)
    with pytest.raises(DataError) as info:
        build_split(str(folder), files_of(root), identity(root), "train", log=quiet)
    message = str(info.value)
    for needle in (
        "train: the cache",
        "disk is full",
        "No space left on device",
        str(folder),
        "needs about",
        "free",
        "--cache-dir",
        "run the same command again",
    ):
        assert needle in message
    assert not (folder / "images.npy").exists()  # its space is given back
    monkeypatch.undo()
    assert (
        len(build_split(str(folder), files_of(root), identity(root), "train", log=quiet).dataset)
        == 6
    )


@pytest.mark.skipif(not hasattr(os, "posix_fallocate"), reason="needs os.posix_fallocate")
def test_full_disk_during_the_hold_out_copy_is_a_clear_error(tmp_path, monkeypatch):
    root = tmp_path / "photos"
    make_folder(root, n_per_class=5)
    cache_dir = tmp_path / "c"
    real = os.posix_fallocate

    def full_for_copies(fd, offset, length):
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".partial"):
            _disk_full()
        real(fd, offset, length)

    monkeypatch.setattr(os, "posix_fallocate", full_for_copies)
    with pytest.raises(DataError, match="holding out validation images.*disk is full"):
        open_dataset(root, image_size=8, cache_dir=cache_dir, log=quiet)
    left = [name for _, _, names in os.walk(cache_dir) for name in names]
    assert not [name for name in left if name.endswith(".partial")]
    monkeypatch.undo()
    logged = []
    train, val, _ = open_dataset(root, image_size=8, cache_dir=cache_dir, log=logged.append)
    assert len(train) + len(val) == 10
    assert any("all: using the cache" in line for line in logged)  # nothing decoded twice


def test_free_space_check_counts_the_hold_out_copy(tmp_path, monkeypatch):
    root = tmp_path / "photos"
    make_folder(root, n_per_class=5)
    once = cache_files.split_bytes(10, 8, with_stats=False)  # room for the decoded split only
    monkeypatch.setattr(
        cache_files.shutil,
        "disk_usage",
        lambda path: types.SimpleNamespace(total=once, used=0, free=once),
    )
    with pytest.raises(
        DataError,
        match="all: the cache with its hold-out copy needs .* GiB "
        r"but .* free \(.* needed, .* free\); free some space",
    ):
        open_dataset(root, image_size=8, cache_dir=tmp_path / "c", log=quiet)
    assert not (tmp_path / "c" / "all" / "images.npy").exists()  # nothing decoded


def test_a_stale_partial_copy_is_removed(tmp_path):
    root = tmp_path / "photos"
    make_folder(root, n_per_class=5)
    open_dataset(root, image_size=8, val_fraction=0.2, cache_dir=tmp_path / "c", log=quiet)
    holdout = tmp_path / "c" / "holdout-seed0-val0.1"
    os.makedirs(holdout)
    (holdout / "train_images.npy.partial").write_bytes(b"\0" * 1000)  # a killed copy
    open_dataset(root, image_size=8, val_fraction=0.1, cache_dir=tmp_path / "c", log=quiet)
    assert not (holdout / "train_images.npy.partial").exists()


# The real thing on a small file system: prepare a hold-out split into a cache folder on an
# 8 MiB tmpfs. argv: data root, cache folder, "honest" or "lying" (disk_usage reports plenty
# of room, so the free-space check passes and the copy meets the full disk itself).
PREPARE_ON_SMALL_DISK = r"""
import shutil, sys, types
from minialexnet.data.folders import DataError
from minialexnet.data.imagenet import open_dataset
from minialexnet.data.progress import Chunk, Progress, run_chunks

root, cache_dir, mode = sys.argv[1:4]
if mode == "lying":
    shutil.disk_usage = lambda path: types.SimpleNamespace(total=2**40, used=0, free=2**40)
try:
    open_dataset(root, image_size=64, workers=1, cache_dir=cache_dir, log=print)
except DataError as err:
    print("DataError:", err)
"""


@pytest.fixture
def small_disk(tmp_path):
    """An 8 MiB tmpfs, mounted for the test (skipped when this process may not mount)."""
    mount_point = tmp_path / "small-disk"
    os.makedirs(mount_point)
    if not LINUX or shutil.which("mount") is None:
        pytest.skip("needs Linux's mount command")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


@pytest.mark.parametrize(
    "mode, expected",
    [
        ("honest", "all: the cache with its hold-out copy needs"),
        ("lying", "holding out validation images: the copy of the two parts: the disk is full"),
    ],
)
def test_a_full_small_disk_gives_a_message_not_a_bus_error(tmp_path, small_disk, mode, expected):
    root = tmp_path / "photos"
    make_folder(root, n_per_class=200)  # 400 images of 3x64x64: 4.9 MB once, 9.8 MB twice
    done = subprocess.run(
        [sys.executable, "-c", PREPARE_ON_SMALL_DISK, str(root), str(small_disk / "c"), mode],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, (done.returncode, done.stderr[-3000:])  # -7: SIGBUS
    assert expected in done.stdout and "--cache-dir" in done.stdout
    left = [name for _, _, names in os.walk(small_disk) for name in names]
    assert not [name for name in left if name.endswith(".partial")]
