"""Softmax + cross-entropy loss (§3.5)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minialexnet.gradcheck import check_loss
from minialexnet.layers import SoftmaxCrossEntropy


def test_two_by_three_by_hand():
    # Row 0: z = (1, 2, 3), label 2: loss = log(e^-2 + e^-1 + 1) = 0.40760596444438013
    # Row 1: z = (1, 1, 1), label 0: loss = log 3               = 1.0986122886681098
    loss = SoftmaxCrossEntropy()
    logits = np.array([[1.0, 2.0, 3.0], [1.0, 1.0, 1.0]])
    value = loss.forward(logits, np.array([2, 0]))
    assert isinstance(value, float)
    assert value == pytest.approx((0.40760596444438013 + 1.0986122886681098) / 2, rel=1e-14)
    p0 = np.array([0.09003057317038046, 0.24472847105479767, 0.6652409557748219])
    np.testing.assert_allclose(loss.probs, [p0, [1 / 3, 1 / 3, 1 / 3]], rtol=1e-14)
    expected = np.array([p0 - [0, 0, 1], [1 / 3 - 1, 1 / 3, 1 / 3]]) / 2  # (p - onehot) / N
    np.testing.assert_allclose(loss.backward(), expected, rtol=1e-14)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_logits_of_magnitude_1e4(dtype):
    # exp(1e4) overflows in any float; the log-sum-exp trick never computes it.
    # Row 0: label 1 sits 1e4 below the max: loss = 1e4 + log(1 + e^-1e4 + ...) = 1e4.
    # Row 1: max 1e4 + 1, label 2 one below it: loss = 1 + log(1 + e^-1) = 1.3132616875182228
    logits = np.array([[1e4, 0.0, -1e4], [-1e4, 1e4 + 1, 1e4]], dtype=dtype)
    loss = SoftmaxCrossEntropy()
    # No overflow, no inf - inf, no log(0) anywhere (exp(-2e4) underflowing to 0 is fine).
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        value = loss.forward(logits, np.array([1, 2]))
        dlogits = loss.backward()
    assert value == pytest.approx((1e4 + 1.3132616875182228) / 2, rel=1e-6)
    assert dlogits.dtype == dtype and np.all(np.isfinite(dlogits))
    p1 = np.array([0.0, 1 / (1 + np.exp(-1)), np.exp(-1) / (1 + np.exp(-1))])
    expected = np.array([[1.0, -1.0, 0.0], p1 - [0, 0, 1]]) / 2
    np.testing.assert_allclose(dlogits, expected, atol=1e-6)


def log_sum_exp(z):
    """A different route to the same number: pairwise np.logaddexp, in float64."""
    return np.logaddexp.reduce(z.astype(np.float64), axis=1)


@given(
    st.integers(1, 5),
    st.integers(2, 12),
    st.floats(1e-2, 1e4),
    st.integers(0, 2**32 - 1),
    st.sampled_from([np.float32, np.float64]),
)
def test_loss_and_gradient_for_any_magnitude(n, k, magnitude, seed, dtype):
    rng = np.random.default_rng(seed)
    logits = (rng.standard_normal((n, k)) * magnitude).astype(dtype)
    labels = rng.integers(0, k, size=n)
    loss = SoftmaxCrossEntropy()
    value = loss.forward(logits, labels)
    expected = np.mean(log_sum_exp(logits) - logits[np.arange(n), labels].astype(np.float64))
    tol = 1e-5 if dtype == np.float32 else 1e-12
    assert value == pytest.approx(expected, rel=tol, abs=tol)
    probs = loss.probs
    assert probs.dtype == dtype
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=tol)
    reference = np.exp(logits.astype(np.float64) - log_sum_exp(logits)[:, None])
    reference[np.arange(n), labels] -= 1
    dlogits = loss.backward()
    assert dlogits.dtype == dtype and np.all(np.isfinite(dlogits))
    np.testing.assert_allclose(dlogits, reference / n, atol=tol)


@given(st.integers(1, 4), st.integers(2, 7), st.integers(0, 2**32 - 1))
def test_gradient_matches_finite_differences(n, k, seed):
    """Logits of unit scale: with scale 3, a pair 12+ apart (1 draw in a few thousand) makes
    a gradient of ~1e-6 whose central differences are dominated by the rounding of the
    log-sum-exp (~6 x 2e-16 / eps): 4e-5 relative error was seen in CI. At unit scale the worst
    of 6,000 random draws was 1.4e-9, far below the tolerance; large logits are tested for
    stability separately."""
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((n, k))
    assert check_loss(SoftmaxCrossEntropy(), logits, rng.integers(0, k, size=n)) < 1e-7


def test_inputs_untouched_and_backward_repeatable():
    logits = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    before = logits.copy()
    loss = SoftmaxCrossEntropy()
    loss.forward(logits, np.array([0, 3, 1]))
    first = loss.backward()
    np.testing.assert_array_equal(loss.backward(), first)  # the cache was not modified
    np.testing.assert_array_equal(logits, before)


def test_bad_inputs_give_clear_errors():
    loss = SoftmaxCrossEntropy()
    with pytest.raises(RuntimeError, match="before forward"):
        loss.backward()
    logits = np.zeros((2, 3))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        loss.forward(logits, np.array([0, 3]))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        loss.forward(logits, np.array([-1, 0]))
    with pytest.raises(ValueError, match=r"integer labels of shape \(2,\)"):
        loss.forward(logits, np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"integer labels of shape \(2,\)"):
        loss.forward(logits, np.array([0, 1, 2]))
    with pytest.raises(ValueError, match=r"\(N, K\)"):
        loss.forward(np.zeros(3), np.array([0]))
