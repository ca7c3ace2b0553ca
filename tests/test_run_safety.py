"""Nothing lost, nothing silently overwritten, every message true: the training run's folder
lock, a full disk, kill -9 mid-checkpoint, a resumed run's data, and the messages for bad
checkpoints, folders, devices and images."""

import errno
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from helpers import REPO
from PIL import Image

from minialexnet import cli, evaluate, predict, train
from minialexnet.data.dataset import DatasetStats
from minialexnet.data.folders import DataError
from minialexnet.data.imagenet import open_dataset
from minialexnet.model import AlexNet
from minialexnet.train import main
from minialexnet.training import TrainConfig, TrainingDiverged, fit
from minialexnet.training import checkpoint as ckpt_mod
from minialexnet.training.checkpoint import (
    CheckpointError,
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
)
from minialexnet.training.runfolder import LOCK_NAME, OutputFolderError, hold_output


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIALEXNET_CACHE", str(tmp_path / "default-cache"))


@pytest.fixture
def no_data(monkeypatch):
    """Building data is the expensive step: any attempt fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("the data was built before the inputs were checked")

    monkeypatch.setattr(train, "open_datasets", refuse)


def _usage_error(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def _photo_tree(root, counts, size=70):
    """``root/<class>/<i>.JPEG`` solid colours, ``counts``: class -> number of images."""
    for k, (cls, n) in enumerate(sorted(counts.items())):
        os.makedirs(root / cls, exist_ok=True)
        for i in range(n):
            Image.new("RGB", (size, size), (60 * k + 20, 15 * i, 90)).save(
                root / cls / f"{i}.JPEG"
            )


# -- item 4: --resume trains on the checkpoint's recorded data -------------------------------


def test_resume_without_data_dir_uses_the_recorded_folder(tmp_path, capsys, monkeypatch):
    _photo_tree(tmp_path / "photos", {"ant": 6, "bee": 6, "cow": 6})
    run = tmp_path / "run"
    assert (
        main(
            [
                "--data-dir",
                str(tmp_path / "photos"),
                "--epochs",
                "1",
                "-b",
                "4",
                "--output",
                str(run),
                "--workers",
                "0",
            ]
        )
        == 0
    )

    def no_synthetic(*args, **kwargs):
        raise AssertionError("the synthetic data was built for a folder-trained checkpoint")

    monkeypatch.setattr(cli, "make_synthetic", no_synthetic)
    assert main(["--resume", str(run / "checkpoint_last.npz"), "--epochs", "2"]) == 0
    ckpt = load_checkpoint(run / "checkpoint_last.npz")
    assert ckpt.meta["epoch"] == 2 and ckpt.meta["class_names"] == ["ant", "bee", "cow"]
    assert f"as recorded in {run / 'checkpoint_last.npz'}" in capsys.readouterr().out

    # The data moved: train --resume and evaluate say where it was and to pass --data-dir.
    os.rename(tmp_path / "photos", tmp_path / "moved")
    for err in (
        _usage_error(["--resume", str(run / "checkpoint_last.npz"), "--epochs", "3"], capsys),
    ):
        assert f"trained on the data in {tmp_path / 'photos'}" in err
        assert "pass --data-dir with its new location" in err and "check --data-dir" not in err
    assert evaluate.main([str(run / "checkpoint_last.npz"), "--backend", "numpy"]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'photos'}, which is not there any more" in err
    assert "check --data-dir" not in err
    assert (
        main(
            [
                "--resume",
                str(run / "checkpoint_last.npz"),
                "--epochs",
                "3",
                "--data-dir",
                str(tmp_path / "moved"),
            ]
        )
        == 0
    )


# -- item 5: a full disk while saving ----------------------------------------------------------


def test_disk_full_while_saving_is_one_message_and_keeps_the_last_checkpoint(
    cli_data, tmp_path, monkeypatch, capsys
):
    real_savez, calls = np.savez, []

    def savez(f, **arrays):
        calls.append(1)
        if len(calls) == 3:  # epoch 1 wrote last + best; the 3rd write is epoch 2's
            f.write(b"PK\x03\x04 partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_savez(f, **arrays)

    monkeypatch.setattr(ckpt_mod.np, "savez", savez)
    run = tmp_path / "run"
    assert main(["--epochs", "3", "-b", "8", "--output", str(run)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    assert "could not save epoch 2" in err and "the disk is full" in err
    assert f"last complete checkpoint is {run / 'checkpoint_last.npz'} (epoch 1)" in err
    assert f"--resume {run / 'checkpoint_last.npz'}" in err
    assert load_checkpoint(run / "checkpoint_last.npz").meta["epoch"] == 1
    assert not [name for name in os.listdir(run) if name.endswith(".tmp")]


# -- item 6: one run per output folder ---------------------------------------------------------

HOLDER = """
import sys, time
from minialexnet.training.runfolder import hold_output
with hold_output(sys.argv[1]):
    print("held", flush=True)
    time.sleep(120)
