"""SGD (§5) against the paper's formula worked by hand, and the learning-rate schedules."""

import itertools
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minialexnet import use_backend
from minialexnet.kernels import cpu as numba_kernels
from minialexnet.kernels import numpy as numpy_kernels
from minialexnet.optim import SGD, ReduceOnPlateau, StepSchedule


class TwoParams:
    """The smallest object with the model protocol SGD needs: named_parameters()."""

    def __init__(self, w, b, dtype=np.float32):
        self.params = {"fc.W": np.array(w, dtype=dtype), "fc.b": np.array(b, dtype=dtype)}
        self.grads = {name: None for name in self.params}

    def named_parameters(self):
        for name, p in self.params.items():
            yield name, p, self.grads[name]


def test_two_steps_match_the_paper_formula_worked_by_hand():
    # w = 1, 2 ; lr 0.1, momentum 0.9, weight decay 0.5 (big, so that its term is visible).
    model = TwoParams([1.0, 2.0], [-1.0])
    opt = SGD(model, lr=0.1, momentum=0.9, weight_decay=0.5)
    model.grads = {"fc.W": np.array([0.5, -1.0], np.float32), "fc.b": np.array([2.0], np.float32)}
    opt.step()
    # v1 = 0.9*0 - 0.5*0.1*w - 0.1*g:  W: [-0.05 - 0.05, -0.1 + 0.1] = [-0.1, 0.0]
    #                                   b: [0.05 - 0.2] = [-0.15]
    np.testing.assert_allclose(opt.velocity["fc.W"], [-0.1, 0.0], atol=1e-7)
    np.testing.assert_allclose(opt.velocity["fc.b"], [-0.15], atol=1e-7)
    np.testing.assert_allclose(model.params["fc.W"], [0.9, 2.0], atol=1e-7)
    np.testing.assert_allclose(model.params["fc.b"], [-1.15], atol=1e-7)
    model.grads = {"fc.W": np.array([1.0, 0.0], np.float32), "fc.b": np.array([0.0], np.float32)}
    opt.step()
    # v2 = 0.9*v1 - 0.05*w1 - 0.1*g:  W: [-0.09 - 0.045 - 0.1, 0 - 0.1 - 0] = [-0.235, -0.1]
    #                                   b: [-0.135 + 0.0575] = [-0.0775]
    np.testing.assert_allclose(opt.velocity["fc.W"], [-0.235, -0.1], atol=1e-7)
    np.testing.assert_allclose(opt.velocity["fc.b"], [-0.0775], atol=1e-7)
    np.testing.assert_allclose(model.params["fc.W"], [0.665, 1.9], atol=1e-6)
    np.testing.assert_allclose(model.params["fc.b"], [-1.2275], atol=1e-6)


def test_update_is_in_place_and_keeps_float32():
    model = TwoParams([1.0, 2.0], [0.0])
    w_before = model.params["fc.W"]
    opt = SGD(model)
    model.grads = {k: np.ones_like(v) * 0.3 for k, v in model.params.items()}
    opt.step()
    assert model.params["fc.W"] is w_before
    assert w_before.dtype == np.float32 and opt.velocity["fc.W"].dtype == np.float32
    assert not np.allclose(w_before, [1.0, 2.0])


@given(
    st.floats(0.001, 1.0),
    st.floats(0.0, 0.99),
    st.floats(0.0, 0.01),
    st.integers(1, 4),
    st.integers(0, 2**31 - 1),
)
def test_matches_the_formula_in_float64(lr, momentum, wd, steps, seed):
    rng = np.random.default_rng(seed)
    w0 = rng.standard_normal(5)
    model = TwoParams(w0, [0.0], dtype=np.float64)
    opt = SGD(model, lr=lr, momentum=momentum, weight_decay=wd)
    w, v = w0.copy(), np.zeros(5)
    for _ in range(steps):
        g = rng.standard_normal(5)
        model.grads = {"fc.W": g.copy(), "fc.b": np.zeros(1)}
        opt.step()
        v = momentum * v - wd * lr * w - lr * g
        w = w + v
    np.testing.assert_allclose(model.params["fc.W"], w, rtol=1e-12, atol=1e-12)


