"""``fit`` on ``TrainConfig(device="cuda")``: the GPU training step gives the CPU's run.

Dropout is switched off (its masks come from a counter-based hash on the GPU and from the
generator on the CPU), so both paths take the same SGD steps and must end with the same
parameters, momentum and history, float32 rounding apart. Without a GPU this runs under the
CUDA simulator in a child process (``cuda_sim.py``), on the "tiny" variant and 8 images.
"""

from __future__ import annotations

import numpy as np
from cuda_sim import cuda_gate, drop_device_tests, run_in_simulator

_gate = cuda_gate("test_under_cuda_simulator")


def test_under_cuda_simulator():
    run_in_simulator(__file__)


def _run(device, tmp_path):
    from minialexnet.data.synthetic import make_synthetic
    from minialexnet.model import AlexNet
    from minialexnet.training import TrainConfig, fit
    from minialexnet.training.checkpoint import load_checkpoint

    train_set = make_synthetic("train", num_classes=2, n_per_class=3, image_size=33, seed=5)
    val_set = make_synthetic("val", num_classes=2, n_per_class=1, image_size=33, seed=5)
    rng = np.random.default_rng(3)
    model = AlexNet(2, "tiny", rng=rng, dropout=0.0)
    initial = model.state_dict()
    history = fit(
        model,
        train_set,
        val_set,
        TrainConfig(epochs=1, batch_size=3, lr=0.01, device=device),
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


drop_device_tests(globals(), keep=("test_under_cuda_simulator",))
