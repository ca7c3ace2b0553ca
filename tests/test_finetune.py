"""Fine-tuning and feature extraction end to end: train --pretrained (.npz and .onnx),
--freeze, export, evaluate/predict with either checkpoint form and with ONNX files, the
preprocessing a network carries, features, and clear errors for bad files.

The last test fine-tunes a network pretrained on the built-in shapes on the 100 real ILSVRC
images in ``<project>/../shared/data/imagenet100-samples``; it skips when they are absent.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from helpers import SAMPLES
from PIL import Image

from minialexnet import evaluate, export, features, load_onnx, predict, save_onnx, train
from minialexnet.data.cache import decode_image
from minialexnet.data.dataset import DatasetStats, ImageDataset, compute_stats
from minialexnet.data.loader import BatchLoader
from minialexnet.data.synthetic import NEW_SHAPE_NAMES, make_synthetic
from minialexnet.metrics import softmax
from minialexnet.model import AlexNet
from minialexnet.preprocessing import BVLC_PREPROCESSING, preprocess
from minialexnet.training import TrainConfig, fit
from minialexnet.training.checkpoint import load_checkpoint

onnx = pytest.importorskip("onnx")

needs_samples = pytest.mark.skipif(
    not os.path.isdir(SAMPLES), reason="../shared/data/imagenet100-samples not present"
)


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIALEXNET_CACHE", str(tmp_path / "default-cache"))


@pytest.fixture(scope="module")
def shapes_checkpoint(tmp_path_factory):
    """A mini AlexNet trained one short epoch on three of the built-in shapes."""
    out = tmp_path_factory.mktemp("shapes")
    train_set = make_synthetic("train", num_classes=3, n_per_class=8, seed=1)
    val_set = make_synthetic("val", num_classes=3, n_per_class=2, seed=1)
    model = AlexNet(3, "mini", rng=np.random.default_rng(0), class_names=train_set.class_names)
    fit(
        model,
        train_set,
        val_set,
        TrainConfig(epochs=1, batch_size=8, lr=0.003, schedule=None),
        output=str(out),
        log=lambda _: 0,
        meta={"data": "synthetic", "dataset": {"kind": "synthetic", "seed": 1}},
    )
    return str(out / "checkpoint_last.npz")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """A folder of class folders (the second built-in task, five classes) as PNG files."""
    root = tmp_path_factory.mktemp("photos") / "my_photos"
    data = make_synthetic("train", n_per_class=4, task="new-shapes", seed=2)
    for i, (image, label) in enumerate(zip(data.images, data.labels)):
        folder = root / data.class_names[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image.transpose(1, 2, 0)).save(folder / f"{i:03d}.png")
    return str(root)


def _params(path):
    return load_checkpoint(path).params


# -- the batch loader applies a network's preprocessing ------------------------------------


def test_loader_gives_bvlc_networks_bgr_minus_the_mean_pixel_without_statistics():
    images = np.random.default_rng(0).integers(0, 256, (3, 3, 12, 12), dtype=np.uint8)
    dataset = ImageDataset(images, np.zeros(3, dtype=np.int64), ["x"])
    ((x, _),) = BatchLoader(dataset, 3, 10, None, train=False, preprocessing=BVLC_PREPROCESSING)
    np.testing.assert_array_equal(x, preprocess(images[:, :, 1:11, 1:11], BVLC_PREPROCESSING))
    ((ten, _),) = BatchLoader(
        dataset, 3, 10, None, train=False, crops="ten", preprocessing=BVLC_PREPROCESSING
    )
    np.testing.assert_array_equal(
        ten[:, 0], preprocess(images[:, :, :10, :10], BVLC_PREPROCESSING)
    )
    assert x[0, 0, 0, 0] == np.float32(images[0, 2, 1, 1]) - np.float32(104)  # B first


def test_loader_default_is_the_paper_mean_image_path():
    images = np.random.default_rng(1).integers(0, 256, (2, 3, 12, 12), dtype=np.uint8)
    dataset = ImageDataset(images, np.zeros(2, dtype=np.int64), ["x"])
    stats = compute_stats(dataset)
    ((x, _),) = BatchLoader(dataset, 2, 10, stats, train=False)
    np.testing.assert_array_equal(
        x,
        preprocess(
            images[:, :, 1:11, 1:11],
            {"channels": "RGB", "mean": "image"},
            stats.mean[:, 1:11, 1:11],
        ),
    )


def test_training_bgr_batches_are_the_rgb_batches_reversed_minus_the_pixel():
    images = np.random.default_rng(2).integers(0, 256, (4, 3, 12, 12), dtype=np.uint8)
    dataset = ImageDataset(images, np.arange(4) % 2, ["a", "b"])
    stats = compute_stats(dataset)
    pixel_image = np.broadcast_to(
        np.array([123, 117, 104], dtype=np.float32)[:, None, None], stats.mean.shape
    )  # BVLC's mean pixel, in RGB order
    pixel_stats = DatasetStats(pixel_image, stats.pca_eigvals, stats.pca_eigvecs)
    rgb = next(
        iter(BatchLoader(dataset, 4, 10, pixel_stats, train=True, rng=np.random.default_rng(5)))
    )[0]
    bgr = next(
        iter(
            BatchLoader(
                dataset,
                4,
                10,
                stats,
                train=True,
                rng=np.random.default_rng(5),
                preprocessing=BVLC_PREPROCESSING,
            )
        )
    )[0]
    np.testing.assert_array_equal(bgr, rgb[:, ::-1])  # same crops, flips and colour noise


# -- trained networks carry their class names ------------------------------------------------


def test_a_trained_checkpoint_carries_the_data_class_names(shapes_checkpoint):
    meta = load_checkpoint(shapes_checkpoint).meta
    assert meta["model"]["class_names"] == ["disk", "ring", "square"]
    assert meta["model"]["preprocessing"] == {"channels": "RGB", "mean": "image"}


# -- train --pretrained ----------------------------------------------------------------------


def test_fine_tune_from_a_checkpoint_with_frozen_features(
    shapes_checkpoint, photos, tmp_path, capsys
):
    run = tmp_path / "run"
    assert (
        train.main(
            [
                "--pretrained",
                shapes_checkpoint,
                "--data-dir",
                photos,
                "--epochs",
                "1",
                "--freeze",
                "fc7",
                "--output",
                str(run),
                "--print-freq",
                "1",
            ]
        )
        == 0
    )
    assert "frozen: conv1, conv2, conv3, conv4, conv5, fc6, fc7" in capsys.readouterr().out
    tuned = load_checkpoint(run / "checkpoint_last.npz")
    before = _params(shapes_checkpoint)
    for name, value in tuned.params.items():
        if name.startswith("fc8."):
            assert value.shape[0] == 5  # a new fc8 for the five classes
        else:
            assert value.tobytes() == before[name].tobytes(), name
    assert tuned.meta["model"]["class_names"] == sorted(NEW_SHAPE_NAMES)
    assert tuned.meta["freeze"] == "fc7"
    np.testing.assert_array_equal(tuned.stats.mean, load_checkpoint(shapes_checkpoint).stats.mean)


def test_a_fine_tuning_run_resumes_with_its_layers_still_frozen(
    shapes_checkpoint, photos, tmp_path
):
    run = tmp_path / "run"
    common = ["--data-dir", photos, "--output", str(run)]
    assert (
        train.main(
            ["--pretrained", shapes_checkpoint, "--freeze", "conv5", "--epochs", "1"] + common
        )
        == 0
    )
    last = str(run / "checkpoint_last.npz")
    assert train.main(["--resume", last, "--epochs", "2"] + common) == 0
    tuned, before = load_checkpoint(last), _params(shapes_checkpoint)
    assert tuned.meta["epoch"] == 2 and tuned.meta["freeze"] == "conv5"
    assert tuned.params["conv5.W"].tobytes() == before["conv5.W"].tobytes()
    assert evaluate.main([last, "--crops", "center"]) == 0


def test_fine_tune_from_onnx_trains_every_layer_without_freeze(
    shapes_checkpoint, photos, tmp_path
):
    model_file = str(tmp_path / "shapes.onnx")
    assert export.main([shapes_checkpoint, "-o", model_file]) == 0
    run = tmp_path / "run"
    assert (
        train.main(
            [
                "--pretrained",
                model_file,
                "--data-dir",
                photos,
                "--epochs",
                "1",
                "--output",
                str(run),
                "--lr",
                "0.01",
            ]
        )
        == 0
    )
    tuned, before = _params(run / "checkpoint_last.npz"), _params(shapes_checkpoint)
    assert not np.array_equal(tuned["conv1.W"], before["conv1.W"])
    assert tuned["fc8.W"].shape == (5, before["fc8.W"].shape[1])


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--freeze", "fc7"], "--freeze goes with --pretrained"),
        (["--pretrained", "{ckpt}", "--freeze", "fc8"], "fc8, the classifier, always learns"),
        (["--pretrained", "{missing}"], "does not exist"),
        (["--pretrained", "{ckpt}", "--arch", "mini"], "--arch does not go with --pretrained"),
    ],
)
def test_fine_tuning_mistakes_are_usage_errors(
    argv, message, shapes_checkpoint, photos, tmp_path, capsys
):
    argv = [a.format(ckpt=shapes_checkpoint, missing=str(tmp_path / "no.onnx")) for a in argv]
    with pytest.raises(SystemExit) as exit_info:
        train.main(argv + ["--data-dir", photos, "--output", str(tmp_path / "run")])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


# -- export, evaluate and predict with both checkpoint forms and ONNX -----------------------


def test_export_round_trip_keeps_weights_preprocessing_and_class_names(
    shapes_checkpoint, tmp_path
):
    path = str(tmp_path / "m.onnx")
    assert export.main([shapes_checkpoint, "-o", path]) == 0
    loaded, before = load_onnx(path), _params(shapes_checkpoint)
    for name, value in loaded.state_dict().items():
        assert value.tobytes() == before[name].tobytes()
    assert loaded.class_names == ["disk", "ring", "square"]
    assert loaded.preprocessing == {"channels": "RGB", "mean": "image"}


def test_evaluate_takes_the_checkpoint_positionally_or_as_an_option(shapes_checkpoint, capsys):
    results = []
    for argv in ([shapes_checkpoint], ["--checkpoint", shapes_checkpoint]):
        assert evaluate.main(argv + ["--crops", "center", "--json"]) == 0
        results.append(json.loads(capsys.readouterr().out))
    assert results[0] == results[1] and results[0]["center"]["images"] == 300
    assert evaluate.main([shapes_checkpoint, "-c", shapes_checkpoint]) == 2
    assert "two network files" in capsys.readouterr().err


def test_predict_takes_the_checkpoint_positionally_or_as_an_option(
    shapes_checkpoint, photos, capsys
):
    outputs = []
    for argv in ([shapes_checkpoint, photos + "/tee"], ["-c", shapes_checkpoint, photos + "/tee"]):
        assert predict.main(argv + ["--json", "-k", "2"]) == 0
        outputs.append(json.loads(capsys.readouterr().out))
    assert outputs[0] == outputs[1] and len(outputs[0]) == 4
    assert predict.main([shapes_checkpoint]) == 2
    assert "at least one image" in capsys.readouterr().err


def _bvlc_style_mini(tmp_path, class_names):
    """A mini network that, like BVLC's, takes BGR minus a mean pixel, as an ONNX file."""
    model = AlexNet(
        len(class_names),
        "mini",
        rng=np.random.default_rng(3),
        preprocessing=BVLC_PREPROCESSING,
        class_names=class_names,
    )
    path = str(tmp_path / "bgr.onnx")
    save_onnx(model, path)
    return model, path