"""


def _start_holder(folder):
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(folder)], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_run_on_a_held_folder_is_refused_until_the_holder_dies(
    cli_data, tmp_path, capsys, mini_data
):
    run = tmp_path / "run"
    holder = _start_holder(run)
    try:
        err = _usage_error(["--epochs", "1", "-b", "8", "--output", str(run)], capsys)
        assert f"another training run is writing to {run}" in err
        assert f"process {holder.pid} on" in err and "choose another --output" in err
        with pytest.raises(OutputFolderError, match=f"process {holder.pid}"):
            fit(
                AlexNet(3, "mini"),
                *mini_data,
                TrainConfig(epochs=1, batch_size=8),
                output=run,
                log=lambda line: None,
            )
        assert not (run / "checkpoint_last.npz").exists()
    finally:
        holder.send_signal(signal.SIGKILL)  # the kernel releases its lock
        holder.wait(timeout=30)
    assert main(["--epochs", "1", "-b", "8", "--output", str(run)]) == 0
    assert load_checkpoint(run / "checkpoint_last.npz").meta["epoch"] == 1


# -- item 7: kill -9 in the middle of a checkpoint write ---------------------------------------

KILLED_MID_WRITE = """
import os, signal, sys
import numpy as np
from minialexnet import train
from minialexnet.data.synthetic import make_synthetic
data = (make_synthetic("train", num_classes=3, n_per_class=8, seed=2),
        make_synthetic("val", num_classes=3, n_per_class=4, seed=2))
