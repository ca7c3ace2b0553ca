"""Training: bit-identical resume, divergence and Ctrl-C handling, outputs, and CLI errors."""

import os
import subprocess
import sys

import numpy as np
import pytest

from minialexnet import train
from minialexnet.data.synthetic import make_synthetic
from minialexnet.model import AlexNet
from minialexnet.train import main
from minialexnet.training import TrainConfig, TrainingDiverged, fit, runlog
from minialexnet.training import checkpoint as ckpt_mod
from minialexnet.training.checkpoint import load_checkpoint, save_checkpoint


@pytest.fixture(scope="module")
def tiny_data():
    """3 classes of 35x35 images for the "tiny" variant (31x31 crops)."""
    return (
        make_synthetic("train", num_classes=3, n_per_class=8, image_size=35, seed=1),
        make_synthetic("val", num_classes=3, n_per_class=4, image_size=35, seed=1),
    )


def _quiet(_line):
    pass


def _tiny_fit(data, epochs, seed=7, **kwargs):
    rng = np.random.default_rng(seed)
    model = AlexNet(3, "tiny", rng=rng)
    history = fit(
        model,
        *data,
        TrainConfig(epochs=epochs, batch_size=8, lr=0.003),
        rng=rng,
        log=_quiet,
        **kwargs,
    )
    return model, history


def _params(model):
    return {name: p.copy() for name, p, _ in model.named_parameters()}


def _assert_same_checkpoints(a, b):
    ca, cb = load_checkpoint(a), load_checkpoint(b)
    assert ca.params.keys() == cb.params.keys() and ca.optim.keys() == cb.optim.keys()
    for name in ca.params:
        np.testing.assert_array_equal(ca.params[name], cb.params[name], err_msg=name)
        np.testing.assert_array_equal(ca.optim[name], cb.optim[name], err_msg=name)
    for key in ("epoch", "lr", "schedule", "rng", "best_top1"):
        assert ca.meta[key] == cb.meta[key], key
    strip = [
        {k: v for k, v in h.items() if k not in ("epoch_seconds", "images_per_second")}
        for h in ca.meta["history"]
    ]
    assert strip == [
        {k: v for k, v in h.items() if k not in ("epoch_seconds", "images_per_second")}
        for h in cb.meta["history"]
    ]


def test_resume_is_bit_identical_to_an_uninterrupted_run(tiny_data, tmp_path):
    straight, _ = _tiny_fit(tiny_data, epochs=2, output=tmp_path / "straight")
    _tiny_fit(tiny_data, epochs=1, output=tmp_path / "split")
    # A new process would build the model from a different generator state: use another seed.
    resumed, history = _tiny_fit(
        tiny_data,
        epochs=2,
        seed=999,
        output=tmp_path / "split",
        resume=tmp_path / "split" / "checkpoint_last.npz",
    )
    assert [h["epoch"] for h in history] == [1, 2]
    for name, p in _params(straight).items():
        np.testing.assert_array_equal(p, _params(resumed)[name], err_msg=name)
    _assert_same_checkpoints(
        tmp_path / "straight" / "checkpoint_last.npz", tmp_path / "split" / "checkpoint_last.npz"
    )


def test_cli_resume_is_bit_identical(cli_data, tmp_path, capsys):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    assert main(["--epochs", "2", "-b", "8", "--output", a, "--seed", "3"]) == 0
    assert main(["--epochs", "1", "-b", "8", "--output", b, "--seed", "3"]) == 0
    # Resuming takes arch, batch size and optimizer state from the checkpoint.
    assert main(["--resume", os.path.join(b, "checkpoint_last.npz"), "--epochs", "2"]) == 0
    _assert_same_checkpoints(
        os.path.join(a, "checkpoint_last.npz"), os.path.join(b, "checkpoint_last.npz")
    )
    out = capsys.readouterr().out
    assert "epoch 2/2" in out and "val top-1 err" in out and "img/s" in out and "ETA" in out


class DivergingAlexNet(AlexNet):
    """Returns NaN logits from the ``nan_after``-th training forward pass on."""

    nan_after = 4

    def forward(self, x, train=False):
        logits = super().forward(x, train)
        if train:
            self.calls = getattr(self, "calls", 0) + 1
            if self.calls >= self.nan_after:
                logits = logits * np.float32("nan")
        return logits


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tiny_data, tmp_path):
    # 24 images in batches of 8: 3 steps per epoch, so the 4th forward is epoch 2's first.
    rng = np.random.default_rng(7)
    model = DivergingAlexNet(3, "tiny", rng=rng)
    with pytest.raises(
        TrainingDiverged,
        match=r"loss became nan at epoch 2, batch 1/3.*"
        r"last good checkpoint is .*checkpoint_last.npz "
        r"\(epoch 1\).*--lr",
    ):
        fit(
            model,
            *tiny_data,
            TrainConfig(epochs=3, batch_size=8, lr=0.003),
            rng=rng,
            log=_quiet,
            output=tmp_path / "run",
        )
    last = load_checkpoint(tmp_path / "run" / "checkpoint_last.npz")
    assert last.meta["epoch"] == 1
    one_epoch, _ = _tiny_fit(tiny_data, epochs=1)
    for name, p in _params(one_epoch).items():
        np.testing.assert_array_equal(last.params[name], p, err_msg=name)


