"""Finite-difference gradient checks, used by the tests and the notebooks.

The analytic gradient of a layer (its ``backward``) is compared with central differences

    df/dx_i ~ (f(x + eps e_i) - f(x - eps e_i)) / (2 eps)

computed in float64 on a copy of the layer, where ``f(x) = sum(forward(x) * dy)`` for a random
upstream gradient ``dy``. A random ``dy`` (rather than all ones) makes every output count with
a different weight, so a gradient routed to the wrong place cannot cancel out.

The error reported is ``||analytic - numeric|| / max(||analytic|| + ||numeric||, tiny)``: about
1e-9 or less in float64 for a correct layer, around 1e-1 or more for a wrong one.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np

_TINY = 1e-30


def relative_error(analytic: np.ndarray, numeric: np.ndarray) -> float:
    """``||a - n|| / max(||a|| + ||n||, tiny)`` over all entries (0 when both are zero)."""
    a = np.asarray(analytic, dtype=np.float64)
    n = np.asarray(numeric, dtype=np.float64)
    return float(np.linalg.norm(a - n) / max(np.linalg.norm(a) + np.linalg.norm(n), _TINY))


def _entries(size: int, max_entries: int | None, rng: np.random.Generator) -> np.ndarray:
    if max_entries is None or size <= max_entries:
        return np.arange(size)
    return np.sort(rng.choice(size, size=max_entries, replace=False))


def numerical_gradient(
    f: Callable[[], float], x: np.ndarray, eps: float = 1e-6, entries: np.ndarray | None = None
) -> np.ndarray:
    """Central differences of the scalar ``f()`` with respect to the float64 array ``x``.

    ``x`` is perturbed in place and restored. Only the flat indices in ``entries`` are
    computed (default: all); the others are left at 0.
    """
    if x.dtype != np.float64:
        raise TypeError(f"numerical_gradient needs a float64 array, got {x.dtype}")
    grad = np.zeros(x.shape, dtype=np.float64)
    flat_x, flat_g = x.reshape(-1), grad.reshape(-1)
    if not np.shares_memory(flat_x, x):
        raise ValueError("numerical_gradient needs a contiguous array to perturb in place")
    for i in range(x.size) if entries is None else entries:
        old = flat_x[i]
        flat_x[i] = old + eps
        plus = f()
        flat_x[i] = old - eps
        minus = f()
        flat_x[i] = old
        flat_g[i] = (plus - minus) / (2.0 * eps)
    return grad


def _replay_randomness(obj):
    """A function that resets every ``rng`` attribute below ``obj`` to its present state.

    Dropout draws a fresh mask on each ``forward(train=True)``; replaying the generator makes
    every evaluation of ``f`` see the same mask, so dropout can be checked in training mode.
    """
    gens = []
    seen = set()

    def walk(o):
        if id(o) in seen:
            return
        seen.add(id(o))
        if isinstance(o, np.random.Generator):
            gens.append((o, copy.deepcopy(o.bit_generator.state)))
        elif isinstance(o, (list, tuple)):
            for item in o:
                walk(item)
        elif isinstance(o, dict):
            for item in o.values():
                walk(item)
        elif hasattr(o, "__dict__"):
            for item in vars(o).values():
                walk(item)

    walk(obj)

    def replay():
        for gen, state in gens:
            gen.bit_generator.state = copy.deepcopy(state)

    return replay


def check_layer(
    layer,
    x: np.ndarray,
    rng: np.random.Generator | None = None,
    eps: float = 1e-6,
    train: bool = False,
    max_entries: int | None = None,
) -> dict[str, float]:
    """Relative errors of ``layer.backward`` against central differences, per input.

    Parameters
    ----------
    layer : a ``minialexnet.layers.Layer`` (left untouched: a float64 copy is checked)
    x : array of the layer's input shape, e.g. ``(N, C, H, W)``
    rng : generator for the random upstream gradient ``dy ~ N(0, 1)`` and entry sampling
    eps : finite-difference step (float64)
    train : forward mode; with ``train=True`` random layers replay the same randomness
    max_entries : check at most this many randomly chosen entries of each array

    Returns ``{"x": err, "W": err, "b": err, ...}`` (one key per parameter).
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    layer = copy.deepcopy(layer).astype(np.float64)
    x = np.array(x, dtype=np.float64, copy=True)
    replay = _replay_randomness(layer)

    replay()
    y = layer.forward(x, train=train)
    dy = rng.standard_normal(y.shape)
    dx = layer.backward(dy.copy())
    analytic = {"x": dx, **{name: g.copy() for name, g in layer.grads.items()}}

    def f() -> float:
        replay()
        return float(np.sum(layer.forward(x, train=train) * dy))

    targets = {"x": x, **layer.params}
    errors = {}
    for name, array in targets.items():
        entries = _entries(array.size, max_entries, rng)
        numeric = numerical_gradient(f, array, eps, entries)
        errors[name] = relative_error(
            analytic[name].reshape(-1)[entries], numeric.reshape(-1)[entries]
        )
    return errors


def check_loss(loss, logits: np.ndarray, labels: np.ndarray, eps: float = 1e-6) -> float:
    """Relative error of ``loss.backward()`` against central differences of ``loss.forward``."""
    loss = copy.deepcopy(loss)
    z = np.array(logits, dtype=np.float64, copy=True)
    loss.forward(z, labels)
    analytic = loss.backward()
    numeric = numerical_gradient(lambda: float(loss.forward(z, labels)), z, eps)
    return relative_error(analytic, numeric)


def check_model(
    model,
    x: np.ndarray,
    labels: np.ndarray,
    loss=None,
    rng: np.random.Generator | None = None,
    eps: float = 1e-6,
    max_entries: int | None = 20,
) -> dict[str, float]:
    """Whole-network check: ``loss(model.forward(x), labels)`` against every parameter and x.

    ``model`` follows the model protocol (``forward``, ``backward``, ``named_parameters()``
    yielding ``(name, param, grad)``, ``astype``). ``max_entries`` random entries of each
    array are checked (all of them with ``None``). Returns ``{"x": err, "conv1.W": err, ...}``.
    """
    from minialexnet.layers import SoftmaxCrossEntropy

    rng = rng if rng is not None else np.random.default_rng(0)
    model = copy.deepcopy(model).astype(np.float64)
    loss = SoftmaxCrossEntropy() if loss is None else copy.deepcopy(loss)
    x = np.array(x, dtype=np.float64, copy=True)

    loss.forward(model.forward(x, train=False), labels)
    dx = model.backward(loss.backward())
    analytic = {"x": dx, **{name: g.copy() for name, _, g in model.named_parameters()}}

    def f() -> float:
        return float(loss.forward(model.forward(x, train=False), labels))

    targets = {"x": x, **{name: p for name, p, _ in model.named_parameters()}}
    errors = {}
    for name, array in targets.items():
        entries = _entries(array.size, max_entries, rng)
        numeric = numerical_gradient(f, array, eps, entries)
        errors[name] = relative_error(
            analytic[name].reshape(-1)[entries], numeric.reshape(-1)[entries]
        )
    return errors
