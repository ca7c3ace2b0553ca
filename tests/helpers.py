"""Small helpers shared by several test modules (imported as ``from helpers import ...``).

Imports of the package stay inside the functions: the CUDA test modules import this file
before ``cuda_sim`` has decided whether the process runs under the CUDA simulator.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_python(
    code: str, *, set_env: dict | None = None, unset_env=(), timeout: float = 300
) -> str:
    """Run ``code`` in a fresh interpreter (this one) from the repository root; return its
    standard output. The test fails, with the child's standard error, if it exits non-zero.

    A fresh process is what tests of import-time behaviour need: environment variables read
    once at import, Numba's choice of the CUDA driver or simulator, the threading layer.
    """
    env = {k: v for k, v in os.environ.items() if k not in unset_env}
    env.update(set_env or {})
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stdout


def replica(engine) -> dict:
    """Host copies of an engine's parameters and momentum (after ``sync_to_host``), keyed
    ``"param conv1.W"`` / ``"momentum conv1.W"``."""
    engine.sync_to_host()
    state = {f"param {name}": p.copy() for name, p, _ in engine.model.named_parameters()}
    for name, v in engine.optimizer.velocity.items():
        state[f"momentum {name}"] = np.array(v, copy=True)
    return state


class NaNBatchEngine:
    """Wraps an engine: the images of submitted batch ``bad`` (1-based, counted over the
    run) become NaN, so that batch's loss is NaN and the next ones are finite again.
    ``before[k - 1]`` holds ``replica(engine)`` taken just before batch k was submitted.
    Everything else goes to the wrapped engine (for ``fit``: patch ``trainer.make_engine``)."""

    def __init__(self, engine, bad: int) -> None:
        self.engine, self.bad, self.before = engine, bad, []

    def submit_step(self, x, labels):
        self.before.append(replica(self.engine))
        if len(self.before) == self.bad:
            x = np.full(x.shape, np.nan, dtype=np.float32)
        return self.engine.submit_step(x, labels)

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.engine.close()


def train_steps(engine, batches) -> tuple[list, dict]:
    """``engine.train_step`` on each of ``batches`` in turn: the ``StepResult``s, and
    ``replica(engine)`` after the last (the reference of
    ``check_submitted_steps_and_sticky_divergence``)."""
    results = [engine.train_step(x, labels) for x, labels in batches]
    return results, replica(engine)


def mean_subtracted_images(n: int, seed: int = 0, size: int = 31) -> np.ndarray:
    """n random (3, size, size) float32 images; mean-subtracted pixels are tens of units (§2),
    large enough for LRN to matter."""
    return (np.random.default_rng(seed).standard_normal((n, 3, size, size)) * 30).astype(
        np.float32
    )


def two_train_steps(engine) -> SimpleNamespace:
    """The reference of the GPU engines' protocol tests: ``train_step`` on two batches of one
    image, with momentum, from ``engine``'s start: the batches, the two results and the
    parameters and momentum after the first and after the second step."""
    batches = [(mean_subtracted_images(1, seed=20 + k), np.array([k])) for k in range(2)]
    results, after_one = train_steps(engine, batches[:1])
    more, after_two = train_steps(engine, batches[1:])
    return SimpleNamespace(batches=batches, results=results + more, states=[after_one, after_two])


def check_submitted_steps_and_sticky_divergence(late, batches, want, expected) -> None:
    """The ``submit_step`` contract (``minialexnet.engine``) on an engine ``late`` with
    momentum and two finite ``batches``; ``want`` and ``expected`` are what ``train_steps``
    gives for them on an engine that started equal. ``late`` submits both, then a batch of
    NaN images, then the first batch again, all four before reading any result (GPU
    engines: two pinned report buffers in turn, so the third step reuses the first's and
    the fourth the second's), and reads them in reverse order.

    - Submitted steps are train steps: the first two results are ``want`` (the second with
      the momentum of the first), every result is read once (four distinct losses) and
      ``result()`` gives the same object again.
    - A divergence is sticky: the NaN batch and the finite one queued behind it, before the
      host read the NaN, report ``updated`` False and change no parameter or momentum
      (``late`` ends exactly at ``expected``).
    - ``load_from_host()`` (a resume) clears it: the same batch then updates every array.

    One sequence for the three, as every step costs seconds under the CUDA simulator."""
    assert len(batches) == len(want) == 2 and all(step.updated for step in want)
    x, labels = batches[0]
    queue = [*batches, (np.full(x.shape, np.nan, dtype=np.float32), labels), (x, labels)]
    pending = [late.submit_step(images, targets) for images, targets in queue]
    got = [step.result() for step in reversed(pending)][::-1]
    assert got[:2] == want
    bad, after = got[2:]
    assert not bad.updated and math.isnan(bad.loss)
    assert not after.updated and math.isfinite(after.loss)
    assert len({step.loss for step in got}) == 4  # no report was read twice
    assert all(step.result() is result for step, result in zip(pending, got))
    state = replica(late)
    for key, value in expected.items():
        np.testing.assert_array_equal(state[key], value, err_msg=key)
    late.load_from_host()  # a resume: clears the divergence
    assert late.submit_step(x, labels).result().updated
    now = replica(late)
    assert all(not np.array_equal(now[key], value) for key, value in state.items())


def healthy_alexnet(
    variant: str, num_classes: int, seed: int = 0, *, positive_biases=(), **options
):
    """An ``AlexNet`` whose every layer is alive, so that comparisons prove something.

    Weights are redrawn from N(0, 2/fan_in) (He) and biases uniformly from [-1, 1]; the
    biases named in ``positive_biases`` (e.g. ``("fc6.b", "fc7.b")``) from [0.5, 1.5]. With
    the paper's 0.01 weights the small variants' signal shrinks tenfold per layer, and a
    comparison of near-constant logits or near-zero gradients would pass for wrong code.
    ``seed`` draws the initial network, ``seed + 1`` the new values.
    """
    from minialexnet.model import AlexNet

    net = AlexNet(num_classes, variant, rng=np.random.default_rng(seed), **options)
    rng = np.random.default_rng(seed + 1)
    for name, p, _ in net.named_parameters():
        if name.endswith(".W"):
            p[...] = rng.standard_normal(p.shape) * math.sqrt(2.0 / p[0].size)
        elif name in positive_biases:
            p[...] = rng.uniform(0.5, 1.5, p.shape)
        else:
            p[...] = rng.uniform(-1, 1, p.shape)
    return net


def engine_members() -> list[str]:
    """Every member of the engine protocol (``minialexnet.engine.Engine``): its annotated
    attributes and its methods, read from the class so a new member is checked too."""
    from minialexnet.engine import Engine

    methods = [
        name
        for name, value in vars(Engine).items()
        if callable(value) and not name.startswith("_")
    ]
    return sorted({*Engine.__annotations__, *methods})


#: One real ILSVRC image per ImageNet-100 class, a fixture beside the repository (tests that
#: use it skip cleanly without it; see ``needs_samples``).
SAMPLES = os.path.join(
    os.path.dirname(__file__), "..", "..", "shared", "data", "imagenet100-samples"
)


def check_weight_gradients_alone(layer, x, dy) -> None:
    """``layer.backward(dy, need_dx=False)`` returns None and leaves the same weight gradients,
    bit for bit, as a full ``backward(dy)`` after ``forward(x)``."""
    layer.forward(x, train=True)
    assert layer.backward(dy).shape == x.shape
    full = {name: g.copy() for name, g in layer.grads.items()}
    assert layer.backward(dy, need_dx=False) is None
    assert set(layer.grads) == set(full) == {"W", "b"}
    for name, g in full.items():
        np.testing.assert_array_equal(layer.grads[name], g, err_msg=name)


def check_gradients_reused_in_place(make_layer, x, dy_first, dy_second) -> None:
    """A second ``backward`` writes its weight gradients into the arrays of the first (no
    fresh 151 MB dW for fc6 every step), with the numbers a fresh layer computes; arrays
    that no longer fit (another dtype, a frozen layer thawed) are replaced, not reused.

    ``make_layer()`` builds the same layer (same weights) each time it is called."""
    layer, fresh = make_layer(), make_layer()
    layer.forward(x, train=True)
    layer.backward(dy_first)
    first = dict(layer.grads)
    first_values = {name: g.copy() for name, g in first.items()}
    layer.backward(dy_second)
    fresh.forward(x, train=True)
    fresh.backward(dy_second)
    for name, g in layer.grads.items():
        assert g is first[name], f"{name}: a new array instead of last call's"
        np.testing.assert_array_equal(g, fresh.grads[name], err_msg=name)
        assert not np.array_equal(g, first_values[name]), f"{name}: not overwritten"

    layer.astype(np.float64)  # gradcheck's copy: float64 grads, still reused afterwards
    layer.forward(x.astype(np.float64), train=True)
    layer.backward(dy_second.astype(np.float64))
    assert all(g.dtype == np.float64 for g in layer.grads.values())

    layer.frozen = True
    layer.backward(dy_second.astype(np.float64))
    assert layer.grads == {}
    layer.frozen = False
    layer.backward(dy_second.astype(np.float64))
    fresh.astype(np.float64)
    fresh.forward(x.astype(np.float64), train=True)
    fresh.backward(dy_second.astype(np.float64))
    for name, g in layer.grads.items():
        np.testing.assert_array_equal(g, fresh.grads[name], err_msg=name)
