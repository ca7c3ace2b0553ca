"""Training the two-tower split (§3.2) through ``fit`` and the command line.

The split model saves checkpoints under the single-device names (``conv1.W``), so a split
run resumes bit-identically, and its checkpoint loads into a plain ``AlexNet`` computing the
same function.
"""

from __future__ import annotations

import numpy as np
import pytest

from minialexnet import train
from minialexnet.data.synthetic import make_synthetic
from minialexnet.model import AlexNet
from minialexnet.parallel import TwoTowerAlexNet
from minialexnet.train import main
from minialexnet.training import TrainConfig, fit
from minialexnet.training.checkpoint import load_checkpoint, model_from_checkpoint


@pytest.fixture(scope="module")
def tiny_data():
    return (
        make_synthetic("train", num_classes=3, n_per_class=8, image_size=35, seed=3),
        make_synthetic("val", num_classes=3, n_per_class=4, image_size=35, seed=3),
    )


def _towers_fit(data, epochs, output, resume=None):
    rng = np.random.default_rng(11)
    model = TwoTowerAlexNet.from_model(AlexNet(3, "tiny", rng=rng), devices="cpu:0,cpu:1")
    history = fit(
        model,
        *data,
        TrainConfig(epochs=epochs, batch_size=8, lr=0.003),
        rng=rng,
        log=lambda _line: None,
        output=str(output),
        resume=resume,
    )
    model.close()
    return history


def test_split_run_resumes_bit_identically(tiny_data, tmp_path):
    _towers_fit(tiny_data, 2, tmp_path / "straight")
    _towers_fit(tiny_data, 1, tmp_path / "split")
    _towers_fit(
        tiny_data, 2, tmp_path / "split", resume=str(tmp_path / "split" / "checkpoint_last.npz")
    )
    a = load_checkpoint(tmp_path / "straight" / "checkpoint_last.npz")
    b = load_checkpoint(tmp_path / "split" / "checkpoint_last.npz")
    assert "conv1.W" in a.params and "conv1.W" in a.optim  # single-device names
    assert a.params.keys() == b.params.keys()
    for name in a.params:
        np.testing.assert_array_equal(a.params[name], b.params[name], err_msg=name)
        np.testing.assert_array_equal(a.optim[name], b.optim[name], err_msg=name)
    assert a.meta["rng"] == b.meta["rng"] and a.meta["epoch"] == b.meta["epoch"] == 2


def test_split_checkpoint_loads_into_a_single_device_model(tiny_data, tmp_path):
    _towers_fit(tiny_data, 1, tmp_path)
    single, ckpt = model_from_checkpoint(tmp_path / "checkpoint_last.npz")
    towers = TwoTowerAlexNet.from_model(single, devices="cpu:0,cpu:1", mode="sequential")
    x = np.random.default_rng(0).standard_normal((2, 3, 31, 31)).astype(np.float32)
    np.testing.assert_allclose(towers.forward(x), single.forward(x), rtol=1e-5, atol=1e-5)
    # momentum is saved for every single-device parameter
    assert set(ckpt.optim) == {name for name, _, _ in single.named_parameters()}


def test_cli_trains_on_two_cpu_threads(monkeypatch, tmp_path):
    data = (
        make_synthetic("train", num_classes=3, n_per_class=8, seed=4),
        make_synthetic("val", num_classes=3, n_per_class=4, seed=4),
    )
    monkeypatch.setattr(
        train, "open_datasets", lambda args, image_size, val_only=False: (*data, None, "synthetic")
    )
    out = tmp_path / "run"
    assert (
        main(
            [
                "--devices",
                "cpu:0,cpu:1",
                "--epochs",
                "1",
                "-b",
                "8",
                "--output",
                str(out),
                "--print-freq",
                "100",
            ]
        )
        == 0
    )
    ckpt = load_checkpoint(out / "checkpoint_last.npz")
    assert ckpt.meta["arch"] == "mini" and "conv3.W" in ckpt.params
    assert ckpt.meta["dataset"] == {"kind": "synthetic"}


def test_cli_rejects_bad_devices(monkeypatch, tmp_path, capsys):
    data = (
        make_synthetic("train", num_classes=3, n_per_class=8, seed=4),
        make_synthetic("val", num_classes=3, n_per_class=4, seed=4),
    )
    monkeypatch.setattr(
        train, "open_datasets", lambda args, image_size, val_only=False: (*data, None, "synthetic")
    )
    with pytest.raises(SystemExit) as exit_info:
        main(["--devices", "cpu:0", "--epochs", "1", "-b", "8", "--output", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "device" in capsys.readouterr().err.lower()
