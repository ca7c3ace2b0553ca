"""Early warnings from the training loss: is this run learning at all?

A run of the paper's network on ImageNet-100 takes days; whether it is learning shows in its
first few hundred steps. ``loss_warning`` looks at the mini-batch losses so far and returns a
sentence for the progress lines when they look wrong, or ``None``:

- **far above chance**: a network that guesses uniformly has a cross-entropy of
  ``ln(num_classes)`` (4.61 for 100 classes). A loss well above that (more than
  ``ln C + max(ln C / 2, 1)``, 6.91 for 100 classes, averaged over the last steps) means
  confident wrong answers: the
  learning rate is too high for this initialisation, or the labels do not match the images.
  (Issue 16: the paper's initialisation on 100 classes started at 10.2.)
- **stuck at chance**: after ``min_steps`` steps the loss is still within 3% of
  ``ln(num_classes)`` or above it. The network predicts the class frequencies and nothing
  else; with the paper's biases of 1 this can last for a long time (the ``AlexNet``
  docstring measures why).
- **not moving**: after ``min_steps`` steps the recent losses are within 2% of the first
  ones.
- **not finite**: the last loss is NaN or infinite.

The function is pure (no printing, no state), so the trainer decides how often to ask; asking
after every progress line is cheap (it reads at most ``2 * window`` losses).
"""

from __future__ import annotations

import math

from minialexnet.checks import check_positive_int

MIN_STEPS = 300
"""Steps after which a loss at chance, or one that has not moved, is worth a warning."""
WINDOW = 20
"""Losses averaged at each end of the history (one mini-batch loss is noisy)."""
CHANCE_MARGIN = 0.03
"""Within this fraction of ln(num_classes), or above it, the loss counts as "at chance"."""
MOVED_FRACTION = 0.02
"""A change smaller than this fraction of the first losses counts as "has not moved"."""

_WHAT_TO_TRY = (
    "try a smaller learning rate (--lr, e.g. a tenth), the BVLC initialisation "
    "(--init bvlc: biases 0.1 instead of the paper's 1), and check that the "
    "labels match the images (train on a few images first: the loss must fall "
    "towards 0)"
)


def _mean(values) -> float:
    return sum(values) / len(values)


def loss_warning(
    step: int, loss_history, num_classes: int, *, min_steps: int = MIN_STEPS, window: int = WINDOW
) -> str | None:
    """A warning about the training loss after ``step`` steps, or ``None`` if it looks sane.

    Arguments:
        step: training steps done so far (the trainer's counter; ``len(loss_history)`` when
            every step's loss is recorded).
        loss_history: the mini-batch losses so far, oldest first (any sequence of floats; only
            the first and last ``window`` are read).
        num_classes: the classes of the task, >= 2 (chance is ``ln(num_classes)``).
        min_steps: steps before "stuck at chance" and "not moving" are checked.
        window: losses averaged at each end.

    Returns one sentence that says what is wrong and what to try, or ``None``.
    """
    num_classes = check_positive_int(num_classes, "num_classes", minimum=2)
    step = check_positive_int(step, "step", minimum=0)
    window = check_positive_int(window, "window")
    losses = list(loss_history)
    if not losses:
        return None
    chance = math.log(num_classes)
    if not math.isfinite(losses[-1]):
        return (
            f"the training loss is {losses[-1]} at step {step}: the run has diverged; "
            + _WHAT_TO_TRY
        )
    recent = _mean(losses[-window:])
    ceiling = chance + max(chance / 2, 1.0)
    if recent > ceiling:
        return (
            f"the training loss ({recent:.2f}, mean of the last {min(window, len(losses))} "
            f"steps) is far above chance, ln({num_classes}) = {chance:.2f}: the network is "
            f"confidently wrong; " + _WHAT_TO_TRY
        )
    if step < min_steps or len(losses) < 2 * window:
        return None
    if recent >= chance * (1 - CHANCE_MARGIN):
        return (
            f"after {step} steps the training loss ({recent:.2f}) is still at chance, "
            f"ln({num_classes}) = {chance:.2f}: the network is not learning yet; " + _WHAT_TO_TRY
        )
    first = _mean(losses[:window])
    if abs(first - recent) < MOVED_FRACTION * first:
        return (
            f"after {step} steps the training loss has not moved ({first:.2f} -> "
            f"{recent:.2f}); " + _WHAT_TO_TRY
        )
    return None
