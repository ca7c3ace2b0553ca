"""Training AlexNet with the paper's recipe (§5): the trainer over the one engine protocol.

==========================  ==========================================================
module                      what
==========================  ==========================================================
``config``                  ``TrainConfig`` (defaults: the paper's §5), ``ARCH_DEFAULTS``
``engines``                 ``make_engine``: the one place that chooses the hardware
``trainer``                 ``fit``: the epoch loop, validation, saving each epoch
``checkpoint``              ``.npz`` checkpoints, written atomically, read without pickle
``resume``                  what a checkpoint stores to continue a run bit-identically
``runlog``                  ``metrics.csv`` and the training-curve plot
``evaluation``              a checkpoint's top-1/top-5 error (centre and ten crops, §4.1)
==========================  ==========================================================

    from minialexnet.training import TrainConfig, fit
    history = fit(model, train_set, val_set, TrainConfig(epochs=15, batch_size=32, lr=0.003))
"""

from minialexnet.training.config import TrainConfig
from minialexnet.training.engines import make_engine
from minialexnet.training.trainer import TrainingDiverged, fit

__all__ = ["TrainConfig", "TrainingDiverged", "fit", "make_engine"]