def test_predict_with_onnx_uses_the_file_preprocessing(photos, tmp_path, capsys):
    model, path = _bvlc_style_mini(tmp_path, sorted(NEW_SHAPE_NAMES))
    image = os.path.join(photos, "hexagon", min(os.listdir(photos + "/hexagon")))
    assert predict.main([path, image, "--json", "-k", "5"]) == 0
    top = json.loads(capsys.readouterr().out)[0]["top"]
    decoded = decode_image(image, 64)[None, :, 2:61, 2:61]  # S = 64, centre 59 crop
    expected = softmax(model.forward(preprocess(decoded, BVLC_PREPROCESSING)))[0]
    for entry in top:
        k = sorted(NEW_SHAPE_NAMES).index(entry["class"])
        assert entry["probability"] == pytest.approx(float(expected[k]), rel=1e-5)


def test_evaluate_an_onnx_file_on_a_folder(photos, tmp_path, capsys):
    _, path = _bvlc_style_mini(tmp_path, sorted(NEW_SHAPE_NAMES))
    assert (
        evaluate.main(["--checkpoint", path, "--data-dir", photos, "--crops", "center", "--json"])
        == 0
    )
    assert json.loads(capsys.readouterr().out)["center"]["images"] == 5  # one per class held out
    assert evaluate.main([path]) == 2
    assert "pass --data-dir" in capsys.readouterr().err


