"""The two-tower split (§3.2) computes exactly what the single-device grouped AlexNet computes.

Every test compares ``TwoTowerAlexNet`` with the ``AlexNet`` it was split from: logits, dx and
every parameter gradient (merged back to single-device names), in float32 and in float64
(exact up to rounding), in both tower modes, with a random upstream gradient.
"""

import dataclasses
import textwrap

import numpy as np
import pytest
from helpers import healthy_alexnet, run_python
from hypothesis import given
from hypothesis import strategies as st

from minialexnet import model as model_module
from minialexnet.backend import use_backend
from minialexnet.gradcheck import check_model
from minialexnet.layers import SoftmaxCrossEntropy
from minialexnet.model import AlexNet
from minialexnet.optim import SGD
from minialexnet.parallel import (
    CPUDevice,
    TowerRunner,
    TwoTowerAlexNet,
    parse_devices,
    split_sizes,
)


def images(net, batch: int, seed: int, dtype=np.float32) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (60 * rng.standard_normal((batch, 3, net.input_size, net.input_size))).astype(dtype)


def run_both(single, split, x, seed: int):
    """Forward (train=False) and backward of a random upstream gradient through both models;
    returns ``{"logits": (a, b), "dx": (a, b), "conv1.W": (a, b), ...}``."""
    logits = single.forward(x)
    dlogits = np.random.default_rng(seed).standard_normal(logits.shape).astype(x.dtype)
    dx = single.backward(dlogits)
    logits2 = split.forward(x)
    dx2 = split.backward(dlogits)
    merged = split.merge({name: g for name, _, g in split.named_parameters()})
    out = {"logits": (logits, logits2), "dx": (dx, dx2)}
    out.update({name: (g, merged[name]) for name, _, g in single.named_parameters()})
    return out


def assert_equal_up_to(pairs: dict, rtol: float) -> None:
    """Each pair agrees to ``rtol`` times the largest magnitude of the reference array."""
    for name, (expected, got) in pairs.items():
        assert got.dtype == expected.dtype, name
        assert got.shape == expected.shape, name
        scale = np.abs(expected).max()
        assert scale > 0, f"{name} is all zeros: the comparison would prove nothing"
        err = np.abs(got - expected).max() / scale
        assert err <= rtol, f"{name}: relative difference {err:.3g} > {rtol:g}"


# -- hand-computed pieces -------------------------------------------------------------------


def test_split_sizes_by_hand():
    assert split_sizes(96, 2, "conv1") == [48, 48]
    assert split_sizes(1000, 2, "fc8") == [500, 500]
    assert split_sizes(5, 2, "fc8") == [3, 2]  # odd: the larger block first
    assert split_sizes(2, 2, "fc8") == [1, 1]
    with pytest.raises(ValueError, match="fewer than the 2 towers"):
        split_sizes(1, 2, "fc6")


def test_cpu_collectives_by_hand():
    dev = CPUDevice(1)
    a = np.array([[1.0, 2.0, 3.0]], dtype=np.float32)  # tower 0's output, 3 channels
    b = np.array([[10.0, 20.0]], dtype=np.float32)  # tower 1's, 2 channels
    np.testing.assert_array_equal(dev.concatenate([a, b]), [[1, 2, 3, 10, 20]])
    assert dev.concatenate([a]) is a  # the image: no copy on the host
    # Backward: tower 1 owns columns 3:5 of the gathered input; both towers' gradients add.
    g0 = np.array([[1.0, 2.0, 3.0, 4.0, 5.0]], dtype=np.float32)
    g1 = np.array([[0.5, 0.5, 0.5, -4.0, 0.25]], dtype=np.float32)
    total = dev.sum_slices([g0, g1], 3, 5)
    np.testing.assert_array_equal(total, [[0.0, 5.25]])
    assert total.dtype == np.float32 and total.flags.c_contiguous
    np.testing.assert_array_equal(g0, [[1, 2, 3, 4, 5]])  # inputs untouched
    assert str(dev) == "cpu:1"


