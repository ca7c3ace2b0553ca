"""loss_warning: the early warnings of issue 16, on hand-made loss histories."""

import math

import pytest

from minialexnet.diagnostics import MIN_STEPS, loss_warning

LN100 = math.log(100)


def test_a_loss_that_falls_from_chance_gets_no_warning():
    history = [LN100 - 0.005 * i for i in range(400)]  # 4.61 -> 2.6
    assert loss_warning(400, history, 100) is None


def test_nothing_to_say_with_no_losses_yet():
    assert loss_warning(0, [], 10) is None


def test_far_above_chance_is_reported_from_the_first_steps():
    # Issue 16: the paper's initialisation on 100 classes started at 10.2 (chance 4.61).
    warning = loss_warning(5, [4.7, 9.8, 10.5, 10.2, 10.4], 100)
    assert warning is not None
    assert "far above chance" in warning and "4.61" in warning
    assert "--lr" in warning and "--init bvlc" in warning


def test_slightly_above_chance_is_not_far_above():
    assert loss_warning(5, [4.9, 5.2, 5.0, 4.8, 4.95], 100) is None


def test_stuck_at_chance_is_reported_only_after_min_steps():
    # Issue 16's run after epoch 4: ~4.7, flat, with batch noise.
    history = [4.7 + 0.05 * math.sin(i) for i in range(MIN_STEPS + 50)]
    assert loss_warning(MIN_STEPS - 1, history[: MIN_STEPS - 1], 100) is None
    warning = loss_warning(len(history), history, 100)
    assert warning is not None and "still at chance" in warning


def test_a_loss_below_chance_that_has_stopped_moving_is_reported():
    history = [1.5 + 0.01 * math.cos(i) for i in range(500)]  # 10 classes: chance 2.30
    warning = loss_warning(500, history, 10)
    assert warning is not None and "has not moved" in warning


def test_a_diverged_loss_is_reported():
    warning = loss_warning(12, [2.3, 2.2, float("nan")], 10)
    assert warning is not None and "diverged" in warning


@pytest.mark.parametrize(
    "kwargs, message",
    [({"num_classes": 1}, "num_classes"), ({"step": -1}, "step"), ({"window": 0}, "window")],
)
def test_bad_arguments_are_clear_errors(kwargs, message):
    args = {"step": 10, "loss_history": [2.0], "num_classes": 10, **kwargs}
    with pytest.raises(ValueError, match=message):
        loss_warning(**args)