train.open_datasets = lambda args, image_size, val_only=False: (*data, None, "synthetic")
real_savez, calls = np.savez, []
def savez(f, **arrays):
    calls.append(1)
    if len(calls) == 2:                     # epoch 1's checkpoint_best, half written
        f.write(b"PK\\x03\\x04 half a checkpoint")
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    real_savez(f, **arrays)
np.savez = savez
sys.exit(train.main(sys.argv[1:]))
"""


def test_kill_9_mid_checkpoint_then_resume_cleans_up_and_writes_the_best(
    cli_data, tmp_path, capsys
):
    run = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_MID_WRITE, "--epochs", "1", "-b", "8", "--output", str(run)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    stale = [name for name in os.listdir(run) if name.endswith(".tmp")]
    assert stale and stale[0].startswith(".checkpoint_best.npz.")
    assert not (run / "checkpoint_best.npz").exists()

    assert main(["--resume", str(run / "checkpoint_last.npz"), "--epochs", "3"]) == 0
    assert "removed 1 temporary file(s)" in capsys.readouterr().out
    assert not [name for name in os.listdir(run) if name.endswith(".tmp")]
    history = load_checkpoint(run / "checkpoint_last.npz").meta["history"]
    errors = [h["val_top1_err"] for h in history]
    best = load_checkpoint(run / "checkpoint_best.npz")
    assert best.meta["best_top1"] == min(errors)
    assert best.meta["epoch"] == 1 + errors.index(min(errors))


def test_stale_temp_files_are_removed_only_by_the_folder_s_holder(cli_data, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    planted = [run / ".checkpoint_last.npz.k2j4h1.tmp", run / ".metrics.csv.x9.tmp"]
    for path in planted:
        path.write_bytes(b"left by a dead writer")
    (run / "notes.tmp").write_text("not ours")
    holder = _start_holder(run)
    try:
        _usage_error(["--epochs", "1", "-b", "8", "--output", str(run)], capsys)
        assert all(path.exists() for path in planted)  # a live writer's, maybe
    finally:
        holder.kill()
        holder.wait(timeout=30)
    assert main(["--epochs", "1", "-b", "8", "--output", str(run)]) == 0
    assert not any(path.exists() for path in planted) and (run / "notes.tmp").exists()


# -- item 8: a class without a readable image --------------------------------------------------


def test_a_class_with_no_readable_image_is_refused(tmp_path):
    _photo_tree(tmp_path / "photos", {"ant": 4, "cow": 4})
    os.makedirs(tmp_path / "photos" / "bee")
    for i in range(3):
        (tmp_path / "photos" / "bee" / f"{i}.JPEG").write_bytes(b"\xff\xd8 not a jpeg" * i)
    message = rf"the class 'bee' has no readable image in {tmp_path / 'photos' / 'bee'}.*skipped"
    with pytest.warns(UserWarning, match="unreadable"), pytest.raises(DataError, match=message):
        open_dataset(tmp_path / "photos", image_size=32, workers=1, log=lambda line: None)


# -- item 9: messages that say what was wrong and what to do -----------------------------------


def test_one_class_says_a_classifier_needs_two(tmp_path):
    _photo_tree(tmp_path / "photos", {"ant": 3})
    with pytest.raises(
        DataError,
        match=rf"the training folder {tmp_path / 'photos'} holds only "
        r"one class \(ant\); a classifier needs at least 2",
    ):
        open_dataset(tmp_path / "photos", image_size=32, workers=1, log=lambda line: None)
    _photo_tree(tmp_path / "more", {"ant": 3, "bee": 3})
    (tmp_path / "one.txt").write_text("bee\n")
    with pytest.raises(DataError, match=r"--subset .*one.txt names only one class \(bee\)"):
        open_dataset(
            tmp_path / "more",
            subset=tmp_path / "one.txt",
            image_size=32,
            workers=1,
            log=lambda line: None,
        )


def test_random_bytes_are_not_a_checkpoint_and_pickle_is_not_mentioned(tmp_path):
    path = tmp_path / "random.npz"
    path.write_bytes(np.random.default_rng(0).bytes(4000))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert "is not a minialexnet checkpoint" in str(info.value)
    assert "pickle" not in str(info.value)
    (tmp_path / "empty.npz").write_bytes(b"")
    with pytest.raises(CheckpointError, match="not a minialexnet checkpoint .it is empty"):
        load_checkpoint(tmp_path / "empty.npz")


def _with_nan_weight(source, target):
    with np.load(source) as npz:
        arrays = {key: npz[key] for key in npz.files}
    arrays["param/fc8.W"] = arrays["param/fc8.W"].copy()
    arrays["param/fc8.W"][0, 0] = np.nan
    np.savez(target, **arrays)


def test_nan_weights_are_refused_by_evaluate_predict_and_resume(cli_data, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["--epochs", "1", "-b", "8", "--output", str(run)]) == 0
    bad = tmp_path / "nan.npz"
    _with_nan_weight(run / "checkpoint_last.npz", bad)
    with pytest.raises(CheckpointError, match=r"NaN or infinite weights \(fc8.W\).*diverged"):
        model_from_checkpoint(bad)
    capsys.readouterr()
    assert evaluate.main([str(bad), "--backend", "numpy"]) == 2
    assert "NaN or infinite weights" in capsys.readouterr().err
    photo = tmp_path / "p.png"
    Image.new("RGB", (80, 80), (10, 200, 30)).save(photo)
    assert predict.main(["-c", str(bad), str(photo), "--backend", "numpy"]) == 2
    assert "NaN or infinite weights" in capsys.readouterr().err
    assert "NaN or infinite weights" in _usage_error(
        ["--resume", str(bad), "--epochs", "2"], capsys
    )


class _NaNAlexNet(AlexNet):
    def forward(self, x, train=False):
        logits = super().forward(x, train)
        return logits * np.float32("nan") if train else logits


def test_a_diverged_resumed_run_names_a_last_good_checkpoint_that_exists(mini_data, tmp_path):
    rng = np.random.default_rng(1)
    fit(
        AlexNet(3, "mini", rng=rng),
        *mini_data,
        TrainConfig(epochs=1, batch_size=8),
        rng=rng,
        output=tmp_path / "a",
        log=lambda line: None,
    )
    resumed = tmp_path / "a" / "checkpoint_last.npz"
    rng = np.random.default_rng(1)
    with pytest.raises(TrainingDiverged) as info:
        fit(
            _NaNAlexNet(3, "mini", rng=rng),
            *mini_data,
            TrainConfig(epochs=2, batch_size=8),
            rng=rng,
            output=tmp_path / "b",
            resume=resumed,
            log=lambda line: None,
        )
    assert f"the last good checkpoint is {resumed} (epoch 1)" in str(info.value)


def test_output_that_is_a_file_is_named_a_file(no_data, tmp_path, capsys):
    a_file = tmp_path / "results.txt"
    a_file.write_text("x")
    err = _usage_error(["--output", str(a_file)], capsys)
    assert f"the output folder {a_file} is a file, not a folder; choose a folder" in err
    assert "File exists" not in err


def test_cpu_devices_beyond_the_machine_are_explained(no_data, monkeypatch, capsys):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    err = _usage_error(["--devices", "cpu:0,cpu:7"], capsys)
    assert "cpu:7 asks for CPU 7, but this machine has 2 CPU(s)" in err
    assert "a device is a thread of this process, one per tower" in err
    assert "exactly 2" in _usage_error(["--devices", "cpu:0,cpu:1,cpu:1"], capsys)


def test_the_advised_cpu_devices_are_accepted_on_one_cpu(monkeypatch):
    # The refusal above advises cpu:0,cpu:1; on a one-CPU machine that advice must work (the
    # towers are threads), not be refused with the same advice.
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    cli.check_devices("cpu:0,cpu:1")
    with pytest.raises(cli.UsageError, match="cpu:2 asks for CPU 2, but this machine has 1 CPU"):
        cli.check_devices("cpu:0,cpu:2")


def _checkpoint_with_stats(path, names, meta):
    model = AlexNet(len(names), "tiny", rng=np.random.default_rng(0))
    stats = DatasetStats(
        mean=np.full((3, 32, 32), 120.0), pca_eigvals=np.ones(3), pca_eigvecs=np.eye(3)
    )
    save_checkpoint(path, model, stats=stats, meta={"class_names": names, **meta})
    return str(path)


def test_predict_says_an_empty_file_is_empty_and_what_a_shapes_model_knows(tmp_path, capsys):
    names = ["disk", "ring", "square"]
    ckpt = _checkpoint_with_stats(
        tmp_path / "c.npz", names, {"data": "synthetic", "dataset": {"kind": "synthetic"}}
    )
    (tmp_path / "empty.jpg").write_bytes(b"")
    photo = tmp_path / "p.png"
    Image.new("RGB", (50, 40), (200, 10, 30)).save(photo)
    assert (
        predict.main(["-c", ckpt, str(tmp_path / "empty.jpg"), str(photo), "--backend", "numpy"])
        == 2
    )
    out, err = capsys.readouterr()
    assert f"cannot read the image {tmp_path / 'empty.jpg'} (the file is empty" in err
    assert "knows only these 3 classes: disk, ring, square" in out
    other = _checkpoint_with_stats(
        tmp_path / "o.npz", ["a", "b"], {"dataset": {"kind": "folder", "data_dir": str(tmp_path)}}
    )
    assert predict.main(["-c", other, str(photo), "--backend", "numpy"]) == 0
    assert "knows only" not in capsys.readouterr().out


# -- item 10: cheap checks first, no empty folder left behind ----------------------------------


def test_bad_inputs_are_reported_before_any_data_is_built(cli_data, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    assert main(["--epochs", "1", "-b", "8", "--output", str(run)]) == 0
    last = str(run / "checkpoint_last.npz")
    capsys.readouterr()

    def refuse(*args, **kwargs):
        raise AssertionError("the data was built before the inputs were checked")

    monkeypatch.setattr(train, "open_datasets", refuse)
    assert "has already trained 1 epochs" in _usage_error(
        ["--resume", last, "--epochs", "1"], capsys
    )
    assert "already holds a run" in _usage_error(["--output", str(run)], capsys)
    save_checkpoint(tmp_path / "weights.npz", AlexNet(3, "mini"), meta={"epoch": 1})
    assert "not a training checkpoint" in _usage_error(
        ["--resume", str(tmp_path / "weights.npz"), "--epochs", "3"], capsys
    )
    assert "unknown device kind" in _usage_error(["--devices", "cpu:0,tpu:1"], capsys)
    holder = _start_holder(run)
    try:
        assert "another training run" in _usage_error(["--resume", last, "--epochs", "2"], capsys)
    finally:
        holder.kill()
        holder.wait(timeout=30)


def test_a_run_that_fails_before_writing_leaves_no_folder(
    mini_data, tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(
        train,
        "open_datasets",
        lambda args, image_size, val_only=False: (*mini_data, None, "synthetic"),
    )
    target = tmp_path / "new" / "run"
    assert "batch size 1000 is larger" in _usage_error(
        ["--output", str(target), "-b", "1000"], capsys
    )
    assert not (tmp_path / "new").exists()

    def no_data(*args, **kwargs):
        raise DataError("the data folder is empty")

    monkeypatch.setattr(train, "open_datasets", no_data)
    target = tmp_path / "new" / "run"
    assert "the data folder is empty" in _usage_error(["--output", str(target)], capsys)
    assert not (tmp_path / "new").exists()
    existing = tmp_path / "mine"
    existing.mkdir()
    _usage_error(["--output", str(existing)], capsys)
    assert existing.is_dir()  # a folder the user made stays


def test_hold_output_is_reentrant_and_leaves_its_lock_file(tmp_path):
    with hold_output(tmp_path / "r") as folder, hold_output(folder):
        (tmp_path / "r" / "x").write_text("1")
    assert (tmp_path / "r" / LOCK_NAME).exists()
    info = json.loads((tmp_path / "r" / LOCK_NAME).read_text())
    assert info["pid"] == os.getpid()