# -- features --------------------------------------------------------------------------------


def test_extract_features_of_a_folder(shapes_checkpoint, photos, tmp_path, capsys):
    feats, names = features.extract_features(shapes_checkpoint, photos + "/tee", layer="fc7")
    assert feats.shape == (4, 256) and feats.dtype == np.float32
    assert names == sorted(os.path.join(photos, "tee", n) for n in os.listdir(photos + "/tee"))
    relu, _ = features.extract_features(shapes_checkpoint, photos + "/tee", layer="relu7")
    np.testing.assert_array_equal(relu, np.maximum(feats, 0))
    out = str(tmp_path / "feats.npy")
    assert features.main([shapes_checkpoint, photos + "/tee", "-o", out, "--layer", "pool5"]) == 0
    assert np.load(out).shape == (4, 64 * 2 * 2)
    assert (tmp_path / "feats.txt").read_text().split() == names
    assert features.main([shapes_checkpoint, photos, "-o", out, "--layer", "fc9"]) == 2
    assert "no layer 'fc9'" in capsys.readouterr().err


# -- bad files -------------------------------------------------------------------------------


def test_bad_model_files_give_clear_errors(shapes_checkpoint, tmp_path, capsys):
    not_onnx = tmp_path / "notes.onnx"
    not_onnx.write_text("this is not a network\n")
    good = tmp_path / "good.onnx"
    assert export.main([shapes_checkpoint, "-o", str(good)]) == 0
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(good.read_bytes()[:5000])
    cut_npz = tmp_path / "cut.npz"
    with open(shapes_checkpoint, "rb") as f:
        cut_npz.write_bytes(f.read()[:3000])
    for path, message in (
        (not_onnx, "not a readable ONNX model"),
        (truncated, "not a readable ONNX model"),
        (cut_npz, "corrupt, truncated or not an .npz"),
    ):
        for tool in (evaluate.main, export.main):
            argv = [str(path)] + (["-o", str(tmp_path / "x.onnx")] if tool is export.main else [])
            assert tool(argv) == 2
            assert message in capsys.readouterr().err


