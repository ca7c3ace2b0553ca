"""The trainer drives any engine through the protocol of ``minialexnet.engine`` only.

A fake engine that never touches the network's layers stands in for the hardware: if the
epoch loop called the model, the loss or the optimizer itself (a CPU branch), or skipped the
copy to the host before evaluating and saving, these tests would see it.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import (
    NaNBatchEngine,
    check_submitted_steps_and_sticky_divergence,
    engine_members,
    healthy_alexnet,
    replica,
    train_steps,
)

from minialexnet.data.synthetic import make_synthetic
from minialexnet.engine import CPUEngine, FinishedStep, StepResult
from minialexnet.model import AlexNet
from minialexnet.optim import SGD
from minialexnet.parallel import TwoTowerAlexNet
from minialexnet.training import TrainConfig, TrainingDiverged, fit, make_engine, trainer
from minialexnet.training.checkpoint import load_checkpoint


@pytest.fixture(scope="module")
def tiny_data():
    """3 classes of 35x35 images: 12 training images (3 batches of 4), 6 validation."""
    return (
        make_synthetic("train", num_classes=3, n_per_class=4, image_size=35, seed=8),
        make_synthetic("val", num_classes=3, n_per_class=2, image_size=35, seed=8),
    )


class FakeEngine:
    """The engine protocol with made-up numbers: loss 2, 1.9, 1.8, ... per step; logits
    that always predict class 0. Records every call in ``events``."""

    def __init__(self, model, optimizer) -> None:
        self.model, self.optimizer = model, optimizer
        self.input_size, self.num_classes = model.input_size, model.num_classes
        self.events: list[str] = []
        self.steps = 0

    def train_step(self, x, labels) -> StepResult:
        assert x.shape == (len(labels), 3, self.input_size, self.input_size)
        self.events.append("step")
        self.steps += 1
        return StepResult(2.0 - 0.1 * (self.steps - 1), 1, 1, len(labels), True)

    def submit_step(self, x, labels) -> FinishedStep:
        return FinishedStep(self.train_step(x, labels))

    def forward(self, x, train=False):
        assert not train
        self.events.append("forward")
        logits = np.zeros((len(x), self.num_classes), dtype=np.float32)
        logits[:, 0] = 1.0
        return logits

    def sync_to_host(self) -> None:
        self.events.append("sync")

    def load_from_host(self) -> None:
        self.events.append("load")

    def close(self) -> None:
        self.events.append("close")

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class UntouchableAlexNet(AlexNet):
    """An AlexNet whose forward and backward must not run: the engine does the work."""

    def forward(self, x, train=False):
        raise AssertionError("the trainer called the model instead of the engine")

    def backward(self, dlogits):
        raise AssertionError("the trainer called the model instead of the engine")


def test_fit_drives_the_engine_through_the_protocol(tiny_data, tmp_path, monkeypatch):
    engines = []

    def fake_make_engine(model, optimizer, config, context):
        engines.append(FakeEngine(model, optimizer))
        return engines[-1]

    monkeypatch.setattr(trainer, "make_engine", fake_make_engine)
    model = UntouchableAlexNet(3, "tiny", rng=np.random.default_rng(0))
    history = fit(
        model,
        *tiny_data,
        TrainConfig(epochs=2, batch_size=4, schedule=None),
        output=tmp_path,
        log=lambda _line: None,
    )
    (engine,) = engines
    one_epoch = ["step"] * 3 + ["sync"] + ["forward"] * 2  # batches of 4: 12 + 6 images
    assert engine.events == one_epoch * 2 + ["sync", "close"]
    assert [h["train_loss"] for h in history] == pytest.approx([1.9, 1.6])
    assert [h["train_top1_err"] for h in history] == pytest.approx([0.75, 0.75])
    val_labels = tiny_data[1].labels
    assert history[0]["val_top1_err"] == pytest.approx(np.mean(val_labels != 0))
    assert load_checkpoint(tmp_path / "checkpoint_last.npz").meta["epoch"] == 2


class LateReadEngine(FakeEngine):
    """Records when each step is submitted and when its result is read."""

    def submit_step(self, x, labels):
        step, k = self.train_step(x, labels), self.steps
        self.events[-1] = f"submit {k}"
        events = self.events

        class Pending:
            def result(self) -> StepResult:
                events.append(f"read {k}")
                return step

        return Pending()


def test_fit_reads_each_step_one_step_late(tiny_data, monkeypatch):
    """Batch i is submitted before batch i-1's result is read; the last one at the end of
    the epoch. The sums and the progress lines are those of the results as they arrive."""
    engines = []
    monkeypatch.setattr(
        trainer,
        "make_engine",
        lambda model, optimizer, config, context: (
            engines.append(LateReadEngine(model, optimizer)) or engines[-1]
        ),
    )
    lines = []
    history = fit(
        UntouchableAlexNet(3, "tiny", rng=np.random.default_rng(0)),
        *tiny_data,
        TrainConfig(epochs=1, batch_size=4, schedule=None, print_freq=1),
        log=lines.append,
    )
    steps = [event for event in engines[0].events if event.split()[0] in ("submit", "read")]
    assert steps == ["submit 1", "submit 2", "read 1", "submit 3", "read 2", "read 3"]
    assert history[0]["train_loss"] == pytest.approx(1.9)
    progress = [line for line in lines if line.startswith("epoch 1/1 [")]
    assert [line.split("loss ")[1][:6] for line in progress] == ["2.0000", "1.9000", "1.8000"]


def test_a_nan_batch_stops_the_run_naming_it_and_the_batch_after_it_changes_nothing(
    tiny_data, tmp_path, monkeypatch
):
    """The loss is read one step late, so batch 5 is already submitted when batch 4's NaN
    is seen: the run still names batch 4 (epoch 2, batch 1), and neither batch changed the
    parameters or the momentum: they are the last checkpoint's (epoch 1)."""
    wrapped = []
    make = trainer.make_engine

    def nan_at_batch_4(model, optimizer, config, context):
        wrapped.append(NaNBatchEngine(make(model, optimizer, config, context), bad=4))
        return wrapped[-1]

    monkeypatch.setattr(trainer, "make_engine", nan_at_batch_4)
    with pytest.raises(TrainingDiverged, match=r"loss became nan at epoch 2, batch 1/3 "):
        fit(
            AlexNet(3, "tiny", rng=np.random.default_rng(4)),
            *tiny_data,
            TrainConfig(epochs=2, batch_size=4, lr=0.01, schedule=None),
            output=tmp_path,
            log=lambda _line: None,
        )
    (engine,) = wrapped
    assert len(engine.before) == 5  # batch 5 was submitted before batch 4's loss was read
    moved = [k for k, v in engine.before[3].items() if not np.array_equal(v, engine.before[0][k])]
    assert len(moved) == len(engine.before[0])  # batches 1-3 did update everything
    now = replica(engine)
    checkpoint = load_checkpoint(tmp_path / "checkpoint_last.npz")
    assert checkpoint.meta["epoch"] == 1
    for key, value in engine.before[3].items():
        np.testing.assert_array_equal(now[key], value, err_msg=key)
        kind, name = key.split()
        saved = checkpoint.params[name] if kind == "param" else checkpoint.optim[name]
        np.testing.assert_array_equal(saved, value, err_msg=key)


