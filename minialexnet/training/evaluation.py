"""The top-1 and top-5 error of a trained checkpoint, with the paper's test protocol (§4.1, §6).

``evaluate_checkpoint`` is what both ``python -m minialexnet.evaluate`` and
``python -m minialexnet.train --resume CKPT --evaluate`` run: the checkpoint's own mean image
(§2) is subtracted, never one recomputed from the evaluation data, and its class list must be
the data's. The paper's one-CNN result on ILSVRC-2012 val is 40.7% top-1 and 18.2% top-5
error with ten crops (Table 2).
"""

from __future__ import annotations

from minialexnet.metrics import CROPS, evaluate
from minialexnet.training.checkpoint import CheckpointError
from minialexnet.training.model_files import needs_mean_image


def evaluate_checkpoint(
    engine, ckpt, dataset, path, *, crops=CROPS, batch_size: int = 128, workers: int = 0
) -> dict:
    """``{crops: {"top1_err", "top5_err", "images"}}`` of a checkpoint's network on ``dataset``.

    Parameters
    ----------
    engine : the checkpoint's network on some hardware (``make_engine(model, None, ...)``)
    ckpt : the ``Checkpoint`` it was loaded from (its statistics and class names are used)
    dataset : the validation ``ImageDataset`` (uint8 ``(N, 3, S, S)``)
    path : the checkpoint's file name, for messages
    crops : any of ``"center"`` (one centre crop) and ``"ten"`` (the softmax averaged over the
        four corners, the centre and their reflections, §4.1), in the order given

    Raises ``CheckpointError`` when the checkpoint does not fit the data (no mean image,
    other classes, another image size).
    """
    check_checkpoint_fits(ckpt, dataset, path)
    results = {}
    for crop in crops:
        top1, top5 = evaluate(
            engine, dataset, ckpt.stats, batch_size=batch_size, crops=crop, workers=workers
        )
        results[crop] = {"top1_err": top1, "top5_err": top5, "images": len(dataset)}
    return results


def check_checkpoint_fits(ckpt, dataset, path) -> None:
    """``CheckpointError`` unless ``ckpt`` can be evaluated on ``dataset`` (see above)."""
    check_has_stats(ckpt, path)
    check_classes(ckpt.meta, dataset, path)
    size = ckpt.stats.image_size if ckpt.stats is not None else ckpt.meta.get("image_size")
    if size is not None and dataset.image_size != size:
        raise CheckpointError(
            f"the data is {dataset.image_size} px but {path} was trained on {size} px images"
        )


def check_has_stats(ckpt, path) -> None:
    """``CheckpointError`` unless ``ckpt`` holds the training set's mean image (§2), when its
    network subtracts one (a network that subtracts a mean pixel, like BVLC's, needs none)."""
    if ckpt.stats is None and needs_mean_image(ckpt.meta["model"]):
        raise CheckpointError(
            f"{path} holds no training-set mean image (data/mean), which "
            f"evaluation subtracts (§2); save it with stats=... (ONNX files "
            f"do not store it: evaluate the training checkpoint instead)"
        )


def check_classes(meta: dict, dataset, path) -> None:
    """``CheckpointError`` unless the checkpoint's classes are the dataset's, in order."""
    trained = meta.get("class_names")
    if trained is None:
        if int(meta["num_classes"]) != dataset.num_classes:
            raise CheckpointError(
                f"{path} predicts {meta['num_classes']} classes, the data "
                f"has {dataset.num_classes}"
            )
        return
    if list(trained) != list(dataset.class_names):
        only_ckpt = sorted(set(trained) - set(dataset.class_names))
        only_data = sorted(set(dataset.class_names) - set(trained))
        detail = (
            f"{len(only_ckpt)} only in the checkpoint (e.g. {only_ckpt[:3]}), "
            f"{len(only_data)} only in the data (e.g. {only_data[:3]})"
            if only_ckpt or only_data
            else "same names in another order"
        )
        raise CheckpointError(
            f"{path} was trained on other classes than this data "
            f"({len(trained)} classes, the data has {dataset.num_classes}): "
            f"{detail}; "
            f"pass the --data-dir/--subset it was trained on"
        )
