"""evaluate and predict: the command lines, their errors, and the real ILSVRC samples end to end.

The end-to-end test uses the 100 real ImageNet images in ``<project>/../shared/data/
imagenet100-samples`` (one per ImageNet-100 class) and skips when they are absent: prepare,
train one epoch of the mini AlexNet with ``--subset imagenet-100``, evaluate, predict.
"""

import json
import os

import numpy as np
import pytest
from helpers import SAMPLES
from PIL import Image

from minialexnet.data.dataset import DatasetStats
from minialexnet.data.decode import decode_image
from minialexnet.data.subsets import resolve_subset
from minialexnet.model import AlexNet
from minialexnet.training.checkpoint import save_checkpoint

needs_samples = pytest.mark.skipif(
    not os.path.isdir(SAMPLES), reason="../shared/data/imagenet100-samples not present"
)


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIALEXNET_CACHE", str(tmp_path / "default-cache"))


def make_checkpoint(path, class_names, image_size=32, arch="tiny", meta=None, seed=0):
    """An untrained checkpoint with made-up dataset statistics (enough to run the tools)."""
    model = AlexNet(len(class_names), arch, rng=np.random.default_rng(seed))
    rng = np.random.default_rng(seed + 1)
    stats = DatasetStats(
        mean=rng.uniform(80, 160, (3, image_size, image_size)),
        pca_eigvals=np.array([30.0, 5.0, 1.0]),
        pca_eigvecs=np.eye(3),
    )
    save_checkpoint(
        path, model, stats=stats, meta={"class_names": list(class_names), **(meta or {})}
    )
    return str(path)


def photos(folder):
    """Four small 'user photos' in awkward formats; returns their paths."""
    os.makedirs(folder, exist_ok=True)
    a = np.random.default_rng(0).integers(0, 255, (48, 70, 3), dtype=np.uint8)
    paths = [
        os.path.join(folder, n) for n in ("png-named.JPEG", "cmyk.jpg", "grey.jpg", "palette.gif")
    ]
    Image.fromarray(a).save(paths[0], format="PNG")
    Image.fromarray(a).convert("CMYK").save(paths[1])
    Image.fromarray(a).convert("L").save(paths[2])
    Image.fromarray(a).convert("P").save(paths[3])
    return paths


# -- predict ---------------------------------------------------------------------------------