def test_paper_towers_hold_the_halves_of_figure_2():
    net = TwoTowerAlexNet(1000, "paper", np.random.default_rng(0), mode="sequential")
    shapes = {name: p.shape for name, p, _ in net.named_parameters()}
    # Figure 2: 48 / 128 / 192 / 192 / 128 kernels and 2048 / 2048 neurons per GPU.
    assert shapes["tower0.conv1.W"] == shapes["tower1.conv1.W"] == (48, 3, 11, 11)
    assert shapes["tower1.conv2.W"] == (128, 48, 5, 5)  # own tower's 48 maps only
    assert shapes["tower1.conv3.W"] == (192, 256, 3, 3)  # both towers' 256 maps
    assert shapes["tower1.conv4.W"] == (192, 192, 3, 3)
    assert shapes["tower1.conv5.W"] == (128, 192, 3, 3)
    assert shapes["tower1.fc6.W"] == (2048, 9216)
    assert shapes["tower1.fc7.W"] == (2048, 4096)
    assert shapes["tower1.fc8.W"] == (500, 4096)
    assert net.num_parameters() == 60_965_224  # nothing duplicated
    assert net.summary().count("gather") == 4  # conv3, fc6, fc7, fc8 read both


# -- equivalence with the single-device grouped model ---------------------------------------


@pytest.mark.parametrize("variant, num_classes", [("tiny", 7), ("mini", 10)])
def test_float32_logits_dx_and_every_gradient_match(variant, num_classes):
    single = healthy_alexnet(variant, num_classes)
    split = TwoTowerAlexNet.from_model(single)
    assert_equal_up_to(run_both(single, split, images(single, 4, 1), seed=2), rtol=2e-5)


def test_a_training_step_skips_the_image_gradient_and_keeps_every_weight_gradient():
    split = TwoTowerAlexNet.from_model(healthy_alexnet("tiny", 7))
    x = images(split, 3, 4)
    dlogits = np.random.default_rng(5).standard_normal(split.forward(x).shape)
    dlogits = dlogits.astype(np.float32)
    split.backward(dlogits)
    full = {name: g.copy() for name, _, g in split.named_parameters()}
    assert split.backward(dlogits, need_dx=False) is None
    for name, _, g in split.named_parameters():
        np.testing.assert_array_equal(g, full[name], err_msg=name)


@pytest.mark.parametrize("variant, num_classes", [("tiny", 5), ("mini", 10)])
@pytest.mark.parametrize("mode", ["threads", "sequential"])
def test_float64_matches_to_rounding(variant, num_classes, mode):
    single = healthy_alexnet(variant, num_classes).astype(np.float64)
    split = TwoTowerAlexNet.from_model(single, mode=mode)
    assert all(p.dtype == np.float64 for _, p, _ in split.named_parameters())
    assert_equal_up_to(
        run_both(single, split, images(single, 3, 3, np.float64), seed=4), rtol=1e-12
    )


@given(st.integers(2, 13), st.integers(1, 4), st.integers(0, 2**31 - 1))
def test_any_class_count_and_batch_in_float64(num_classes, batch, seed):
    # Odd class counts split fc8 unevenly (3 + 2 rows for 5 classes); still exact. A property
    # of the split, not of the kernels: the NumPy ones keep it free of Numba compile times.
    single = healthy_alexnet("tiny", num_classes, seed=seed % 1000).astype(np.float64)
    split = TwoTowerAlexNet.from_model(single, mode="sequential")
    with use_backend("numpy"):
        pairs = run_both(single, split, images(single, batch, seed, np.float64), seed=seed + 1)
    # With batch 1 and random weights a ReLU path can be dead, so some gradients are exactly
    # 0 in the reference: the split must then give exactly 0 as well.
    dead = [name for name, (expected, _) in pairs.items() if not np.abs(expected).any()]
    assert "logits" not in dead
    for name in dead:
        np.testing.assert_array_equal(pairs.pop(name)[1], 0.0, err_msg=name)
    assert_equal_up_to(pairs, rtol=1e-12)


