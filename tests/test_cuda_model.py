"""The device-resident network (``minialexnet.gpu.CudaAlexNet``) against the CPU ``AlexNet``.

A training step on the GPU must produce the same loss, gradients and updated parameters as
the CPU model, float32 rounding apart. The CPU's dropout layers are handed the GPU's masks
(``keep_mask`` with the seed the step draws from ``model.rng``) so that both take the same
step. Without a GPU this runs under the CUDA simulator in a child process (``cuda_sim.py``)
on the "tiny" variant (31x31 inputs, a few channels) with batches of one to three.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest
from cuda_sim import cuda_gate, drop_device_tests, run_in_simulator
from helpers import (
    check_submitted_steps_and_sticky_divergence,
    engine_members,
    healthy_alexnet,
    replica,
    run_python,
    two_train_steps,
)
from helpers import (
    mean_subtracted_images as images,
)

HOST_TESTS = ("test_without_a_gpu_the_network_refuses_clearly",)
_gate = cuda_gate("test_under_cuda_simulator", host_tests=HOST_TESTS)
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")


def test_under_cuda_simulator():
    run_in_simulator(__file__)


def tiny_model(seed: int = 1, **options):
    """The "tiny" AlexNet (6 classes) with every layer alive (``helpers.healthy_alexnet``)."""
    return healthy_alexnet("tiny", 6, seed, **options)


class ReplayCoins:
    """Stands in for a CPU Dropout layer's generator: its ``random`` returns 1.0 where the
    GPU kernel keeps a unit and 0.0 where it drops one, so ``random(...) >= p`` reproduces
    the GPU's mask exactly (for 0 < p <= 1)."""

    def __init__(self, seed: int, sequence: int, p: float) -> None:
        self.seed, self.sequence, self.p = seed, sequence, p

    def random(self, shape):
        from minialexnet.kernels.cuda.dropout import keep_mask

        return keep_mask(self.seed, self.sequence, shape, self.p).astype(np.float64)


def assert_close(got, want, rtol, atol, what=""):
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=what)


@pytest.fixture(scope="module")
def one_step():
    """One SGD step of a tiny AlexNet (with dropout), on the GPU and on the CPU."""
    from minialexnet.gpu import CudaAlexNet
    from minialexnet.layers import Dropout, SoftmaxCrossEntropy
    from minialexnet.optim import SGD

    model = tiny_model()
    reference = copy.deepcopy(model)
    x, labels = images(2), np.array([4, 1])
    gpu = CudaAlexNet(model, SGD(model, lr=0.05), batch_size=2)
    seed = int(copy.deepcopy(model.rng).integers(2**63))  # what train_step will draw
    result = gpu.train_step(x, labels)

    for position, layer in enumerate(reference.layers.values()):
        if isinstance(layer, Dropout):
            layer.rng = ReplayCoins(seed, position, layer.p)
    loss_fn = SoftmaxCrossEntropy()
    logits = reference.forward(x, train=True)
    loss = loss_fn.forward(logits, labels)
    reference.backward(loss_fn.backward())
    gradients = {name: g.copy() for name, _, g in reference.named_parameters()}
    reference_opt = SGD(reference, lr=0.05)
    reference_opt.step()
    return SimpleNamespace(
        gpu=gpu,
        model=model,
        result=result,
        reference=reference,
        reference_opt=reference_opt,
        loss=loss,
        logits=logits,
        labels=labels,
        gradients=gradients,
    )


def test_training_step_loss_and_counts_match_cpu(one_step):
    from minialexnet.metrics import topk_correct

    r = one_step.result
    assert r.updated and r.batch == 2
    assert r.loss == pytest.approx(one_step.loss, rel=1e-5)
    assert r.top1_correct == topk_correct(one_step.logits, one_step.labels, 1).sum()
    assert r.top5_correct == topk_correct(one_step.logits, one_step.labels, 5).sum()


def test_training_step_gradients_match_cpu(one_step):
    got = one_step.gpu.gradients()
    assert list(got) == list(one_step.gradients)  # same names, same order
    for name, want in one_step.gradients.items():
        scale = float(np.abs(want).max())
        assert scale > 0, f"{name}: the reference gradient is zero; the test would be blind"
        assert_close(got[name], want, rtol=1e-4, atol=1e-5 * scale, what=name)