def test_predict_prints_topk_for_each_image(tmp_path, capsys):
    from minialexnet.predict import main

    names = ["n01440764", "n01443537", "my cat", "n02012849", "n03126707", "x", "y"]
    ckpt = make_checkpoint(tmp_path / "ckpt.npz", names)
    paths = photos(tmp_path / "photos")
    assert main(["--checkpoint", ckpt, *paths, "--topk", "3", "--backend", "numpy"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 * 4 and lines[0] == paths[0] and lines[12] == paths[3]
    ranked = lines[1:4]
    assert [line.split(".")[0].strip() for line in ranked] == ["1", "2", "3"]
    probs = [float(line.split()[1].rstrip("%")) for line in ranked]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 100.05
    # All seven classes: probabilities add up to 100%, wnids get their ImageNet names.
    assert main(["--checkpoint", ckpt, paths[0], "--topk", "7", "--backend", "numpy"]) == 0
    ranked = capsys.readouterr().out.splitlines()[1:]
    assert abs(sum(float(line.split()[1].rstrip("%")) for line in ranked) - 100) < 0.4
    shown = {line.split("%", 1)[1].strip() for line in ranked}
    assert shown == {
        "tench (n01440764)",
        "goldfish (n01443537)",
        "my cat",
        "x",
        "y",
        "crane (n02012849)",
        "crane (n03126707)",
    }


def test_predict_json_ten_crop_and_folders(tmp_path, capsys):
    from minialexnet.predict import main

    names = [f"c{k}" for k in range(4)]
    ckpt = make_checkpoint(tmp_path / "ckpt.npz", names)
    photos(tmp_path / "photos")
    assert (
        main(
            [
                "-c",
                ckpt,
                str(tmp_path / "photos"),
                "--ten-crop",
                "--json",
                "-k",
                "10",
                "--backend",
                "numpy",
            ]
        )
        == 0
    )
    results = json.loads(capsys.readouterr().out)
    assert len(results) == 4  # every image in the folder
    for r in results:
        assert len(r["top"]) == 4  # k capped at the classes
        assert abs(sum(t["probability"] for t in r["top"]) - 1) < 1e-5


def test_predict_matches_metrics_on_the_same_pixels(tmp_path):
    """A photo is seen exactly as a validation image: same decode, crop, mean."""
    from minialexnet.data.dataset import ImageDataset
    from minialexnet.metrics import predict_proba
    from minialexnet.predict import predict_images
    from minialexnet.training.checkpoint import model_from_checkpoint

    names = ["a", "b", "c"]
    ckpt = make_checkpoint(tmp_path / "ckpt.npz", names)
    model, loaded = model_from_checkpoint(ckpt)
    images = np.stack([decode_image(p, 32) for p in photos(tmp_path / "p")])
    top = predict_images(model, loaded.stats, names, images, topk=3, ten_crop=True)
    probs = predict_proba(
        model, ImageDataset(images, np.zeros(4, np.int64), names), loaded.stats, crops="ten"
    )
    for row, ranked in zip(probs, top):
        assert [n for n, _ in ranked] == [names[k] for k in np.argsort(-row, kind="stable")]
        np.testing.assert_allclose([p for _, p in ranked], np.sort(row)[::-1], rtol=1e-6)


def test_predict_errors_exit_2_without_traceback(tmp_path, capsys):
    from minialexnet.predict import main

    ckpt = make_checkpoint(tmp_path / "ckpt.npz", ["a", "b"])
    good = photos(tmp_path / "p")[0]
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 broken")
    (tmp_path / "garbage.npz").write_bytes(os.urandom(300))
    cases = [
        (["-c", str(tmp_path / "missing.npz"), good], "does not exist"),
        (["-c", str(tmp_path / "garbage.npz"), good], "corrupt"),
        (["-c", ckpt, str(tmp_path / "nope.jpg")], "nope.jpg does not exist"),
        (["-c", ckpt, good, str(tmp_path / "broken.jpg")], "cannot read the image"),
    ]
    for argv, message in cases:
        assert main(argv + ["--backend", "numpy"]) == 2
        captured = capsys.readouterr()
        assert message in captured.err and "Traceback" not in captured.err
    # The readable image of the last case was still classified.
    assert main(["-c", ckpt, good, str(tmp_path / "broken.jpg"), "--backend", "numpy"]) == 2
    assert capsys.readouterr().out.startswith(good)


def test_cuda_backend_without_a_gpu_is_a_clear_error(tmp_path, capsys):
    from minialexnet import evaluate, predict

    try:
        from minialexnet.kernels.cuda import is_available

        if is_available():
            pytest.skip("a GPU (or the simulator) is available here")
    except ImportError:
        pass  # numba-cuda not installed: also an error
    ckpt = make_checkpoint(tmp_path / "ckpt.npz", ["a", "b"], meta={"data": "synthetic"})
    good = photos(tmp_path / "p")[0]
    assert predict.main(["-c", ckpt, good, "--backend", "cuda"]) == 2
    assert evaluate.main([ckpt, "--backend", "cuda"]) == 2
    err = capsys.readouterr().err
    assert err.count("--backend cuda is not usable here") == 2 and "Traceback" not in err


# -- evaluate --------------------------------------------------------------------------------


def test_evaluate_defaults_to_the_synthetic_data_recorded_in_the_checkpoint(tmp_path, capsys):
    from minialexnet.data.synthetic import CLASS_NAMES
    from minialexnet.evaluate import main

    ckpt = make_checkpoint(
        tmp_path / "ckpt.npz", list(CLASS_NAMES[:3]), meta={"data": "synthetic"}
    )
    assert main([ckpt, "--crops", "center", "--json", "--backend", "numpy", "-b", "100"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) == {"center"} and result["center"]["images"] == 300
    assert 0.0 <= result["center"]["top1_err"] <= 1.0
    assert result["center"]["top5_err"] == 0.0  # 3 classes: always in the top 5


def test_evaluate_errors_exit_2_without_traceback(tmp_path, capsys):
    from minialexnet.evaluate import main

    root = tmp_path / "data"
    for cls in ("cats", "dogs"):
        for i in range(3):
            os.makedirs(root / cls, exist_ok=True)
            Image.new("RGB", (40, 40), (60 * i, 90, 30)).save(root / cls / f"{i}.jpg")
    other = make_checkpoint(tmp_path / "other.npz", ["cats", "birds"])
    silent = make_checkpoint(tmp_path / "silent.npz", ["cats", "dogs"])
    (tmp_path / "garbage.npz").write_bytes(b"PK\x03\x04 not really a zip")
    cases = [
        ([str(tmp_path / "missing.npz")], "does not exist"),
        ([str(tmp_path / "garbage.npz")], "corrupt"),
        ([other, "--data-dir", str(root)], "trained on other classes"),
        ([silent], "does not record where its data came from; pass --data-dir"),
        ([silent, "--data-dir", str(tmp_path / "nowhere")], "does not exist"),
    ]
    for argv, message in cases:
        assert main(argv + ["--backend", "numpy"]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
    assert (
        main(
            [
                silent,
                "--data-dir",
                str(root),
                "--val-fraction",
                "0.34",
                "--crops",
                "ten",
                "--backend",
                "numpy",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "2 validation images" in out and out.splitlines()[-1].startswith("ten")


def test_evaluate_uses_the_data_folder_recorded_in_the_checkpoint(tmp_path, capsys):
    from minialexnet.evaluate import main

    root = tmp_path / "data"
    for cls in ("cats", "dogs"):
        for split in ("train", "val"):
            os.makedirs(root / split / cls)
            Image.new("RGB", (40, 40), (200, 9, 9)).save(root / split / cls / "x.png")
    ckpt = make_checkpoint(
        tmp_path / "c.npz",
        ["cats", "dogs"],
        meta={"dataset": {"kind": "folder", "data_dir": str(root), "subset": None}},
    )
    assert main([ckpt, "--crops", "center", "--json", "--backend", "numpy"]) == 0
    assert json.loads(capsys.readouterr().out)["center"]["images"] == 2


# -- end to end on the real ImageNet samples --------------------------------------------------


@needs_samples
def test_real_samples_prepare_train_evaluate_predict(tmp_path, capsys):
    """Prepare, train one mini epoch with --subset imagenet-100, evaluate and predict."""
    from minialexnet import evaluate, predict, prepare, train

    # An ImageNet layout over the real images (links: the shared files are only read).
    root = tmp_path / "imagenet"
    for wnid in sorted(os.listdir(SAMPLES)):
        for split in ("train", "val"):
            os.makedirs(root / split / wnid)
            for name in os.listdir(os.path.join(SAMPLES, wnid)):
                os.symlink(os.path.join(SAMPLES, wnid, name), root / split / wnid / name)
    assert (
        prepare.main(
            [
                "--data-dir",
                str(root),
                "--subset",
                "imagenet-100",
                "--image-size",
                "64",
                "--workers",
                "2",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "ready: 100 training and 100 validation images of 3x64x64, 100 classes" in out

    run = tmp_path / "run"
    assert (
        train.main(
            [
                "--data-dir",
                str(root),
                "--subset",
                "imagenet-100",
                "--arch",
                "mini",
                "--epochs",
                "1",
                "-b",
                "50",
                "--output",
                str(run),
                "--print-freq",
                "1",
            ]
        )
        == 0
    )
    log = capsys.readouterr().out
    assert "train: using the cache" in log and "decoding" not in log  # prepared once
    ckpt = str(run / "checkpoint_last.npz")
    assert (
        evaluate.main(
            [ckpt, "--data-dir", str(root), "--subset", "imagenet-100", "--json", "-b", "50"]
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    for crops in ("center", "ten"):
        assert result[crops]["images"] == 100
        assert 0.0 <= result[crops]["top5_err"] <= result[crops]["top1_err"] <= 1.0

    robin = os.path.join(SAMPLES, "n01558993", "n01558993_robin.JPEG")
    grey = os.path.join(SAMPLES, "n03764736", "n03764736_milk_can.JPEG")  # mode L
    assert predict.main(["--checkpoint", ckpt, robin, grey, "--topk", "5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == robin and lines[6] == grey and len(lines) == 12
    in100 = resolve_subset("imagenet-100")
    for line in lines[1:6] + lines[7:12]:
        wnid = line.rsplit("(", 1)[1].rstrip(")")  # "  1.   1.2%  robin (n01558993)"
        assert wnid in in100
    # The cached val row of the robin is exactly what predict decodes from the file.
    from minialexnet.data.imagenet import open_val_dataset

    val = open_val_dataset(root, "imagenet-100", image_size=64, log=lambda *_: None)
    row = in100.index("n01558993")
    assert np.array_equal(np.asarray(val.images[row]), decode_image(robin, 64))


class _TopLeftPixel:
    """A stand-in network whose one logit (of two) is the crop's top-left red value / 50:
    each of the ten crops of §4.1, flips included, gives another softmax."""

    input_size, num_classes = 4, 2

    def forward(self, x, train=False):
        return np.stack([x[:, 0, 0, 0] / 50.0, np.zeros(len(x), np.float32)], axis=1)


def test_ten_crop_probabilities_average_the_softmax_of_all_ten_crops():
    from minialexnet.data.dataset import ImageDataset
    from minialexnet.metrics import predict_proba, softmax

    size, crop = 7, 4
    images = np.random.default_rng(3).integers(0, 256, (2, 3, size, size), dtype=np.uint8)
    stats = DatasetStats(
        mean=np.zeros((3, size, size)), pca_eigvals=np.ones(3), pca_eigvecs=np.eye(3)
    )
    probs = predict_proba(
        _TopLeftPixel(),
        ImageDataset(images, np.zeros(2, np.int64), ["a", "b"]),
        stats,
        batch_size=2,
        crops="ten",
    )
    far, mid = size - crop, (size - crop) // 2
    for image, p in zip(images.astype(np.float32), probs):
        crops = [
            image[:, y : y + crop, x : x + crop]
            for y, x in ((0, 0), (0, far), (far, 0), (far, far), (mid, mid))
        ]
        crops += [c[:, :, ::-1] for c in crops]  # the horizontal reflections
        expected = softmax(_TopLeftPixel().forward(np.stack(crops))).mean(axis=0)
        np.testing.assert_allclose(p, expected, rtol=1e-5)
