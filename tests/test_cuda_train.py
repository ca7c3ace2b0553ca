"""``fit`` on ``TrainConfig(device="cuda")``: the GPU training step gives the CPU's run.

Dropout is switched off (its masks come from a counter-based hash on the GPU and from the
generator on the CPU), so both paths take the same SGD steps and must end with the same
parameters, momentum and history, float32 rounding apart. Without a GPU this runs under the
CUDA simulator in a child process (``cuda_sim.py``), on the "tiny" variant and a few images.
"""

from __future__ import annotations

import numpy as np
import pytest
from cuda_sim import cuda_gate, drop_device_tests, run_in_simulator
from helpers import NaNBatchEngine, replica

_gate = cuda_gate("test_under_cuda_simulator")


def test_under_cuda_simulator():
    run_in_simulator(__file__)


def _run(device, tmp_path):
    from minialexnet.data.synthetic import make_synthetic
    from minialexnet.model import AlexNet
    from minialexnet.training import TrainConfig, fit
    from minialexnet.training.checkpoint import load_checkpoint

    # Two batches of two: the second step uses the first's momentum, and a batch's loss and
    # gradient are means over more than one image; each simulated step costs seconds.
    train_set = make_synthetic("train", num_classes=2, n_per_class=2, image_size=33, seed=5)
    val_set = make_synthetic("val", num_classes=2, n_per_class=1, image_size=33, seed=5)
    rng = np.random.default_rng(3)
    model = AlexNet(2, "tiny", rng=rng, dropout=0.0)
    initial = model.state_dict()
    history = fit(
        model,
        train_set,
        val_set,
        TrainConfig(epochs=1, batch_size=2, lr=0.01, device=device),
        rng=rng,
        log=lambda _line: None,
        output=str(tmp_path / device),
    )
    return initial, history, load_checkpoint(tmp_path / device / "checkpoint_last.npz")


def test_gpu_training_run_equals_the_cpu_run(tmp_path):
    initial, cpu_history, cpu = _run("cpu", tmp_path)
    _, gpu_history, gpu = _run("cuda", tmp_path)
    moved = [name for name in cpu.params if not np.array_equal(cpu.params[name], initial[name])]
    assert len(moved) == len(cpu.params)  # every parameter took a step
    for name in cpu.params:
        np.testing.assert_allclose(
            gpu.params[name], cpu.params[name], rtol=1e-4, atol=1e-6, err_msg=name
        )
        np.testing.assert_allclose(
            gpu.optim[name], cpu.optim[name], rtol=1e-3, atol=1e-6, err_msg=name
        )
    np.testing.assert_allclose(
        gpu_history[0]["train_loss"], cpu_history[0]["train_loss"], rtol=1e-5
    )
    assert gpu_history[0]["val_top1_err"] == cpu_history[0]["val_top1_err"]


def test_a_nan_batch_on_the_gpu_is_named_and_neither_it_nor_the_next_batch_updates(
    tmp_path, monkeypatch
):
    """The trainer reads each loss one step late: batch 3 is on the GPU when batch 2's NaN
    is seen. The run names batch 2, and the GPU's parameters and momentum are those from
    before batch 2 (the sticky divergence flag stopped batch 3's update). Batches of one
    image: the order of the steps is what matters here, and each costs seconds."""
    from minialexnet.data.synthetic import make_synthetic
    from minialexnet.model import AlexNet
    from minialexnet.training import TrainConfig, TrainingDiverged, fit, trainer

    wrapped = []
    make = trainer.make_engine

    def nan_at_batch_2(model, optimizer, config, context):
        wrapped.append(NaNBatchEngine(make(model, optimizer, config, context), bad=2))
        return wrapped[-1]

    monkeypatch.setattr(trainer, "make_engine", nan_at_batch_2)
    train_set = make_synthetic("train", num_classes=3, n_per_class=1, image_size=33, seed=5)
    val_set = make_synthetic("val", num_classes=3, n_per_class=1, image_size=33, seed=5)
    with pytest.raises(TrainingDiverged, match=r"loss became nan at epoch 1, batch 2/3 "):
        fit(
            AlexNet(3, "tiny", rng=np.random.default_rng(3), dropout=0.0),
            train_set,
            val_set,
            TrainConfig(epochs=1, batch_size=1, lr=0.01, device="cuda"),
            log=lambda _line: None,
        )
    (engine,) = wrapped
    assert type(engine.engine).__name__ == "CudaAlexNet"
    assert len(engine.before) == 3  # batch 3 was submitted before batch 2's loss was read
    now = replica(engine)
    assert any(not np.array_equal(now[k], v) for k, v in engine.before[0].items())  # batch 1
    for key, value in engine.before[1].items():
        np.testing.assert_array_equal(now[key], value, err_msg=key)


drop_device_tests(globals(), keep=("test_under_cuda_simulator",))