def test_training_step_updates_match_cpu_sgd(one_step):
    """Parameters and momentum after the §5 update; sync_to_host writes both back."""
    params = one_step.gpu.state_dict()
    for name, want, _ in one_step.reference.named_parameters():
        # w + v: the error of a parameter is its step's, i.e. the gradient's float32 rounding
        # (rtol 1e-4, as for the gradients), relative to the size of the step.
        step = float(np.abs(one_step.reference_opt.velocity[name]).max())
        assert_close(params[name], want, rtol=1e-5, atol=1e-4 * step + 1e-7, what=name)
    one_step.gpu.sync_to_host()
    for name, want, _ in one_step.reference.named_parameters():
        np.testing.assert_array_equal(one_step.model.state_dict()[name], params[name])
        want = one_step.reference_opt.velocity[name]
        assert_close(
            one_step.gpu.optimizer.velocity[name],
            want,
            rtol=1e-4,
            atol=1e-5 * float(np.abs(want).max()) + 1e-9,
            what=name,
        )


def test_forward_matches_cpu_in_pieces_larger_than_capacity():
    """Two images through buffers for one: the batch is cut into pieces."""
    from minialexnet.gpu import CudaAlexNet

    model = tiny_model(seed=2)
    x = images(2, seed=3)
    got = CudaAlexNet(model, batch_size=1).forward(x)
    want = model.forward(x, train=False)
    assert got.shape == (2, 6) and got.dtype == np.float32
    assert_close(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))


def test_tanh_variant_without_lrn_and_with_plain_pooling():
    """The ablations of §3.1 (tanh), §3.3 (no LRN) and §3.4 (2x2 pools) build and agree."""
    from minialexnet.gpu import CudaAlexNet

    model = tiny_model(seed=4, activation="tanh", lrn=False, overlapping_pool=False, dropout=0.0)
    x = images(1, seed=5)
    gpu = CudaAlexNet(model, batch_size=1)
    assert "norm1" not in gpu.layers and "drop6" not in gpu.layers
    want = model.forward(x, train=False)
    assert_close(gpu.forward(x), want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))


def test_evaluate_batch_smaller_than_the_buffers():
    """One image in buffers for two: every layer works on the front of its buffers."""
    from minialexnet.gpu import CudaAlexNet
    from minialexnet.layers import SoftmaxCrossEntropy
    from minialexnet.metrics import topk_correct

    model = tiny_model(seed=6)
    x, labels = images(1, seed=7), np.array([5])
    loss_sum, top1, top5 = CudaAlexNet(model, batch_size=2).evaluate_batch(x, labels)
    logits = model.forward(x, train=False)
    assert loss_sum == pytest.approx(SoftmaxCrossEntropy().forward(logits, labels), rel=1e-5)
    assert (top1, top5) == (
        topk_correct(logits, labels, 1).sum(),
        topk_correct(logits, labels, 5).sum(),
    )


def fresh_engine():
    """A CudaAlexNet with momentum for one image, on ``tiny_model(seed=10)``: every call
    starts at the same parameters and dropout generator."""
    from minialexnet.gpu import CudaAlexNet
    from minialexnet.optim import SGD

    model = tiny_model(seed=10)
    return CudaAlexNet(model, SGD(model, lr=0.05, momentum=0.9), batch_size=1)


@pytest.fixture(scope="module")
def two_steps():
    """The reference of the engine-protocol tests below: ``train_step`` on two batches of one
    image, with momentum, from ``fresh_engine()``'s start (``helpers.two_train_steps``): the
    batches, the two results and the parameters and momentum after the first and after the
    second step. Computed once: each step costs seconds under the CUDA simulator."""
    return two_train_steps(fresh_engine())


def test_is_an_engine_and_forward_backward_then_apply_update_is_train_step(two_steps):
    """Every member of the engine protocol; the two halves of a step give train_step's
    result, parameters and momentum exactly (same kernels, same dropout seed)."""
    from minialexnet.engine import StepResult

    halves = fresh_engine()
    missing = [name for name in engine_members() if not hasattr(halves, name)]
    assert not missing, f"CudaAlexNet lacks {missing} of the engine protocol"
    x, labels = two_steps.batches[0]
    want = two_steps.results[0]
    got = halves.forward_backward(x, labels)
    assert isinstance(got, StepResult) and isinstance(want, StepResult) and got.updated
    gradients = [g.copy_to_host() for g in halves.gradient_arrays()]
    assert [g.shape for g in gradients] == [p.shape for _, p, _ in halves.model.named_parameters()]
    assert any(np.abs(g).max() > 0 for g in gradients)
    halves.apply_update()
    assert got == want
    for key, value in replica(halves).items():  # parameters and momentum (sync_to_host)
        np.testing.assert_array_equal(value, two_steps.states[0][key], err_msg=key)
        assert not key.startswith("momentum") or np.abs(value).max() > 0, key
    # load_from_host brings host changes back; close frees buffers that the next call rebuilds.
    initial = tiny_model(seed=10).state_dict()
    halves.model.load_state_dict(initial)
    halves.load_from_host()
    for name, value in halves.state_dict().items():
        np.testing.assert_array_equal(value, initial[name], err_msg=name)
    # ... and the reloaded engine computes the initial network's function (no stale buffer).
    before = halves.forward(x)
    want = tiny_model(seed=10).forward(x)
    assert_close(before, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))
    halves.close()
    with halves:
        np.testing.assert_array_equal(halves.forward(x), before)