@given(
    st.integers(1, 3000),
    st.sampled_from([np.float32, np.float64]),
    st.floats(1e-4, 1.0),
    st.sampled_from([0.0, 0.5, 0.9]),
    st.sampled_from([0.0, 5e-4, 1e-2]),
    st.integers(0, 2**32 - 1),
)
def test_numba_update_equals_the_numpy_reference_bit_for_bit(size, dtype, lr, momentum, wd, seed):
    # Same four roundings per element, in the same order: the same bits (no fused multiply-add).
    rng = np.random.default_rng(seed)
    w, g, v = (rng.standard_normal(size).astype(dtype) for _ in range(3))
    ref = [a.copy() for a in (w, g, v)]
    numpy_kernels.sgd_update(*ref, lr, momentum, wd)
    g_before = g.copy()
    numba_kernels.sgd_update(w, g, v, lr, momentum, wd)
    np.testing.assert_array_equal(w, ref[0])
    np.testing.assert_array_equal(v, ref[2])
    np.testing.assert_array_equal(g, g_before)  # the gradient is only read


def test_both_backends_take_the_same_optimizer_steps():
    results = []
    for backend in ("numpy", "numba"):
        rng = np.random.default_rng(5)  # the same gradients for both
        model = TwoParams(rng.standard_normal((3, 4)), rng.standard_normal(3))
        optimizer = SGD(model, lr=0.1, momentum=0.9, weight_decay=5e-4)
        with use_backend(backend):
            for _ in range(3):
                for name, p, _ in model.named_parameters():
                    model.grads[name] = rng.standard_normal(p.shape).astype(np.float32)
                optimizer.step()
        results.append([p.copy() for _, p, _ in model.named_parameters()])
        results[-1] += [v.copy() for v in optimizer.velocity.values()]
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def test_numba_update_refuses_a_non_contiguous_parameter():
    w = np.zeros((4, 6), dtype=np.float32)[:, ::2]
    with pytest.raises(ValueError, match="C-contiguous"):
        numba_kernels.sgd_update(w, np.zeros_like(w), np.zeros_like(w), 0.1, 0.9, 0.0)


def test_weight_decay_alone_shrinks_weights_geometrically():
    model = TwoParams([4.0, -2.0], [1.0])
    opt = SGD(model, lr=0.5, momentum=0.0, weight_decay=0.2)
    model.grads = {k: np.zeros_like(v) for k, v in model.params.items()}
    for _ in range(3):
        opt.step()
    np.testing.assert_allclose(model.params["fc.W"], np.array([4.0, -2.0]) * 0.9**3, rtol=1e-6)
    np.testing.assert_allclose(model.params["fc.b"], [0.9**3], rtol=1e-6)


def test_step_without_gradients_is_a_clear_error():
    opt = SGD(TwoParams([1.0], [0.0]))
    with pytest.raises(RuntimeError, match="backward"):
        opt.step()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"lr": 0}, "lr must be a finite number > 0"),
        ({"lr": -0.1}, "lr must"),
        ({"lr": float("nan")}, "lr must"),
        ({"momentum": -0.5}, "momentum must"),
        ({"weight_decay": "a lot"}, "weight_decay must be a number"),
    ],
)
def test_bad_hyperparameters_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SGD(TwoParams([1.0], [0.0]), **kwargs)


def test_plateau_divides_by_ten_when_the_error_stops_improving_at_most_three_times():
    opt = SGD(TwoParams([1.0], [0.0]), lr=0.01)
    schedule = ReduceOnPlateau(opt, patience=1, min_epochs=0, rel_threshold=0.0)
    lrs = [
        schedule.step(err)
        for err in [
            0.9,
            0.8,
            0.8,
            0.81,  # 2 epochs without improvement -> 0.001
            0.7,
            0.7,
            0.7,  # -> 0.0001
            0.7,
            0.7,  # -> 0.00001 (third and last reduction)
            0.7,
            0.7,
            0.7,
            0.7,
        ]
    ]  # no further reductions
    expected = [0.01, 0.01, 0.01, 1e-3, 1e-3, 1e-3, 1e-4, 1e-4, 1e-5, 1e-5, 1e-5, 1e-5, 1e-5]
    np.testing.assert_allclose(lrs, expected, rtol=1e-12)
    assert schedule.reductions == 3


def test_plateau_with_zero_patience_reduces_at_the_first_bad_epoch():
    opt = SGD(TwoParams([1.0], [0.0]), lr=1.0)
    schedule = ReduceOnPlateau(opt, patience=0, min_epochs=0, rel_threshold=0.0)
    assert [schedule.step(e) for e in [0.5, 0.4, 0.45, 0.3]] == pytest.approx([1, 1, 0.1, 0.1])


