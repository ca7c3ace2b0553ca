"""Overfit checks (issue 16): the network, its initialisation and §5's SGD can learn at all.

The first thing to check before a long run: with augmentation and dropout off, a network must
drive the loss on one fixed batch close to zero; if it cannot memorise a handful of images it
cannot learn ImageNet either. Each test trains on one fixed batch of the built-in shapes
(``make_synthetic``: 10 classes, centre crops, the training mean subtracted as in §2), with
``dropout=0`` and ``minialexnet.optim.SGD`` at the paper's momentum 0.9 and weight decay
0.0005, and stops as soon as the loss is below ``TARGET``.

CPU time, and the choices made for it (CI has two cores):

- "mini": 32 images at 59x59, lr 0.003 (its recipe); it gets there in well under a minute.
- "paper": 227x227 costs ~0.1 s per image and step on two idle cores, so the default run
  uses 8 images (0.8 s a step, a minute or two at most) instead of the issue's 32; memorising
  8 images of 10 classes exercises the same thing (every layer's gradient, the
  initialisation's scales, the update), only with fewer examples. The 32-image version is
  ``MINIALEXNET_LONG_TESTS=1`` (a few minutes).
- The paper network is checked with ``init="bvlc"`` (biases 0.1). With ``init="paper"``
  (biases 1) and lr 0.01 it cannot memorise a fixed batch: measured on 16 images, the loss
  went 2.38 -> 1.01 at step 70, then 1.98, 195 and NaN by step 100, while "bvlc" had 16/16
  right and a loss of 0.0015 at step 20. The ``AlexNet`` docstring and notebook 12 measure
  why (the biases of 1 make the inputs of fc6-fc8 large and nearly the same for every image,
  so lr 0.01 is far beyond the stable step for them). A test of that failure would assert
  an accident of one seed, so there is none; the finding is documented instead.
"""

import os

import numpy as np
import pytest

from minialexnet.data.augment import center_crop
from minialexnet.data.dataset import compute_stats
from minialexnet.data.synthetic import make_synthetic
from minialexnet.engine import CPUEngine
from minialexnet.model import AlexNet
from minialexnet.optim import SGD

TARGET = 0.05
LONG = os.environ.get("MINIALEXNET_LONG_TESTS") == "1"
long_test = pytest.mark.skipif(not LONG, reason="long CPU test: set MINIALEXNET_LONG_TESTS=1")


def fixed_batch(images: int, image_size: int, crop: int):
    """``images`` centre crops of the built-in shapes, mean-subtracted, and their labels."""
    data = make_synthetic("train", n_per_class=-(-images // 10), image_size=image_size, seed=0)
    stats = compute_stats(data)
    return center_crop(data.images[:images], crop, stats), data.labels[:images]


def overfit(variant: str, init: str, images: int, lr: float, max_steps: int) -> list:
    """Train on one fixed batch until the loss is below ``TARGET``; the losses, in order."""
    image_size = {"paper": 256, "mini": 64}[variant]
    net = AlexNet(10, variant, rng=np.random.default_rng(0), dropout=0.0, init=init)
    x, y = fixed_batch(images, image_size, net.input_size)
    engine = CPUEngine(net, SGD(net, lr=lr, momentum=0.9, weight_decay=0.0005))
    losses = []
    for _ in range(max_steps):
        losses.append(engine.train_step(x, y).loss)
        if losses[-1] < TARGET:
            break
    return losses


def assert_memorised(losses: list, images: int, max_steps: int) -> None:
    assert losses[0] == pytest.approx(np.log(10), abs=0.3)  # starts at chance
    assert losses[-1] < TARGET, (
        f"the loss on {images} fixed images is still {losses[-1]:.3f} after {len(losses)} "
        f"steps (max {max_steps}); the last ten: {np.round(losses[-10:], 3)}"
    )


def test_mini_memorises_one_batch_of_32():
    losses = overfit("mini", "paper", images=32, lr=0.003, max_steps=300)
    assert_memorised(losses, 32, 300)


def test_paper_network_with_bvlc_init_memorises_one_batch_of_8():
    losses = overfit("paper", "bvlc", images=8, lr=0.01, max_steps=150)
    assert_memorised(losses, 8, 150)


@long_test
def test_paper_network_with_bvlc_init_memorises_one_batch_of_32():
    losses = overfit("paper", "bvlc", images=32, lr=0.01, max_steps=300)
    assert_memorised(losses, 32, 300)