def test_fit_resumes_into_the_engine_and_loads_it(tiny_data, tmp_path, monkeypatch):
    """After restoring a checkpoint on the host, the engine is told to load it."""
    rng = np.random.default_rng(1)
    fit(
        AlexNet(3, "tiny", rng=rng),
        *tiny_data,
        TrainConfig(epochs=1, batch_size=4),
        rng=rng,
        output=tmp_path,
        log=lambda _line: None,
    )
    engines = []
    monkeypatch.setattr(
        trainer,
        "make_engine",
        lambda model, optimizer, config, context: (
            engines.append(FakeEngine(model, optimizer)) or engines[-1]
        ),
    )
    history = fit(
        UntouchableAlexNet(3, "tiny"),
        *tiny_data,
        TrainConfig(epochs=2, batch_size=4),
        resume=tmp_path / "checkpoint_last.npz",
        log=lambda _line: None,
    )
    assert engines[0].events[0] == "load" and engines[0].events.count("step") == 3
    assert [h["epoch"] for h in history] == [1, 2]


def _host_engine(kind: str, seed: int):
    from minialexnet.distributed import SingleProcess
    from minialexnet.distributed.data_parallel import DataParallelEngine

    model = healthy_alexnet("tiny", 3, seed)
    optimizer = SGD(model, lr=0.01, momentum=0.9)
    if kind == "towers":
        return make_engine(model, optimizer, TrainConfig(devices="cpu:0,cpu:1"))
    engine = CPUEngine(model, optimizer)
    return DataParallelEngine(engine, SingleProcess()) if kind == "data parallel" else engine