def test_odd_widths_where_both_towers_are_read(monkeypatch):
    # conv1 with 5 filters feeding an ungrouped conv2, fc6 with 7 and fc7 with 5 units: the
    # towers get 3 + 2 (4 + 3, 3 + 2) and the next layer reads both, so the split stays exact.
    tiny = model_module.TINY
    convs = (
        dataclasses.replace(tiny.convs[0], filters=5),
        dataclasses.replace(tiny.convs[1], groups=1),
        *tiny.convs[2:],
    )
    fcs = (
        dataclasses.replace(tiny.fcs[0], units=7),
        dataclasses.replace(tiny.fcs[1], units=5),
        tiny.fcs[2],
    )
    monkeypatch.setitem(
        model_module.VARIANTS, "odd", dataclasses.replace(tiny, convs=convs, fcs=fcs)
    )
    single = healthy_alexnet("odd", 3, lrn=False).astype(np.float64)
    split = TwoTowerAlexNet.from_model(single)
    assert dict((n, p.shape[0]) for n, p, _ in split.named_parameters())["tower1.conv1.W"] == 2
    assert_equal_up_to(
        run_both(single, split, images(single, 2, 5, np.float64), seed=6), rtol=1e-12
    )


def test_ablations_tanh_no_lrn_non_overlapping_pool():
    single = healthy_alexnet("mini", 4, activation="tanh", lrn=False, overlapping_pool=False)
    single.astype(np.float64)
    split = TwoTowerAlexNet.from_model(single)
    assert_equal_up_to(
        run_both(single, split, images(single, 2, 7, np.float64), seed=8), rtol=1e-12
    )


def test_threads_and_sequential_give_identical_bits():
    single = healthy_alexnet("mini", 10)
    x = images(single, 2, 9)
    threads = TwoTowerAlexNet.from_model(single, mode="threads")
    sequential = TwoTowerAlexNet.from_model(single, mode="sequential")
    for _ in range(2):  # the first round of "threads" runs serially (Numba guard)
        a = run_both(single, threads, x, seed=10)
        b = run_both(single, sequential, x, seed=10)
    for name in a:
        np.testing.assert_array_equal(a[name][1], b[name][1], err_msg=name)


def test_the_split_model_passes_a_finite_difference_check():
    # Independent of the single-device model: the towers' own backward vs central differences.
    # On the readable NumPy kernels: a few hundred forwards of tiny shapes, where launching
    # Numba's parallel kernels would cost more than the arithmetic.
    split = TwoTowerAlexNet.from_model(healthy_alexnet("tiny", 3), mode="sequential")
    x = images(split, 2, 11) / 60
    with use_backend("numpy"):
        errors = check_model(split, x, np.array([0, 2]), max_entries=3)
    assert len(errors) == 1 + 2 * 16  # x, and 16 parameters per tower
    assert max(errors.values()) < 1e-6, errors


