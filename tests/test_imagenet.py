"""ImageNet-style folders: layout checks, class subsets, val labels files, hold-out, locating.

Every dataset here is a few tiny images generated in ``tmp_path``; the caches go to
``tmp_path`` too (never to the user's home).
"""

import hashlib
import os

import numpy as np
import pytest
from PIL import Image

from minialexnet.data import imagenet, subsets
from minialexnet.data.folders import DataError, inspect_layout, read_val_labels
from minialexnet.data.imagenet import find_imagenet_root, open_dataset, stratified_holdout

WNIDS = ["n01440764", "n01443537", "n01484850"]  # tench, goldfish, great white shark
SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    """Default caches go under tmp_path, never ~/.cache."""
    monkeypatch.setenv("MINIALEXNET_CACHE", str(tmp_path / "default-cache"))


def write_image(path, color=(200, 30, 60), size=(24, 18), mode="RGB", fmt=None):
    """A solid-colour image (converted to ``mode``) at ``path``; folders are created."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", size, color).convert(mode).save(path, format=fmt or "JPEG")
    return str(path)


def make_tree(root, train_counts, val_counts=None, flat_val=False):
    """``root/train/<cls>/<cls>_<i>.JPEG`` and val/ alike; red = 40 k + 20 for the k-th class
    in sorted order, so a decoded image shows its class.

    ``flat_val``: val images directly in ``val/`` named ILSVRC2012_val_<n>.JPEG; returns
    their ``(filename, class)`` list.
    """
    order = sorted(set(train_counts) | set(val_counts or {}))
    for cls, n in train_counts.items():
        k = order.index(cls)
        for i in range(n):
            write_image(root / "train" / cls / f"{cls}_{i}.JPEG", (40 * k + 20, 10 * i, 90))
    flat = []
    for cls, n in (val_counts or {}).items():
        k = order.index(cls)
        for i in range(n):
            if flat_val:
                name = f"ILSVRC2012_val_{len(flat) + 1:08d}.JPEG"
                write_image(root / "val" / name, (40 * k + 20, 200, 10 * i))
                flat.append((name, cls))
            else:
                write_image(root / "val" / cls / f"v_{i}.JPEG", (40 * k + 20, 200, 10 * i))
    return flat


def tree_digest(root):
    """{relative path: (sha256, size, mtime_ns)} of every file under root."""
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
            st = os.stat(path)
            out[os.path.relpath(path, root)] = (digest, st.st_size, st.st_mtime_ns)
    return out


def quiet(*_):
    pass


# -- the ImageNet layout ---------------------------------------------------------------------


def test_imagenet_layout_with_val_class_folders(tmp_path):
    root = tmp_path / "imagenet"
    make_tree(root, {WNIDS[2]: 3, WNIDS[0]: 2, WNIDS[1]: 4}, {w: 2 for w in WNIDS})
    train, val, stats = open_dataset(
        root, image_size=8, cache_dir=tmp_path / "c", workers=1, log=quiet
    )
    assert train.class_names == sorted(WNIDS)  # indices follow the sorted wnids
    assert train.labels.tolist() == [0, 0, 1, 1, 1, 1, 2, 2, 2]
    assert val.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert train.images.shape == (9, 3, 8, 8) and train.images.dtype == np.uint8
    assert isinstance(train.images, np.memmap)
    # Class 0 (n01440764) images were written with red 20, class 2 with red 100 (JPEG: +-3).
    assert abs(int(train.images[0, 0].mean()) - 20) <= 3
    assert abs(int(train.images[-1, 0].mean()) - 100) <= 3
    assert stats.mean.shape == (3, 8, 8)
    # The mean image is the training images' mean (not the val images').
    np.testing.assert_allclose(
        stats.mean, np.asarray(train.images, np.float64).mean(axis=0), atol=1e-4
    )


def test_any_folder_of_class_folders_holds_out_validation(tmp_path):
    photos = tmp_path / "my photos"
    for cls, n in (("cats", 10), ("dogs", 5), ("the bird", 1)):
        for i in range(n):
            write_image(photos / cls / f"IMG_{i:04d}.jpg", (20 * i, 100, 50))
    write_image(photos / ".thumbnails" / "x.jpg")  # hidden: never a class
    (photos / "cats" / "notes.txt").write_text("not an image")  # ignored
    train, val, stats = open_dataset(
        photos,
        image_size=8,
        val_fraction=0.2,
        seed=3,
        cache_dir=tmp_path / "c",
        workers=1,
        log=quiet,
    )
    assert train.class_names == ["cats", "dogs", "the bird"]
    # cats: round(0.2*10) = 2 held out; dogs: round(1.0) = 1; a single bird stays in train.
    assert np.bincount(val.labels, minlength=3).tolist() == [2, 1, 0]
    assert np.bincount(train.labels, minlength=3).tolist() == [8, 4, 1]
    assert stats.mean.shape == (3, 8, 8)


# -- layout mistakes -------------------------------------------------------------------------


def _flat_train(root):
    write_image(root / "train" / "a.JPEG")


def _tars(root):
    os.makedirs(root / "train")
    (root / "train" / "n01440764.tar").write_bytes(b"\0" * 512)


def _train_is_root(root):
    make_tree(root, {WNIDS[0]: 1}, {WNIDS[0]: 1})
    return root / "train"


def _val_is_root(root):
    make_tree(root, {WNIDS[0]: 1}, {WNIDS[0]: 1})
    return root / "val"


def _empty_class(root):
    make_tree(root, {WNIDS[0]: 1}, {WNIDS[0]: 1})
    os.makedirs(root / "train" / WNIDS[1])
    os.makedirs(root / "val" / WNIDS[1])


def _class_of_text_files(root):
    make_tree(root, {WNIDS[0]: 1})
    os.makedirs(root / "train" / WNIDS[1])
    (root / "train" / WNIDS[1] / "a.heic").write_bytes(b"x")


def _flat_val_without_labels(root):
    make_tree(root, {WNIDS[0]: 1}, {WNIDS[0]: 2}, flat_val=True)


def _empty_val(root):
    make_tree(root, {WNIDS[0]: 1})
    os.makedirs(root / "val")


def _val_only(root):
    write_image(root / "val" / WNIDS[0] / "a.JPEG")


def _kaggle(root):
    write_image(root / "ILSVRC" / "Data" / "CLS-LOC" / "train" / WNIDS[0] / "a.JPEG")


def _loose_images(root):
    write_image(root / "a.jpg")


def _missing(root):
    return root / "does-not-exist"


def _a_file(root):
    os.makedirs(root)
    return write_image(root / "a.jpg")


@pytest.mark.parametrize(
    "build, expected",
    [
        (_flat_train, "holds 1 image(s) directly"),
        (_tars, "extract them first"),
        (_train_is_root, "points at the train/ folder itself"),
        (_val_is_root, "points at the val/ folder itself"),
        (_empty_class, f"{WNIDS[1]} has no images"),
        (_class_of_text_files, "endings not read as images: .heic"),
        (_flat_val_without_labels, "pass --val-labels"),
        (_empty_val, "validation folder"),
        (_val_only, "no train/ folder"),
        (_kaggle, "Kaggle"),
        (_loose_images, "no class folders"),
        (_missing, "does not exist"),
        (_a_file, "is a file"),
    ],
)
def test_layout_mistakes_give_clear_errors(tmp_path, build, expected):
    root = tmp_path / "data"
    data_dir = build(root) or root
    with pytest.raises(
        DataError,
        match=expected.replace("(", r"\(")
        .replace(")", r"\)")
        .replace(".", r"\.")
        .replace("?", r"\?"),
    ):
        open_dataset(data_dir, image_size=8, cache_dir=tmp_path / "c", workers=1, log=quiet)


def test_layout_error_message_is_actionable(tmp_path):
    _empty_class(tmp_path / "data")
    with pytest.raises(DataError) as info:
        open_dataset(tmp_path / "data", image_size=8, cache_dir=tmp_path / "c", log=quiet)
    message = str(info.value)
    assert str(tmp_path / "data" / "train" / WNIDS[1]) in message  # where
    assert "add images or delete" in message  # what to do


def test_val_classes_must_match_train(tmp_path):
    root = tmp_path / "data"
    make_tree(root, {WNIDS[0]: 1, WNIDS[1]: 1}, {WNIDS[0]: 1, WNIDS[2]: 1})
    with pytest.raises(DataError, match=f"lacks: {WNIDS[2]}"):
        open_dataset(root, image_size=8, cache_dir=tmp_path / "c", log=quiet)


# -- subsets ---------------------------------------------------------------------------------


def test_shipped_lists():
    in100 = subsets.resolve_subset("imagenet-100")
    in1k = subsets.resolve_subset("imagenet-1k")
    assert len(in100) == 100 and in100 == sorted(in100)
    assert len(in1k) == 1000 and in1k == subsets.imagenet1000()
    assert set(in100) <= set(in1k)
    assert in1k[0] == "n01440764" and in1k[999] == "n15075141"  # tench ... toilet tissue
    assert subsets.resolve_subset("ImageNet100") == in100  # spelling variants
    assert subsets.display_name("n01440764") == "tench (n01440764)"
    assert subsets.display_name("n02012849") != subsets.display_name("n03126707")  # 2 cranes
    assert subsets.display_name("my cat") == "my cat"


@pytest.mark.skipif(not os.path.isdir(SHARED), reason="../shared/data not present")
def test_shipped_lists_equal_the_reference_files():
    for name in ("imagenet100.txt", "imagenet1000.txt"):
        with open(os.path.join(SHARED, name)) as f:
            reference = [line.split()[0] for line in f if line.strip()]
        assert [w for w, _ in subsets._shipped_list(name)] == reference


def test_subset_file_selects_sorted_classes(tmp_path):
    root = tmp_path / "data"
    make_tree(root, {w: 2 for w in WNIDS}, {w: 1 for w in WNIDS})
    wnids_txt = tmp_path / "wnids.txt"
    wnids_txt.write_text(f"# my two classes\n{WNIDS[2]} shark\n\n{WNIDS[0]}\n")
    train, val, _ = open_dataset(
        root, subset=wnids_txt, image_size=8, cache_dir=tmp_path / "c", log=quiet
    )
    assert train.class_names == [WNIDS[0], WNIDS[2]]
    assert train.labels.tolist() == [0, 0, 1, 1] and val.labels.tolist() == [0, 1]


def test_subset_missing_wnid_is_named(tmp_path):
    root = tmp_path / "data"
    in100 = subsets.resolve_subset("imagenet-100")
    make_tree(root, {w: 1 for w in WNIDS + in100[:3]}, {w: 1 for w in WNIDS})
    with pytest.raises(
        DataError, match=f"97 of its 100 classes have no folder.*: {in100[3]}, {in100[4]}"
    ) as info:
        open_dataset(
            root, subset="imagenet-100", image_size=8, cache_dir=tmp_path / "c", log=quiet
        )
    assert "and 87 more" in str(info.value)
    wnids_txt = tmp_path / "wnids.txt"
    wnids_txt.write_text(f"{WNIDS[0]}\nn09999999\n")
    with pytest.raises(DataError, match="n09999999"):
        open_dataset(root, subset=wnids_txt, image_size=8, cache_dir=tmp_path / "c2", log=quiet)


@pytest.mark.parametrize(
    "subset, expected",
    [
        ("imagenet-7", "neither a known subset"),
        ("{dup}", "listed twice"),
        ("{empty}", "lists no classes"),
    ],
)
def test_bad_subsets(tmp_path, subset, expected):
    (tmp_path / "dup.txt").write_text("n01440764\nn01440764\n")
    (tmp_path / "empty.txt").write_text("# nothing\n")
    subset = subset.format(dup=tmp_path / "dup.txt", empty=tmp_path / "empty.txt")
    with pytest.raises(DataError, match=expected):
        subsets.resolve_subset(subset)


# -- a flat val/ and its labels file ---------------------------------------------------------


def _flat(tmp_path, classes=WNIDS):
    root = tmp_path / "data"
    flat = make_tree(root, {c: 1 for c in classes}, {c: 2 for c in classes}, flat_val=True)
    return root, flat


def test_flat_val_with_filename_wnid_file(tmp_path):
    root, flat = _flat(tmp_path)
    labels = tmp_path / "my labels.txt"
    labels.write_text("".join(f"{name} {cls}\n" for name, cls in reversed(flat)))
    _, val, _ = open_dataset(
        root, image_size=8, cache_dir=tmp_path / "c", log=quiet, val_labels=labels
    )
    assert val.labels.tolist() == [0, 0, 1, 1, 2, 2]
    # Each val image keeps its colour: class k was written with red 40k+20.
    np.testing.assert_allclose(
        val.images[:, 0].mean(axis=(1, 2)), [20, 20, 60, 60, 100, 100], atol=3
    )


def test_flat_val_labels_found_in_root_and_subset_drops_other_classes(tmp_path):
    root, flat = _flat(tmp_path)
    # Caffe's val.txt: 0-based indices into the standard 1000-class order (tab-separated).
    standard = subsets.imagenet1000()
    (root / "val.txt").write_text("".join(f"{n}\t{standard.index(c)}\n" for n, c in flat))
    wnids_txt = tmp_path / "two.txt"
    wnids_txt.write_text(f"{WNIDS[1]}\n{WNIDS[2]}\n")
    logged = []
    _, val, _ = open_dataset(
        root, subset=wnids_txt, image_size=8, cache_dir=tmp_path / "c", log=logged.append
    )
    assert val.class_names == WNIDS[1:] and val.labels.tolist() == [0, 0, 1, 1]
    assert any("2 of other classes left out" in line for line in logged)


def test_labels_file_formats(tmp_path):
    names = ["ILSVRC2012_val_00000001.JPEG", "ILSVRC2012_val_00000002.JPEG"]
    own = ["cat", "dog"]
    kaggle = tmp_path / "LOC_val_solution.csv"
    kaggle.write_text(
        "ImageId,PredictionString\nILSVRC2012_val_00000002,n01443537 1 2 3 4 "
        "n01443537 5 6 7 8\nILSVRC2012_val_00000001,n01440764 1 2 3 4\n"
    )
    assert read_val_labels(str(kaggle), names, own) == ["n01440764", "n01443537"]
    indices = tmp_path / "idx.txt"  # integers index the given class list
    indices.write_text("val/ILSVRC2012_val_00000001.JPEG 1\nILSVRC2012_val_00000002 0\n")
    assert read_val_labels(str(indices), names, own) == ["dog", "cat"]
    devkit = tmp_path / "ILSVRC2012_validation_ground_truth.txt"
    devkit.write_text("490\n361\n")
    with pytest.raises(DataError, match="meta.mat"):
        read_val_labels(str(devkit), names, own)
    with pytest.raises(DataError, match="has 2 labels .* 3 images"):
        read_val_labels(str(devkit), names + ["x.JPEG"], own)


@pytest.mark.parametrize(
    "content, expected",
    [
        ("ILSVRC2012_val_00000001.JPEG n01440764\n", "1 val image\\(s\\) have no label"),
        ("only-a-name.JPEG\n", "expected 'filename class'"),
        ("a.JPEG\tb\tc\n", "expected 'filename class'"),
        ("ILSVRC2012_val_00000001.JPEG 7\nILSVRC2012_val_00000002.JPEG 0\n", "out of range"),
        ("", "is empty"),
    ],
)
def test_bad_labels_files(tmp_path, content, expected):
    labels = tmp_path / "labels.txt"
    labels.write_text(content)
    names = ["ILSVRC2012_val_00000001.JPEG", "ILSVRC2012_val_00000002.JPEG"]
    with pytest.raises(DataError, match=expected):
        read_val_labels(str(labels), names, ["cat", "dog"])


def test_labels_naming_unknown_classes_are_refused(tmp_path):
    root, flat = _flat(tmp_path, WNIDS[:2])
    (root / "val_labels.txt").write_text("".join(f"{n} n09999999\n" for n, _ in flat))
    with pytest.raises(DataError, match="no folder in .*n09999999|n09999999"):
        open_dataset(root, image_size=8, cache_dir=tmp_path / "c", log=quiet)


def test_explicit_labels_file_must_exist(tmp_path):
    root, _ = _flat(tmp_path)
    with pytest.raises(DataError, match="does not exist; check --val-labels"):
        inspect_layout(root, tmp_path / "nope.txt")


# -- the stratified hold-out -----------------------------------------------------------------


def test_stratified_holdout_counts_and_determinism():
    labels = np.repeat(np.arange(4), [10, 3, 2, 1])
    names = ["a", "b", "c", "d"]
    train, val = stratified_holdout(labels, names, 0.25, seed=7)
    # round(2.5) = 2 (banker's rounding), round(0.75) = 1, round(0.5) = 0 -> at least 1, d: 0.
    assert np.bincount(labels[val], minlength=4).tolist() == [2, 1, 1, 0]
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(16))
    again = stratified_holdout(labels, names, 0.25, seed=7)
    assert np.array_equal(val, again[1]) and np.array_equal(train, again[0])
    other = [stratified_holdout(labels, names, 0.25, seed=s)[1] for s in range(8, 12)]
    assert any(not np.array_equal(val, o) for o in other)


def test_holdout_of_a_class_does_not_depend_on_other_classes():
    labels = np.repeat(np.arange(3), [20, 20, 20])
    _, val = stratified_holdout(labels, ["x", "y", "z"], 0.3, seed=1)
    # Drop class "x": the rows of "y" and "z" shift by 20, their choice must not change.
    _, val_without_x = stratified_holdout(labels[20:] - 1, ["y", "z"], 0.3, seed=1)
    assert np.array_equal(val[val >= 20] - 20, val_without_x)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_holdout_fraction_must_be_a_fraction(fraction):
    with pytest.raises(DataError, match="strictly between 0 and 1"):
        stratified_holdout(np.zeros(4, dtype=np.int64), ["a"], fraction, seed=0)


def test_holdout_split_is_reproducible_through_open_dataset(tmp_path):
    photos = tmp_path / "photos"
    for cls in ("a", "b"):
        for i in range(6):
            write_image(photos / cls / f"{i}.png", (30 * i, 0, 0), fmt="PNG")
    kwargs = dict(image_size=8, val_fraction=0.5, workers=1, log=quiet)
    _, val1, _ = open_dataset(photos, seed=5, cache_dir=tmp_path / "c1", **kwargs)
    _, val2, _ = open_dataset(photos, seed=5, cache_dir=tmp_path / "c2", **kwargs)
    _, val3, _ = open_dataset(photos, seed=6, cache_dir=tmp_path / "c1", **kwargs)
    assert np.array_equal(np.asarray(val1.images), np.asarray(val2.images))
    assert len(val3) == len(val1) == 6
    reds = [sorted(np.asarray(v.images)[:, 0, 0, 0].tolist()) for v in (val1, val3)]
    assert reds[0] != reds[1]  # another seed holds out other images (here it does)


def test_too_few_images_to_hold_out(tmp_path):
    photos = tmp_path / "photos"
    for cls in ("a", "b"):
        write_image(photos / cls / "only.jpg")
    with pytest.raises(DataError, match="nothing can be held out"):
        open_dataset(photos, image_size=8, cache_dir=tmp_path / "c", log=quiet)


# -- finding ImageNet ------------------------------------------------------------------------


def test_imagenet_not_found_explains_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no data/imagenet here
    for var in imagenet.ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(imagenet, "DEFAULT_LOCATIONS", (str(tmp_path / "nowhere"),))
    with pytest.raises(DataError) as info:
        open_dataset(None, subset="imagenet-100", log=quiet)
    message = str(info.value)
    for needle in (
        str(tmp_path / "data" / "imagenet"),
        "data/README.md",
        "$MINIALEXNET_DATA (not set)",
        str(tmp_path / "nowhere"),
        "--data-dir",
        "MINIALEXNET_DATA=",
        "cannot be downloaded automatically",
        "image-net.org",
    ):
        assert needle in message
    assert isinstance(info.value, ValueError)
    with pytest.raises(DataError, match="no data folder given"):
        open_dataset(None, subset=None, log=quiet)


def test_imagenet_found_through_environment(tmp_path, monkeypatch):
    root = tmp_path / "in"
    make_tree(root, {WNIDS[0]: 1}, {WNIDS[0]: 1})
    monkeypatch.chdir(tmp_path)  # no data/imagenet here
    monkeypatch.delenv("MINIALEXNET_DATA", raising=False)
    monkeypatch.setenv("IMAGENET_ROOT", str(root))
    assert find_imagenet_root() == str(root)
    monkeypatch.setenv("MINIALEXNET_DATA", str(tmp_path / "wrong"))
    with pytest.raises(DataError, match=r"\$MINIALEXNET_DATA is set to .*has no train/"):
        find_imagenet_root()


def test_data_imagenet_in_the_current_folder_is_looked_at_first(tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    make_tree(elsewhere, {WNIDS[0]: 1}, {WNIDS[0]: 1})
    monkeypatch.setenv("MINIALEXNET_DATA", str(elsewhere))
    clone = tmp_path / "clone"
    os.makedirs(clone / "data")
    monkeypatch.chdir(clone)
    assert find_imagenet_root() == str(elsewhere)  # data/ without imagenet/train
    make_tree(clone / "data" / "imagenet", {WNIDS[0]: 2, WNIDS[1]: 1}, {WNIDS[0]: 1, WNIDS[1]: 1})
    assert find_imagenet_root() == str(clone / "data" / "imagenet")  # before the variable
    (tmp_path / "two.txt").write_text(WNIDS[0] + "\n" + WNIDS[1] + "\n")  # a subset
    logged = []
    train, val, _ = open_dataset(
        None,
        subset=tmp_path / "two.txt",
        image_size=8,
        cache_dir=tmp_path / "c",
        log=logged.append,
    )
    assert (len(train), len(val)) == (3, 2)
    assert f"found ImageNet at {clone / 'data' / 'imagenet'}" in logged


# -- the user's data is never modified -------------------------------------------------------


def test_data_folder_is_never_modified(tmp_path):
    root = tmp_path / "data"
    make_tree(root, {w: 3 for w in WNIDS}, {w: 1 for w in WNIDS})
    (root / "train" / WNIDS[0] / "broken.JPEG").write_bytes(b"\xff\xd8\xff garbage")
    os.chmod(root / "train" / WNIDS[1] / f"{WNIDS[1]}_0.JPEG", 0o444)
    before = tree_digest(root)
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        open_dataset(root, image_size=8, workers=1, log=quiet)
    open_dataset(root, image_size=8, workers=1, log=quiet)  # reuse
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        open_dataset(root, image_size=8, workers=2, log=quiet, cache_dir=tmp_path / "explicit")
    assert tree_digest(root) == before  # same files, bytes and mtimes
    assert sorted(os.listdir(root)) == ["train", "val"]
    # The default cache went to $MINIALEXNET_CACHE, outside the data folder.
    assert os.listdir(tmp_path / "default-cache")


def test_prepared_cache_can_stand_in_for_the_data(tmp_path):
    root = tmp_path / "data"
    make_tree(root, {w: 2 for w in WNIDS}, {w: 1 for w in WNIDS})
    train, val, stats = open_dataset(root, image_size=8, cache_dir=tmp_path / "c", log=quiet)
    moved = tmp_path / "copied-cache"
    os.rename(tmp_path / "c", moved)
    os.rename(root, tmp_path / "gone")  # the images are not needed
    train2, val2, stats2 = open_dataset(moved, image_size=8, log=quiet)
    assert np.array_equal(np.asarray(train.images), np.asarray(train2.images))
    assert np.array_equal(val.labels, val2.labels)
    np.testing.assert_array_equal(stats.mean, stats2.mean)
    with pytest.raises(DataError, match="holds image_size 8, this run needs 16"):
        open_dataset(moved, image_size=16, log=quiet)


def test_a_cache_inside_the_data_folder_is_not_taken_for_a_class(tmp_path):
    photos = tmp_path / "photos"
    for cls in ("a", "b"):
        for i in range(3):
            write_image(photos / cls / f"{i}.jpg", (60 * i, 0, 0))
    for _ in range(2):
        train, _, _ = open_dataset(
            photos, image_size=8, val_fraction=0.34, cache_dir=photos / "cache", log=quiet
        )
        assert train.class_names == ["a", "b"]


def test_dataset_record_for_checkpoints(tmp_path):
    assert imagenet.dataset_record() == {"kind": "synthetic"}
    assert imagenet.dataset_record("~/in", "ImageNet100", 0.2, 3) == {
        "kind": "folder",
        "data_dir": os.path.expanduser("~/in"),
        "subset": "imagenet-100",
        "val_fraction": 0.2,
        "seed": 3,
        "val_labels": None,
    }
    (tmp_path / "w.txt").write_text("n01440764\n")
    record = imagenet.dataset_record(None, tmp_path / "w.txt")
    assert record["subset"] == str(tmp_path / "w.txt") and record["data_dir"] is None


def test_labels_file_separators(tmp_path):
    names = ["my photo 1.jpg", "b.jpg", "c.jpg"]
    labels = tmp_path / "labels.txt"
    labels.write_text("my photo 1.jpg dog\nb.jpg\tthe bird\nc.jpg,cat\n")
    assert read_val_labels(str(labels), names, []) == ["dog", "the bird", "cat"]