def test_step_schedule():
    opt = SGD(TwoParams([1.0], [0.0]), lr=0.1)
    schedule = StepSchedule(opt, step_size=2)
    assert [schedule.step() for _ in range(5)] == pytest.approx([0.1, 0.01, 0.01, 1e-3, 1e-3])


def test_state_round_trip_continues_identically():
    rng = np.random.default_rng(3)
    grads = [rng.standard_normal(2).astype(np.float32) for _ in range(6)]

    def run(model, opt, schedule, steps):
        for g in steps:
            model.grads = {"fc.W": g, "fc.b": g[:1].copy()}
            opt.step()
            schedule.step(float(abs(g).sum()))

    straight = TwoParams([1.0, 2.0], [0.5])
    opt = SGD(straight, lr=0.1)
    sched = ReduceOnPlateau(opt, patience=0, min_epochs=2)
    run(straight, opt, sched, grads)

    first = TwoParams([1.0, 2.0], [0.5])
    opt1 = SGD(first, lr=0.1)
    sched1 = ReduceOnPlateau(opt1, patience=0, min_epochs=2)
    run(first, opt1, sched1, grads[:3])
    opt_state, sched_state = opt1.state_dict(), sched1.state_dict()

    second = TwoParams(first.params["fc.W"], first.params["fc.b"])
    opt2 = SGD(second, lr=123.0, momentum=0.1)
    sched2 = ReduceOnPlateau(opt2, patience=7, min_epochs=9, rel_threshold=0.5)
    opt2.load_state_dict(opt_state)
    sched2.load_state_dict(sched_state)
    run(second, opt2, sched2, grads[3:])

    np.testing.assert_array_equal(second.params["fc.W"], straight.params["fc.W"])
    np.testing.assert_array_equal(opt2.velocity["fc.W"], opt.velocity["fc.W"])
    assert opt2.lr == opt.lr and sched2.state_dict() == sched.state_dict()
    assert math.isfinite(sched.state_dict()["best"])


# -- the plateau rule on recorded curves (issue 16) -----------------------------------------

# Issue 16's run, as its text reports it: the paper network on 100 ILSVRC images, 100
# classes, batch 16, 15 epochs; the training loss fell from 10.2 to ~4.7 by epoch 4 and stayed
# there, and the top-1 error "never left 99%". The per-epoch errors below are a reconstruction
# consistent with that summary (100 validation images, so the error moves in steps of 1%):
# with the old rule (patience 2, no minimum, any improvement counts) they give exactly the
# reductions the issue saw, at epochs 5, 8 and 11.
ISSUE16_VAL_ERROR = [
    1.00,
    0.99,
    0.99,
    0.99,
    1.00,
    0.99,
    0.99,
    0.99,
    0.99,
    1.00,
    0.99,
    0.99,
    0.99,
    0.99,
    0.99,
]

# A realistic curve of 60 epochs: a slow start (at chance for 6 epochs), then a slow descent
# with +-1 point of validation noise, and from epoch 30 a plateau at ~42% with the same noise.
_NOISE = [0.004, -0.006, 0.009, -0.002, 0.0, 0.007, -0.008, 0.003, -0.004, 0.006]
SLOW_THEN_PLATEAU = (
    [0.90, 0.90, 0.89, 0.90, 0.90, 0.89]
    + [round(0.89 - 0.47 * (1 - math.exp(-(e - 6) / 8)) + _NOISE[e % 10], 3) for e in range(6, 30)]
    + [round(0.425 + _NOISE[e % 10], 3) for e in range(30, 60)]
)


def reduction_epochs(schedule, errors) -> list:
    """The 1-based epochs after which ``schedule`` lowered the learning rate."""
    epochs, lr = [], schedule.optimizer.lr
    for epoch, error in enumerate(errors, start=1):
        new_lr = schedule.step(error)
        if new_lr < lr:
            epochs.append(epoch)
        lr = new_lr
    return epochs


def old_rule(opt):
    """The rule before issue 16: patience 2, no minimum at each rate, no relative threshold."""
    return ReduceOnPlateau(opt, patience=2, min_epochs=0, rel_threshold=0.0)