def test_a_device_with_its_own_memory_gives_the_same_numbers():
    # Stand-in for a GPU: every array that crosses into or out of the device is copied, and
    # every call goes through the Device interface; the numbers must not change.
    class CopyingDevice(CPUDevice):
        calls: list = []
        in_shapes: dict = {}

        def adopt(self, layer, in_shape):
            self.in_shapes[self.index, type(layer).__name__, in_shape] = True
            return layer

        def asarray(self, x):
            return np.array(x, copy=True)

        def to_host(self, a):
            return np.array(a, copy=True)

        def concatenate(self, pieces):
            self.calls.append("concatenate")
            return np.concatenate([np.array(p, copy=True) for p in pieces], axis=1)

        def sum_slices(self, arrays, start, stop):
            self.calls.append("sum_slices")
            return super().sum_slices(arrays, start, stop)

        def run(self, task):
            self.calls.append("run")
            return task()

    single = healthy_alexnet("tiny", 6).astype(np.float64)
    split = TwoTowerAlexNet.from_model(single, devices=[CopyingDevice(0), CopyingDevice(1)])
    assert_equal_up_to(
        run_both(single, split, images(single, 2, 12, np.float64), seed=13), rtol=1e-12
    )
    stages = 5  # conv1-pool2 | conv3-flatten | fc6 | fc7 | fc8
    assert CopyingDevice.calls.count("concatenate") == 2 * stages  # per tower, per stage
    assert CopyingDevice.calls.count("sum_slices") == 2 * stages
    assert CopyingDevice.calls.count("run") == 4 * stages
    # What a GPU needs to size its buffers: tiny's conv2 reads its own 2 maps of 7x7, conv3
    # the gathered 8 maps of 3x3, conv4 and conv5 their own 4, fc6-fc8 both towers' 4 + 4
    # features.
    for shape in [
        ("Conv2D", (3, 31, 31)),
        ("Conv2D", (2, 7, 7)),
        ("Conv2D", (8, 3, 3)),
        ("Conv2D", (4, 3, 3)),
        ("Linear", (8,)),
    ]:
        assert (1, *shape) in CopyingDevice.in_shapes, shape


# -- state dicts, checkpoints, the optimizer ------------------------------------------------


def test_split_merge_round_trip_is_exact():
    single = AlexNet(9, "mini", rng=np.random.default_rng(14))
    split = TwoTowerAlexNet.from_model(single)
    state = single.state_dict()
    merged = split.state_dict()
    assert list(merged) == list(state)
    for name in state:
        np.testing.assert_array_equal(merged[name], state[name], err_msg=name)
    parts = split.split(state)
    assert parts["tower1.fc8.W"].shape == (4, 256)  # 9 classes: 5 + 4 rows
    for name in state:
        np.testing.assert_array_equal(split.merge(parts)[name], state[name])
    # Loading another network's weights (in place) makes the towers compute that network.
    other = healthy_alexnet("mini", 9, seed=15)
    conv1_w = next(p for name, p, _ in split.named_parameters() if name == "tower0.conv1.W")
    split.load_state_dict(other.state_dict())
    np.testing.assert_array_equal(conv1_w, other.state_dict()["conv1.W"][:16])
    x = images(other, 2, 16)
    np.testing.assert_allclose(
        split.forward(x), other.forward(x), rtol=1e-5, atol=1e-5 * np.abs(other.forward(x)).max()
    )
    back = split.to_model()
    for name, p in other.state_dict().items():
        np.testing.assert_array_equal(back.state_dict()[name], p)


def test_one_sgd_step_gives_equal_parameters_and_momentum():
    single = healthy_alexnet("mini", 10, seed=17)
    split = TwoTowerAlexNet.from_model(single)
    x, labels = images(single, 4, 18), np.array([1, 0, 9, 3])
    results = []
    for net in (single, split):
        loss = SoftmaxCrossEntropy()
        loss.forward(net.forward(x, train=False), labels)
        net.backward(loss.backward())
        optimizer = SGD(net, lr=0.01, momentum=0.9, weight_decay=0.0005)
        optimizer.step()
        results.append((net, optimizer))
    (_, opt1), (_, opt2) = results
    after = split.state_dict()
    velocity = split.merge(opt2.state_dict()["velocity"])
    for name, p in single.state_dict().items():
        np.testing.assert_allclose(after[name], p, rtol=1e-5, atol=1e-6, err_msg=name)
        v1 = opt1.velocity[name]
        np.testing.assert_allclose(
            velocity[name], v1, rtol=1e-4, atol=1e-5 * np.abs(v1).max(), err_msg=name
        )