@pytest.mark.parametrize("kind", ["cpu", "towers", "data parallel"])
def test_every_host_engine_answers_the_protocol_and_submits_steps(kind):
    """Submitted steps are train_steps (run at once); a NaN batch stops the updates of every
    later submitted step until load_from_host (minialexnet.engine: submit_step)."""
    sync, late = _host_engine(kind, seed=5), _host_engine(kind, seed=5)
    missing = [name for name in engine_members() if not hasattr(late, name)]
    assert not missing, f"{kind} lacks {missing} of the engine protocol"
    rng = np.random.default_rng(6)
    batches = [
        (rng.standard_normal((2, 3, 31, 31)).astype(np.float32) * 30, np.array([k, 2 - k]))
        for k in range(2)
    ]
    with sync, late:
        check_submitted_steps_and_sticky_divergence(late, batches, *train_steps(sync, batches))


def test_make_engine_chooses_the_hardware_from_the_config():
    model = AlexNet(3, "tiny", rng=np.random.default_rng(2))
    optimizer = SGD(model, lr=0.02, momentum=0.8, weight_decay=0.001)
    for name, _, _ in model.named_parameters():
        optimizer.velocity[name][...] = np.random.default_rng(3).standard_normal(
            optimizer.velocity[name].shape
        )
    one = make_engine(model, optimizer, TrainConfig())
    assert isinstance(one, CPUEngine) and one.model is model and one.optimizer is optimizer
    with make_engine(
        model, optimizer, TrainConfig(devices="cpu:0,cpu:1", tower_mode="sequential")
    ) as split:
        assert isinstance(split, CPUEngine) and isinstance(split.model, TwoTowerAlexNet)
        assert split.model.mode == "sequential"
        state = split.optimizer.state_dict()
        assert (state["lr"], state["momentum"], state["weight_decay"]) == (0.02, 0.8, 0.001)
        merged = split.model.merge(state["velocity"])
        for name, v in optimizer.velocity.items():
            np.testing.assert_array_equal(merged[name], v, err_msg=name)
    with pytest.raises(ValueError, match="2 devices|exactly 2"):
        make_engine(model, optimizer, TrainConfig(devices="cpu:0"))


class ConfidentlyWrongEngine(FakeEngine):
    """Losses of 30, far above chance (ln 3 = 1.1): the paper's biases of 1 did this."""

    def train_step(self, x, labels) -> StepResult:
        self.steps += 1
        return StepResult(30.0, 0, 0, len(labels), True)


@pytest.mark.parametrize("engine_class, warnings", [(ConfidentlyWrongEngine, 1), (FakeEngine, 0)])
def test_fit_warns_once_in_the_first_progress_lines_when_the_loss_is_far_above_chance(
    tiny_data, monkeypatch, engine_class, warnings
):
    monkeypatch.setattr(
        trainer,
        "make_engine",
        lambda model, optimizer, config, context: engine_class(model, optimizer),
    )
    lines = []
    fit(
        UntouchableAlexNet(3, "tiny", rng=np.random.default_rng(0)),
        *tiny_data,
        TrainConfig(epochs=2, batch_size=4, schedule=None, print_freq=1),
        log=lines.append,
    )
    said = [line for line in lines if line.startswith("warning:")]
    assert len(said) == warnings
    if warnings:
        assert "far above chance" in said[0] and "--init bvlc" in said[0]
        assert lines.index(said[0]) == 1  # right after the first progress line
