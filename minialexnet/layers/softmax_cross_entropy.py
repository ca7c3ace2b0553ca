"""Softmax followed by the multinomial logistic (cross-entropy) loss (§3.5, §5)."""

from __future__ import annotations

import numpy as np

from minialexnet.checks import check_array, check_labels
from minialexnet.layers.base import Layer


class SoftmaxCrossEntropy(Layer):
    """Mean cross-entropy of the softmax of ``logits`` against integer ``labels``.

    The last layer of AlexNet "is fed to a 1000-way softmax which produces a distribution
    over the 1000 class labels"; training "maximizes the multinomial logistic regression
    objective" (§3.5), i.e. minimizes, over a batch of N examples::

        p_ik = exp(z_ik) / sum_m exp(z_im)                  (softmax)
        loss = -(1/N) sum_i log p_{i, y_i}

    **Numerical stability.** ``exp(z)`` overflows float32 for ``z > 88``, so the log-softmax
    is computed with the log-sum-exp trick, subtracting each row's maximum first::

        log p_ik = (z_ik - max_m z_im) - log sum_m exp(z_im - max_m z_im)

    every exponent is then <= 0 and the sum lies in [1, K], so logits of any magnitude
    (1e4 and beyond) give a finite loss and gradient.

    ``forward(logits, labels) -> float``: ``logits`` (N, K) float32/float64, ``labels`` (N,)
    integers in [0, K). Returns the mean loss as a Python float. Afterwards ``probs`` holds
    the softmax (N, K) in the logits' dtype, for accuracy and top-5 metrics.
    ``backward() -> dlogits`` (N, K) in the logits' dtype: ``(probs - onehot(labels)) / N``,
    the gradient of the *mean* loss.
    """

    def __init__(self) -> None:
        super().__init__()
        self.probs: np.ndarray | None = None

    def forward(self, logits: np.ndarray, labels: np.ndarray, train: bool = False) -> float:
        check_array(logits, "SoftmaxCrossEntropy", ndim=2, layout="(N, K) logits")
        n, num_classes = logits.shape
        labels = check_labels(labels, n, num_classes, "SoftmaxCrossEntropy")
        shifted = logits - logits.max(axis=1, keepdims=True)  # every entry <= 0
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        self.probs = np.exp(log_probs)
        self._cache = (self.probs, labels)
        # Accumulate the mean in float64: a float32 sum over a big batch would lose digits.
        return float(-log_probs[np.arange(n), labels].mean(dtype=np.float64))

    def backward(self) -> np.ndarray:
        """``dlogits = (probs - onehot(labels)) / N``, (N, K) in the logits' dtype."""
        probs, labels = self._cached()
        n = probs.shape[0]
        dlogits = probs.copy()  # never modify the cached probabilities
        dlogits[np.arange(n), labels] -= 1
        dlogits /= n
        return dlogits

    def output_shape(self, input_shape: tuple) -> tuple:
        """The loss is a scalar."""
        return ()

    def __call__(self, logits: np.ndarray, labels: np.ndarray, train: bool = False) -> float:
        return self.forward(logits, labels, train=train)