def test_a_training_step_with_dropout_runs_and_is_reproducible():
    def one_step(seed):
        single = healthy_alexnet("mini", 10, seed=19)
        split = TwoTowerAlexNet.from_model(single, rng=np.random.default_rng(seed))
        before = split.state_dict()
        optimizer = SGD(split, lr=0.001)
        loss = SoftmaxCrossEntropy()
        x = images(single, 8, 20)
        value = loss.forward(split.forward(x, train=True), np.arange(8))
        split.backward(loss.backward())
        optimizer.step()
        # Dropout's backward multiplies by the scaled mask of the last forward: read it out.
        masks = [t.layers["drop6"].backward(np.ones((8, 128), np.float32)) for t in split.towers]
        return value, before, split.state_dict(), masks, split.forward(x, train=False)

    value, before, after, masks, logits = one_step(seed=21)
    assert np.isfinite(value)
    assert all(not np.array_equal(before[n], after[n]) for n in ("conv1.W", "fc6.W", "fc8.b"))
    assert masks[0].shape == (8, 128) and 0.3 < (masks[0] == 0).mean() < 0.7
    assert not np.array_equal(masks[0], masks[1])  # each tower its own stream
    again = one_step(seed=21)
    assert again[0] == value
    np.testing.assert_array_equal(again[4], logits)  # one rng state fixes every mask
    assert not np.array_equal(one_step(seed=22)[3][0], masks[0])


# -- clear errors ---------------------------------------------------------------------------


def test_odd_width_before_a_layer_that_stays_on_its_tower_is_refused(monkeypatch):
    tiny = model_module.TINY
    convs = (
        dataclasses.replace(tiny.convs[0], filters=5),  # 5 maps into norm1 (2 groups)
        dataclasses.replace(tiny.convs[1], groups=1),
        *tiny.convs[2:],
    )
    monkeypatch.setitem(model_module.VARIANTS, "odd-lrn", dataclasses.replace(tiny, convs=convs))
    with pytest.raises(ValueError, match=r"norm1 .*5 channels.*divided equally"):
        TwoTowerAlexNet.from_model(AlexNet(4, "odd-lrn"))


def test_lrn_across_all_channels_cannot_be_split(monkeypatch):
    monkeypatch.setitem(
        model_module.VARIANTS,
        "lrn1",
        dataclasses.replace(
            model_module.TINY, norm=dataclasses.replace(model_module.TINY.norm, groups=1)
        ),
    )
    with pytest.raises(ValueError, match="norm1 normalizes within 1 group.*boundary"):
        TwoTowerAlexNet.from_model(AlexNet(4, "lrn1"))


def test_bad_devices_modes_and_calls():
    single = AlexNet(4, "tiny", rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="exactly 2 devices"):
        TwoTowerAlexNet.from_model(single, devices="cpu:0")
    from minialexnet.kernels.cuda import is_available

    if not is_available():  # with a GPU (or the simulator) "0,1" builds GPU towers
        with pytest.raises(ValueError, match=r"'cuda:0' needs an NVIDIA GPU.*'cpu:0,cpu:1'"):
            TwoTowerAlexNet.from_model(single, devices="0,1")
    with pytest.raises(ValueError, match="cannot read the device name"):
        TwoTowerAlexNet.from_model(single, devices="cpu:x,cpu:1")
    with pytest.raises(ValueError, match="unknown tower mode"):
        TwoTowerAlexNet.from_model(single, mode="processes")
    with pytest.raises(TypeError, match="expects a minialexnet.model.AlexNet"):
        TwoTowerAlexNet.from_model(object())
    split = TwoTowerAlexNet.from_model(single)
    with pytest.raises(RuntimeError, match="backward called before forward"):
        split.backward(np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match="takes 31x31 crops"):
        split.forward(np.zeros((2, 3, 32, 32), np.float32))
    split.forward(np.zeros((2, 3, 31, 31), np.float32))
    with pytest.raises(ValueError, match=r"dlogits of the logits' shape \(2, 4\)"):
        split.backward(np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match=r"missing \['fc8.b'\]"):
        split.load_state_dict({k: v for k, v in single.state_dict().items() if k != "fc8.b"})
    with pytest.raises(ValueError, match="fc8.W has shape"):
        split.load_state_dict({**single.state_dict(), "fc8.W": np.zeros((5, 8), np.float32)})
    with pytest.raises(ValueError, match="per-tower"):
        split.merge(single.state_dict())


