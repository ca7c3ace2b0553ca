"""Top-k error rates and evaluation of a trained network (§4.1, §6).

The paper reports two numbers: the *top-1* error (the most probable class is wrong) and the
*top-5* error (the true class is not among the five most probable). At test time it averages
the softmax over ten 227x227 patches of each 256x256 image, the four corners and the centre
and their horizontal reflections (§4.1); ``evaluate(..., crops="ten")`` does the same,
``crops="center"`` uses only the centre crop (the usual validation during training).
"""

from __future__ import annotations

import numpy as np

from minialexnet.preprocessing import preprocessing_of

CROPS = ("center", "ten")


def topk_correct(scores: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Boolean ``(N,)``: is ``labels[n]`` among the ``k`` largest of ``scores[n]``?

    ``scores`` ``(N, C)`` are logits or probabilities (any monotone map gives the same
    answer); ``labels`` ``(N,)`` integers in ``[0, C)``. ``k`` is capped at ``C`` (with fewer
    than five classes the top-5 error is 0). A tie at the k-th place counts as correct only
    if the label wins it in ``np.argpartition``'s order, which is as good as any rule.
    """
    scores = np.asarray(scores)
    labels = np.asarray(labels)
    if scores.ndim != 2 or labels.shape != (scores.shape[0],):
        raise ValueError(
            f"topk_correct expects scores (N, C) and labels (N,), got "
            f"{scores.shape} and {labels.shape}"
        )
    k = min(int(k), scores.shape[1])
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return (top == labels[:, None]).any(axis=1)


def topk_error(scores: np.ndarray, labels: np.ndarray, k: int = 1) -> float:
    """Fraction of examples whose label is *not* among the top ``k`` scores (0.0 .. 1.0)."""
    return float(1.0 - topk_correct(scores, labels, k).mean())


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of ``(N, C)`` logits, stable for any magnitude (subtracts the max)."""
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def predict_proba(
    model, dataset, stats, batch_size: int = 128, crops: str = "center", workers: int = 0
) -> np.ndarray:
    """Class probabilities ``(N, num_classes)`` float32 for every image of ``dataset``.

    Each image is prepared the way ``model`` expects (its ``config["preprocessing"]``, or an
    engine's model's: by default minus the training mean image of ``stats``, §2; BVLC's nets:
    BGR minus a mean pixel, ``stats`` may be ``None``) and cropped to ``model.input_size``:
    one centre crop (``crops="center"``), or the softmax averaged over the ten crops of §4.1
    (``crops="ten"``). Runs the network with ``train=False`` (no dropout).
    """
    from minialexnet.data.loader import BatchLoader

    if crops not in CROPS:
        raise ValueError(f"crops must be one of {CROPS}, got {crops!r}")
    loader = BatchLoader(
        dataset,
        batch_size,
        model.input_size,
        stats,
        train=False,
        crops=crops,
        workers=workers,
        preprocessing=preprocessing_of(model),
    )
    out = np.empty((len(dataset), model.num_classes), dtype=np.float32)
    start = 0
    for x, _ in loader:
        if crops == "ten":  # x: (B, 10, 3, S, S); average the ten softmaxes
            b = x.shape[0]
            p = softmax(model.forward(x.reshape(b * 10, *x.shape[2:]), train=False))
            p = p.reshape(b, 10, -1).mean(axis=1)
        else:
            b = x.shape[0]
            p = softmax(model.forward(x, train=False))
        out[start : start + b] = p
        start += b
    return out


def evaluate(
    model, dataset, stats, batch_size: int = 128, crops: str = "center", workers: int = 0
) -> tuple[float, float]:
    """``(top1_err, top5_err)`` of ``model`` on ``dataset``, as fractions in [0, 1].

    See ``predict_proba`` for the crops; the paper's test protocol is ``crops="ten"``.
    """
    probs = predict_proba(model, dataset, stats, batch_size, crops, workers)
    return topk_error(probs, dataset.labels, 1), topk_error(probs, dataset.labels, 5)
