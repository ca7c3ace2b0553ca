"""The helpers the notebooks import from ``minialexnet.notebook``: the machine report, the
epoch-line filter for ``fit``'s log, the training loop of notebooks 06/07, the binomial
standard error and the GPU name."""

import math
import os
import re
import sys
from importlib.metadata import version

import numpy as np
import pytest
from helpers import run_python

import minialexnet
from minialexnet import notebook, use_backend
from minialexnet.data.augment import center_crop
from minialexnet.data.dataset import compute_stats
from minialexnet.data.synthetic import make_synthetic
from minialexnet.metrics import evaluate
from minialexnet.model import AlexNet
from minialexnet.training import TrainConfig, fit


@pytest.fixture(scope="module")
def tiny_data():
    """3 classes of 35x35 images for the "tiny" variant (31x31 crops), and their stats."""
    train_set = make_synthetic("train", num_classes=3, n_per_class=5, image_size=35, seed=3)
    val_set = make_synthetic("val", num_classes=3, n_per_class=3, image_size=35, seed=3)
    return train_set, val_set, compute_stats(train_set)


# ---- machine report -------------------------------------------------------------------------


def test_machine_info_reports_this_process():
    info = notebook.machine_info()
    assert info["numpy"] == np.__version__
    assert info["python"] == ".".join(map(str, sys.version_info[:3]))
    assert info["minialexnet"] == minialexnet.__version__
    assert 1 <= info["usable_cores"] <= os.cpu_count()
    assert info["cpu"] and info["blas"]
    with use_backend("numpy"):
        assert notebook.machine_info()["backend"] == "numpy"
    with use_backend("numba"):
        assert notebook.machine_info()["backend"] == "numba"


@pytest.mark.skipif(not os.path.isfile("/proc/cpuinfo"), reason="Linux /proc/cpuinfo only")
def test_cpu_model_is_the_model_name_of_proc_cpuinfo():
    with open("/proc/cpuinfo") as f:
        names = [
            line.split(":", 1)[1].strip()
            for line in f
            if line.split(":", 1)[0].strip() in ("model name", "Model", "Hardware")
        ]
    if not names:
        pytest.skip("this /proc/cpuinfo names no model")
    assert notebook.cpu_model() == names[0]


def test_blas_name_names_numpys_blas():
    blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    assert notebook.blas_name().startswith(blas["name"])


def test_machine_report_prints_the_facts(capsys):
    assert notebook.machine_report() is None  # nothing for a notebook cell to echo
    out = capsys.readouterr().out
    info = notebook.machine_info()
    assert f"NumPy {np.__version__}" in out
    assert f"{info['usable_cores']} usable cores" in out
    assert info["cpu"] in out and info["blas"] in out
    assert f"CPU kernels: {minialexnet.get_backend()!r}" in out
    assert "GPU" not in out and "numba-cuda" not in out


def test_machine_report_with_gpu_adds_numba_cuda_and_a_gpu_line(capsys):
    notebook.machine_report(gpu=True)
    lines = capsys.readouterr().out.splitlines()
    assert f"numba   : numba-cuda {version('numba-cuda')}" in lines
    assert sum(line.startswith("GPU     : ") for line in lines) == 1


def test_gpu_name_and_report_under_the_cuda_simulator():
    out = run_python(
        "from minialexnet import notebook\n"
        "print(notebook.gpu_name(0))\n"
        "notebook.machine_report(gpu=True)\n",
        set_env={"NUMBA_ENABLE_CUDASIM": "1"},
    )
    lines = out.splitlines()
    assert lines[0] == "CUDA simulator"
    assert any(line.startswith("GPU     : none") and "SIMULATOR" in line for line in lines)


# ---- fit's log, one line per epoch ----------------------------------------------------------


def test_print_epoch_line_keeps_exactly_fits_epoch_lines(tiny_data, capsys):
    train_set, val_set, stats = tiny_data
    lines = []
    net = AlexNet(3, "tiny", rng=np.random.default_rng(0))
    config = TrainConfig(epochs=2, batch_size=4, lr=0.001, schedule=None, print_freq=1)
    fit(
        net,
        train_set,
        val_set,
        config,
        stats=stats,
        rng=np.random.default_rng(1),
        log=lines.append,
    )
    assert len(lines) > 2  # progress lines within the epochs too
    capsys.readouterr()
    for line in lines:
        notebook.print_epoch_line(line)
    printed = capsys.readouterr().out.splitlines()
    # fit closes an epoch with "epoch 1/2: ..."; its progress lines read "epoch 1/2 [1/4] ..."
    assert [p.strip() for p in printed] == [
        line for line in lines if re.match(r"epoch \d+/\d+:", line)
    ]
    assert [p.split(":")[0].strip() for p in printed] == ["epoch 1/2", "epoch 2/2"]
    assert all(p.startswith("    ") for p in printed)