def test_cli_reports_divergence_without_traceback(cli_data, tmp_path, monkeypatch, capsys):
    def diverge(*args, **kwargs):
        raise TrainingDiverged("the loss became nan at epoch 1, batch 2/3")

    monkeypatch.setattr(train, "fit", diverge)
    assert main(["--output", str(tmp_path / "run"), "-b", "8"]) == 1
    assert "minialexnet-train: the loss became nan" in capsys.readouterr().err


def test_ctrl_c_while_saving_leaves_the_previous_checkpoint(
    cli_data, tmp_path, monkeypatch, capsys
):
    real_savez = np.savez
    calls = []

    def savez(f, **arrays):
        calls.append(1)
        if len(calls) == 3:  # epoch 1 wrote last + best; the 3rd write is epoch 2's
            f.write(b"PK\x03\x04 partial")
            raise KeyboardInterrupt
        real_savez(f, **arrays)

    monkeypatch.setattr(ckpt_mod.np, "savez", savez)
    run = tmp_path / "run"
    assert main(["--epochs", "3", "-b", "8", "--output", str(run)]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert load_checkpoint(run / "checkpoint_last.npz").meta["epoch"] == 1
    assert not [name for name in os.listdir(run) if name.endswith(".tmp")]


def test_smoke_run_loss_falls_and_outputs_are_written(mini_data, tmp_path):
    rng = np.random.default_rng(0)
    # No dropout and small batches: on 24 images the loss then falls within a few seconds.
    model = AlexNet(3, "mini", rng=rng, dropout=0.0)
    lines = []
    history = fit(
        model,
        *mini_data,
        TrainConfig(epochs=5, batch_size=4, lr=0.001, print_freq=2),
        rng=rng,
        output=tmp_path,
        log=lines.append,
    )
    losses = [h["train_loss"] for h in history]
    assert losses[-1] < 0.9 * losses[0], losses
    assert set(history[0]) == set(runlog.CSV_COLUMNS)
    csv_lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert csv_lines[0] == ",".join(runlog.CSV_COLUMNS) and len(csv_lines) == 6
    assert (tmp_path / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    best = load_checkpoint(tmp_path / "checkpoint_best.npz")
    assert best.meta["best_top1"] == min(h["val_top1_err"] for h in history)
    assert any("[2/6]" in line and "img/s" in line and "ETA" in line for line in lines)


def test_evaluate_flag_reports_center_and_ten_crop_errors(cli_data, tmp_path, capsys):
    run = str(tmp_path / "run")
    assert main(["--epochs", "1", "-b", "8", "--output", run]) == 0
    capsys.readouterr()
    assert main(["--resume", os.path.join(run, "checkpoint_last.npz"), "--evaluate"]) == 0
    out = capsys.readouterr().out
    assert "center crop: top-1 error" in out and "ten crops: top-1 error" in out


def test_fit_rejects_mismatched_data(tiny_data):
    model = AlexNet(5, "tiny")
    with pytest.raises(ValueError, match="3 classes, the model 5"):
        fit(model, *tiny_data, TrainConfig(epochs=1), log=_quiet)
    with pytest.raises(ValueError, match="batch size 25 is larger than the training set"):
        fit(AlexNet(3, "tiny"), *tiny_data, TrainConfig(epochs=1, batch_size=25), log=_quiet)
    with pytest.raises(ValueError, match="smaller than the 59x59 crops"):
        fit(AlexNet(3, "mini"), *tiny_data, TrainConfig(epochs=1), log=_quiet)


def _usage_error(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--arch", "vgg"], "argument --arch: invalid choice: 'vgg'"),
        (["--epochs", "0"], "argument --epochs: must be a positive integer, got 0"),
        (["-b", "-4"], "argument -b/--batch-size: must be a positive integer"),
        (["--lr", "0"], "argument --lr: must be a finite number > 0"),
        (["--lr", "nan"], "argument --lr: must be a finite number > 0"),
        (["--wd", "-1"], "argument --wd/--weight-decay: must be a finite number >= 0"),
        (["--workers", "two"], "argument --workers: expected an integer >= 0"),
        (["--evaluate"], "--evaluate needs a checkpoint"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(argv, message, capsys):
    assert message in _usage_error(argv, capsys)


def test_cuda_backend_without_a_gpu_is_a_usage_error(capsys):
    from minialexnet.kernels.cuda import is_available

    if is_available():
        pytest.skip("a GPU (or the CUDA simulator) is available here")
    assert "--backend cuda needs an NVIDIA GPU" in _usage_error(["--backend", "cuda"], capsys)


def test_bad_inputs_found_after_parsing_exit_2(cli_data, tmp_path, capsys):
    assert "batch size 1000 is larger than the training set (24 images)" in _usage_error(
        ["-b", "1000", "--output", str(tmp_path / "r")], capsys
    )

    a_file = tmp_path / "file"
    a_file.write_text("not a folder")
    assert "cannot write to the output folder" in _usage_error(
        ["--output", str(a_file / "run")], capsys
    )

    assert "does not exist" in _usage_error(["--resume", str(tmp_path / "none.npz")], capsys)
    (tmp_path / "corrupt.npz").write_bytes(b"garbage" * 100)
    assert "corrupt" in _usage_error(["--resume", str(tmp_path / "corrupt.npz")], capsys)

    mini = tmp_path / "mini.npz"
    save_checkpoint(mini, AlexNet(3, "mini"), meta={"epoch": 1})
    assert "holds a 'mini' AlexNet, not 'paper'" in _usage_error(
        ["--resume", str(mini), "--arch", "paper"], capsys
    )
    tiny = tmp_path / "tiny.npz"
    save_checkpoint(tiny, AlexNet(3, "tiny"))
    assert "variant 'tiny' that the command line does not train" in _usage_error(
        ["--resume", str(tiny)], capsys
    )
    assert "not a training checkpoint" in _usage_error(
        ["--resume", str(mini), "--epochs", "3", "-b", "8", "--output", str(tmp_path / "m")],
        capsys,
    )

    run = str(tmp_path / "run")
    assert main(["--epochs", "1", "-b", "8", "--output", run]) == 0
    assert "already holds a run" in _usage_error(["--output", run], capsys)
    assert "has already trained 1 epochs" in _usage_error(
        ["--resume", os.path.join(run, "checkpoint_last.npz"), "--epochs", "1"], capsys
    )


def test_subset_without_imagenet_is_a_clear_error(tmp_path, monkeypatch, capsys):
    for var in ("MINIALEXNET_DATA", "IMAGENET_ROOT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    if any(os.path.isdir(p) for p in ("/data/imagenet", "/datasets/imagenet")):
        pytest.skip("this machine has ImageNet")
    err = _usage_error(["--subset", "imagenet-100", "--output", str(tmp_path / "r")], capsys)
    assert "ImageNet" in err and "Traceback" not in err


def test_real_process_errors_have_no_traceback(tmp_path):
    (tmp_path / "corrupt.npz").write_bytes(b"garbage")
    for argv in (["--epochs", "0"], ["--resume", str(tmp_path / "corrupt.npz")]):
        proc = subprocess.run(
            [sys.executable, "-m", "minialexnet.train", *argv],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 2, proc.stderr
        assert "minialexnet-train: error:" in proc.stderr
        assert "Traceback" not in proc.stderr


def test_resume_restores_a_data_generator_separate_from_the_model_s(tiny_data, tmp_path):
    """fit(rng=data_rng) with AlexNet(rng=model_rng): resuming must put back both generators
    (the data choices and the dropout masks); fresh generators of other seeds stand in for a
    new process."""

    def run(epochs, output, seeds, resume=None):
        data_rng, model_rng = (np.random.default_rng(seed) for seed in seeds)
        model = AlexNet(3, "tiny", rng=model_rng)
        fit(
            model,
            *tiny_data,
            TrainConfig(epochs=epochs, batch_size=8, lr=0.003),
            rng=data_rng,
            output=output,
            resume=resume,
            log=_quiet,
        )
        return model

    straight = run(3, tmp_path / "straight", (11, 22))
    run(1, tmp_path / "split", (11, 22))
    resumed = run(
        3, tmp_path / "split", (33, 44), resume=tmp_path / "split" / "checkpoint_last.npz"
    )
    for name, p in _params(straight).items():
        np.testing.assert_array_equal(p, _params(resumed)[name], err_msg=name)
    _assert_same_checkpoints(
        tmp_path / "straight" / "checkpoint_last.npz", tmp_path / "split" / "checkpoint_last.npz"
    )


def test_init_option_reaches_the_network_and_resume_keeps_the_checkpoint_s(cli_data, tmp_path):
    """--init bvlc builds BVLC's biases (0.1 where the table says 1); mini defaults to the
    paper's; a resumed run keeps the initialisation recorded in its checkpoint."""
    from minialexnet.model import BVLC_BIAS

    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    assert main(["--epochs", "1", "-b", "8", "--output", a, "--init", "bvlc", "--lr", "1e-9"]) == 0
    assert main(["--epochs", "1", "-b", "8", "--output", b]) == 0
    bvlc, paper = (load_checkpoint(os.path.join(d, "checkpoint_last.npz")) for d in (a, b))
    assert bvlc.meta["model"]["init"] == "bvlc" and paper.meta["model"]["init"] == "paper"
    one_biases = [
        name
        for name, v in paper.params.items()
        if name.endswith(".b") and np.allclose(v, 1.0, atol=1e-3)
    ]
    assert one_biases
    for name in one_biases:  # lr 1e-9: still the initial values
        np.testing.assert_allclose(bvlc.params[name], BVLC_BIAS, atol=1e-3)
    assert main(["--resume", os.path.join(a, "checkpoint_last.npz"), "--epochs", "2"]) == 0
    assert load_checkpoint(os.path.join(a, "checkpoint_last.npz")).meta["model"]["init"] == "bvlc"
