"""Fine-tuning, the everyday use of AlexNet-style networks: a pretrained AlexNet, a new fc8
for your own classes, and the layers below it frozen or not.

    pretrained, ckpt = load_model("bvlcalexnet-12.onnx")         # or a checkpoint .npz
    model = new_classifier(pretrained, train_set.class_names, rng)
    model.freeze("fc7")                                          # feature extraction
    stats = fine_tuning_stats(pretrained, ckpt, train_set)
    fit(model, train_set, val_set, TrainConfig(epochs=10, batch_size=32, lr=0.001,
                                               schedule=None), stats=stats)

``python -m minialexnet.train --pretrained FILE --data-dir my_photos/ [--freeze LAYER]`` does
exactly this. The new network keeps the pretrained one's table, preprocessing (BVLC: BGR
minus a mean pixel; ours: RGB minus the training mean image) and input size; only fc8 is new
(drawn as the table's fc8 row says: N(0, 0.01^2), bias 0) and its class names are the data's.
"""

from __future__ import annotations

from minialexnet.data.dataset import DatasetStats, compute_stats
from minialexnet.model import AlexNet
from minialexnet.training.model_files import needs_mean_image

#: The fine-tuning recipe (the usual one, e.g. Caffe's "fine-tuning CaffeNet for style
#: recognition" example): a learning rate 10x below training from scratch, so the pretrained
#: features are adjusted rather than overwritten, a constant rate, and few epochs (a few
#: hundred photos are learnt in 10). ``batch_size`` is capped at the training set's size.
FINE_TUNING_DEFAULTS = {
    "epochs": 10,
    "batch_size": 32,
    "lr": 0.001,
    "schedule": "none",
    "step_size": 10,
}


def new_classifier(pretrained: AlexNet, class_names, rng=None) -> AlexNet:
    """A copy of ``pretrained`` whose fc8 is a new layer for ``class_names``.

    Every other parameter is copied bit for bit; preprocessing, table and input size are
    ``pretrained``'s. ``rng`` draws the new fc8 (and becomes the dropout generator).
    """
    class_names = list(class_names)
    config = dict(pretrained.config, num_classes=len(class_names), class_names=class_names)
    model = AlexNet.from_config(config, rng=rng)
    state = model.state_dict()
    state.update(
        (name, p) for name, p in pretrained.state_dict().items() if not name.startswith("fc8.")
    )
    model.load_state_dict(state)
    return model


def fine_tuning_stats(pretrained: AlexNet, ckpt, train_set, log=print) -> DatasetStats:
    """The statistics a fine-tuning run trains with: the new data's RGB PCA (§4.1 colour
    noise) and, for a network that subtracts a mean image, the pretrained network's own
    (its checkpoint's), since its first layer learnt on inputs centred by it.

    Without one (an ONNX file of one of our networks) or at another image size, the new
    training set's mean image is used instead, and ``log`` says so.
    """
    stats = compute_stats(train_set)
    if not needs_mean_image(pretrained.config):
        return stats  # a mean pixel: the mean image is unused
    own = getattr(ckpt, "stats", None)
    if own is not None and own.image_size == stats.image_size:
        return DatasetStats(
            mean=own.mean, pca_eigvals=stats.pca_eigvals, pca_eigvecs=stats.pca_eigvecs
        )
    log(
        "note: the pretrained file holds no mean image of this size; subtracting the new "
        "training set's mean image instead"
    )
    return stats