# ---- binomial standard error ----------------------------------------------------------------


@pytest.mark.parametrize(
    "error, n, expected",
    [
        (0.1, 100, 0.03),  # sqrt(0.1 * 0.9 / 100) = sqrt(0.0009)
        (0.5, 4, 0.25),  # sqrt(0.25 / 4)
        (0.0, 50, 0.0),
        (1.0, 7, 0.0),
    ],
)
def test_binomial_std_error_by_hand(error, n, expected):
    assert math.isclose(notebook.binomial_std_error(error, n), expected, abs_tol=1e-15)


@pytest.mark.parametrize(
    "error, n, match",
    [(1.5, 10, "error"), (-0.1, 10, "error"), (0.2, 0, "n must"), (0.2, 2.5, "n must")],
)
def test_binomial_std_error_rejects_bad_input(error, n, match):
    with pytest.raises(ValueError, match=match):
        notebook.binomial_std_error(error, n)


# ---- the training loop of notebooks 06 and 07 -----------------------------------------------


def test_train_epochs_batches_history_and_errors(tiny_data, capsys):
    train_set, val_set, stats = tiny_data
    net = AlexNet(3, "tiny", rng=np.random.default_rng(0), dropout=0.0)
    before = {name: p.copy() for name, p, _ in net.named_parameters()}
    seen = []

    def centre(images, rng):
        seen.append(images.copy())
        return center_crop(images, 31, stats)

    history = notebook.train_epochs(
        net,
        train_set,
        val_set,
        stats,
        centre,
        epochs=2,
        batch_size=4,
        lr=0.01,
        seed=5,
        label="probe",
    )
    # 15 images in batches of 4: 4, 4, 4, 3 per epoch, each image once per epoch, in the
    # order the seeded generator permutes them.
    assert [len(b) for b in seen] == [4, 4, 4, 3] * 2
    order = np.random.default_rng(5).permutation(len(train_set))
    assert np.array_equal(np.concatenate(seen[:4]), train_set.images[order])
    assert [h["epoch"] for h in history] == [1, 2]
    assert all(np.isfinite(h["loss"]) for h in history)
    # The last record is this network's error now, measured on centre crops.
    assert history[-1]["val_err"] == evaluate(net, val_set, stats, batch_size=4)[0]
    assert history[-1]["train_err"] == evaluate(net, train_set, stats, batch_size=4)[0]
    assert any(not np.array_equal(before[name], p) for name, p, _ in net.named_parameters())
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and out[0].startswith("  probe epoch  1: loss ")


def test_train_epochs_is_reproducible(tiny_data):
    train_set, val_set, stats = tiny_data

    def run():
        net = AlexNet(3, "tiny", rng=np.random.default_rng(0))
        history = notebook.train_epochs(
            net,
            train_set,
            val_set,
            stats,
            lambda images, rng: center_crop(images, 31, stats),
            epochs=1,
            batch_size=5,
            lr=0.01,
            seed=2,
        )
        return history, [p.copy() for _, p, _ in net.named_parameters()]

    (h1, p1), (h2, p2) = run(), run()
    assert h1 == h2
    assert all(np.array_equal(a, b) for a, b in zip(p1, p2))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"epochs": 0}, ValueError, "epochs must"),
        ({"batch_size": -1}, ValueError, "batch_size must"),
        ({"lr": 0.0}, ValueError, "lr must"),
        ({"make_batch": "centre"}, TypeError, "make_batch must be a function"),
    ],
)
def test_train_epochs_rejects_bad_arguments(tiny_data, kwargs, error, match):
    train_set, val_set, stats = tiny_data
    args = {
        "make_batch": lambda images, rng: center_crop(images, 31, stats),
        "epochs": 1,
        "batch_size": 4,
        "lr": 0.01,
        **kwargs,
    }
    net = AlexNet(3, "tiny", rng=np.random.default_rng(0))
    with pytest.raises(error, match=match):
        notebook.train_epochs(net, train_set, val_set, stats, args.pop("make_batch"), **args)