def test_old_rule_reproduces_the_issue16_reductions():
    opt = SGD(TwoParams([1.0], [0.0]), lr=0.01)
    assert reduction_epochs(old_rule(opt), ISSUE16_VAL_ERROR) == [5, 8, 11]
    assert opt.lr == pytest.approx(1e-5)


def test_default_rule_keeps_the_rate_through_the_issue16_run():
    opt = SGD(TwoParams([1.0], [0.0]), lr=0.01)
    assert reduction_epochs(ReduceOnPlateau(opt), ISSUE16_VAL_ERROR) == []
    assert opt.lr == 0.01


def test_default_rule_waits_min_epochs_then_fires_on_a_flat_curve():
    # The same flat run, continued: the first reduction comes at the minimum (epoch 20), the
    # next no sooner than 20 epochs later, and never more than three.
    opt = SGD(TwoParams([1.0], [0.0]), lr=0.01)
    flat = ISSUE16_VAL_ERROR + [0.99] * 85
    assert reduction_epochs(ReduceOnPlateau(opt), flat) == [20, 40, 60]
    assert opt.lr == pytest.approx(1e-5)


def test_default_rule_fires_on_the_real_plateau_of_a_slow_curve():
    opt = SGD(TwoParams([1.0], [0.0]), lr=0.01)
    old = reduction_epochs(old_rule(SGD(TwoParams([1.0], [0.0]), lr=0.01)), SLOW_THEN_PLATEAU)
    new = reduction_epochs(ReduceOnPlateau(opt), SLOW_THEN_PLATEAU)
    assert old[0] < 20  # the flat start fools the old rule (epoch 6)
    assert new and new[0] > 30  # the descent is not a plateau; the plateau (from
    assert new[0] <= 30 + 6  # epoch 31) is: caught within patience + noise
    assert all(b - a >= 20 for a, b in itertools.pairwise(new))


def test_minimum_applies_at_each_rate_and_relative_threshold_ignores_noise():
    opt = SGD(TwoParams([1.0], [0.0]), lr=1.0)
    schedule = ReduceOnPlateau(opt, patience=0, min_epochs=3, rel_threshold=0.1)
    # 0.5 -> 0.46 is under 10% of 0.5: not an improvement; 0.5 -> 0.44 is.
    errors = [0.5, 0.46, 0.46, 0.44, 0.43, 0.43, 0.43, 0.43]
    assert reduction_epochs(schedule, errors) == [3, 6]  # epochs 4, 5, 6 at the rate 0.1
    assert schedule.best == 0.44


def test_plateau_state_of_an_old_checkpoint_loads_as_the_old_rule():
    opt = SGD(TwoParams([1.0], [0.0]), lr=0.01)
    old_state = {
        "name": "plateau",
        "factor": 0.1,
        "patience": 2,
        "max_reductions": 3,
        "threshold": 0.0,
        "best": 0.99,
        "bad_epochs": 2,
        "reductions": 1,
    }
    schedule = ReduceOnPlateau(opt)
    schedule.load_state_dict(old_state)
    assert (schedule.min_epochs, schedule.rel_threshold, schedule.epochs_at_rate) == (0, 0.0, 0)
    assert schedule.step(0.99) == pytest.approx(0.001)  # a third bad epoch: the old rule fires
    assert schedule.state_dict()["reductions"] == 2


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"min_epochs": -1}, "min_epochs"),
        ({"min_epochs": 2.5}, "min_epochs"),
        ({"rel_threshold": 1.0}, "rel_threshold"),
        ({"rel_threshold": -0.1}, "rel_threshold"),
        ({"patience": True}, "patience"),
    ],
)
def test_bad_plateau_settings_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ReduceOnPlateau(SGD(TwoParams([1.0], [0.0])), **kwargs)


def test_optimizer_state_must_match_the_model():
    opt = SGD(TwoParams([1.0], [0.0]))
    with pytest.raises(ValueError, match="missing momentum buffers"):
        opt.load_state_dict({"velocity": {"fc.W": np.zeros(1, np.float32)}})
    with pytest.raises(ValueError, match="shape"):
        opt.load_state_dict(
            {"velocity": {"fc.W": np.zeros(2, np.float32), "fc.b": np.zeros(1, np.float32)}}
        )
    with pytest.raises(ValueError, match="schedule state is for 'step'"):
        ReduceOnPlateau(opt).load_state_dict(StepSchedule(opt, 3).state_dict())