def test_device_names():
    assert parse_devices("cpu") == [CPUDevice(0), CPUDevice(1)]
    assert parse_devices(" cpu:0 , CPU:1 ") == [CPUDevice(0), CPUDevice(1)]
    assert parse_devices("cpu:3,cpu:3") == [CPUDevice(3), CPUDevice(3)]  # a name twice
    with pytest.raises(ValueError, match=r"unknown device kind 'tpu'.*known kinds: cpu, cuda"):
        parse_devices("tpu:0,tpu:1")
    with pytest.raises(ValueError, match="cannot read the device name 'cpu:x'"):
        parse_devices("cpu:x,cpu:1")
    runner = TowerRunner("threads")
    assert runner.map([lambda: 1, lambda: 2]) == [1, 2]
    runner.close()


def test_numba_workqueue_layer_serializes_the_towers_instead_of_aborting():
    # Two threads launching parallel=True kernels under 'workqueue' abort the process
    # ("Concurrent access has been detected"); the runner must see the layer and serialize.
    script = textwrap.dedent("""
        import warnings, numpy as np
        from minialexnet.model import AlexNet
        from minialexnet.parallel import TwoTowerAlexNet
        net = TwoTowerAlexNet.from_model(AlexNet(4, "tiny", rng=np.random.default_rng(0)))
        x = np.random.default_rng(1).standard_normal((8, 3, 31, 31)).astype(np.float32)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(3):
                net.backward(np.ones_like(net.forward(x)))
        print(net.runner.threading_layer, net.runner.serialized,
              any("workqueue" in str(w.message) for w in caught))
    """)
    stdout = run_python(
        script, set_env={"NUMBA_THREADING_LAYER": "workqueue", "MINIALEXNET_BACKEND": "numba"}
    )
    assert stdout.split() == ["workqueue", "True", "True"]


def test_close_stops_the_workers_and_a_later_call_restarts_them():
    split = TwoTowerAlexNet.from_model(AlexNet(4, "tiny", rng=np.random.default_rng(0)))
    x = images(split, 2, 23)
    first = split.forward(x)
    with split:
        split.forward(x)
    assert split.runner._pool is None
    np.testing.assert_array_equal(split.forward(x), first)
    split.close()


def test_parallel_never_imports_gpu_and_each_imports_alone():
    """Imports point one way: no module of minialexnet/parallel/ imports minialexnet.gpu at
    module level, ``import minialexnet.parallel`` loads neither it nor numba.cuda, and
    ``minialexnet.gpu`` imports alone in a fresh interpreter (no cycle to trip over)."""
    import ast
    import importlib.util
    import pathlib

    folder = pathlib.Path(__file__).resolve().parent.parent / "minialexnet" / "parallel"
    for path in sorted(folder.glob("*.py")):
        for node in ast.parse(path.read_text()).body:  # module level only
            names = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            assert not any(n.startswith("minialexnet.gpu") for n in names), path.name
    stdout = run_python(
        "import sys, minialexnet.parallel\n"
        "print('minialexnet.gpu' in sys.modules, 'numba.cuda' in sys.modules)\n"
    )
    assert stdout.split() == ["False", "False"]
    if importlib.util.find_spec("numba_cuda") is None:
        pytest.skip("numba-cuda is not installed: minialexnet.gpu cannot be imported")
    stdout = run_python(
        "import sys, minialexnet.gpu\n"
        "print(sorted(m for m in sys.modules if m.startswith('minialexnet.')"
        " and m.split('.')[1] in ('gpu', 'parallel')))\n"
    )
    assert "'minialexnet.gpu.towers'" in stdout and "'minialexnet.parallel.towers'" in stdout
