"""Small helpers shared by several test modules (imported as ``from helpers import ...``).

Imports of the package stay inside the functions: the CUDA test modules import this file
before ``cuda_sim`` has decided whether the process runs under the CUDA simulator.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys

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