def test_uploads_go_through_two_pinned_buffers_in_turn():
    """Host batches of any size, dtype and layout arrive intact, each through the other
    pinned buffer than the last (gpu/step.py: PinnedStaging); device arrays pass as they are."""
    from numba import cuda

    from minialexnet.gpu.step import LossHead

    rng = np.random.default_rng(12)
    head = LossHead(3, 5, 4)
    staging = head._image_staging
    for n in (3, 1, 2):
        x = rng.standard_normal((n, 3, 5, 5))  # float64: cast on the way
        labels = list(rng.integers(0, 4, size=n))
        x_dev, labels_dev = head.upload(x[:, :, :, ::-1], labels)  # not contiguous
        np.testing.assert_array_equal(x_dev.copy_to_host(), x[:, :, :, ::-1].astype(np.float32))
        np.testing.assert_array_equal(labels_dev.copy_to_host(), np.array(labels))
        assert x_dev.dtype == np.float32 and labels_dev.dtype == np.int64
    first, second = staging._buffers
    assert first is not None and second is not None and first is not second
    on_device = cuda.to_device(np.zeros((1, 3, 5, 5), np.float32))
    assert head.upload(on_device)[0] is on_device


def test_a_non_finite_loss_leaves_the_parameters_alone():
    from minialexnet.gpu import CudaAlexNet
    from minialexnet.optim import SGD

    model = tiny_model(seed=8)
    gpu = CudaAlexNet(model, SGD(model), batch_size=1)
    before = gpu.state_dict()
    x = np.full((1, 3, 31, 31), np.nan, dtype=np.float32)
    result = gpu.train_step(x, np.array([2]))
    assert not result.updated and not np.isfinite(result.loss)
    for name, value in gpu.state_dict().items():
        np.testing.assert_array_equal(value, before[name])


def test_submitted_steps_equal_train_steps_and_a_divergence_stops_them_until_a_reload(two_steps):
    """submit_step(...).result() is train_step, with four steps in flight (two pinned
    report buffers: the third reuses the first's); a NaN batch and the one queued after it
    change no parameter or momentum on the GPU (the sticky flag), until load_from_host
    (``helpers.check_submitted_steps_and_sticky_divergence``)."""
    check_submitted_steps_and_sticky_divergence(
        fresh_engine(), two_steps.batches, two_steps.results, two_steps.states[1]
    )


def test_bad_input_is_refused_clearly():
    from minialexnet.gpu import CudaAlexNet
    from minialexnet.optim import SGD

    model = tiny_model(seed=9)
    gpu = CudaAlexNet(model, batch_size=1)
    with pytest.raises(ValueError, match="31x31 RGB crops"):
        gpu.forward(np.zeros((1, 3, 32, 32), dtype=np.float32))
    with pytest.raises(RuntimeError, match="needs an optimizer"):
        gpu.train_step(images(1), np.array([0]))
    gpu = CudaAlexNet(model, SGD(model), batch_size=1)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 6\)"):
        gpu.train_step(images(1), np.array([6]))


def test_without_a_gpu_the_network_refuses_clearly():
    """Host test (a subprocess with neither GPU nor simulator)."""
    code = (
        "import numpy as np\n"
        "from minialexnet.model import AlexNet\n"
        "from minialexnet.kernels.cuda import is_available\n"
        "from minialexnet.gpu import CudaAlexNet\n"
        "if is_available():\n"
        "    print('has a GPU')\n"
        "else:\n"
        "    try:\n"
        "        CudaAlexNet(AlexNet(6, 'tiny', np.random.default_rng(0)))\n"
        "    except RuntimeError as err:\n"
        "        print(err)\n"
    )
    stdout = run_python(code, unset_env=("NUMBA_ENABLE_CUDASIM",))
    if "has a GPU" in stdout:
        pytest.skip("this machine has a GPU")
    assert "CudaAlexNet needs an NVIDIA GPU" in stdout
    assert "NUMBA_ENABLE_CUDASIM=1" in stdout


drop_device_tests(globals(), keep=("test_under_cuda_simulator", *HOST_TESTS))