def test_wrong_input_shape_in_an_onnx_file_is_a_clear_error(shapes_checkpoint, tmp_path, capsys):
    good = tmp_path / "good.onnx"
    assert export.main([shapes_checkpoint, "-o", str(good)]) == 0
    proto = onnx.load(str(good))
    proto.graph.input[0].type.tensor_type.shape.dim[1].dim_value = 1
    bad = tmp_path / "grey.onnx"
    onnx.save(proto, str(bad))
    assert predict.main([str(bad), str(good)]) == 2
    assert "reads float images (N, 3, S, S)" in capsys.readouterr().err


def test_a_three_class_network_on_a_five_class_folder_is_a_clear_error(
    shapes_checkpoint, photos, capsys
):
    assert evaluate.main([shapes_checkpoint, "--data-dir", photos]) == 2
    err = capsys.readouterr().err
    assert "3 classes, the data has 5" in err and "other classes than this data" in err


# -- real photographs ------------------------------------------------------------------------


@needs_samples
def test_fine_tune_shapes_network_on_the_real_ilsvrc_samples(shapes_checkpoint, tmp_path):
    root = tmp_path / "imagenet"
    for wnid in sorted(os.listdir(SAMPLES)):
        for split in ("train", "val"):
            os.makedirs(root / split / wnid)
            for name in os.listdir(os.path.join(SAMPLES, wnid)):
                os.symlink(os.path.join(SAMPLES, wnid, name), root / split / wnid / name)
    run = tmp_path / "run"
    assert (
        train.main(
            [
                "--pretrained",
                shapes_checkpoint,
                "--data-dir",
                str(root),
                "--subset",
                "imagenet-100",
                "--freeze",
                "conv5",
                "--epochs",
                "1",
                "-b",
                "50",
                "--output",
                str(run),
            ]
        )
        == 0
    )
    tuned = load_checkpoint(run / "checkpoint_last.npz")
    assert len(tuned.meta["model"]["class_names"]) == 100
    before = _params(shapes_checkpoint)
    assert tuned.params["conv5.W"].tobytes() == before["conv5.W"].tobytes()
    assert not np.array_equal(tuned.params["fc6.W"], before["fc6.W"])
    assert evaluate.main([str(run / "checkpoint_last.npz"), "--crops", "center"]) == 0
