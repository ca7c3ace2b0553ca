"""Decoding real-world files, and the dataset cache: reuse, staleness, foreign caches, resume.

Images are generated in ``tmp_path``; caches go to ``tmp_path`` too.
"""

import glob
import json
import os
import types

import numpy as np
import pytest
from PIL import Image, JpegImagePlugin

from minialexnet.data import cache, cache_dir, cache_files
from minialexnet.data.cache import build_split
from minialexnet.data.decode import UnreadableImage, decode_image
from minialexnet.data.folders import DataError, list_class_folders
from minialexnet.data.imagenet import open_dataset

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")
SAMPLES = os.path.join(SHARED, "imagenet100-samples")
RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIALEXNET_CACHE", str(tmp_path / "default-cache"))


def quiet(*_):
    pass


def three_bands(width, height, vertical=True):
    """RGB image of three equal bands red | green | blue (left to right, or top to bottom)."""
    a = np.zeros((height, width, 3), dtype=np.uint8)
    n = width if vertical else height
    for band, colour in enumerate((RED, GREEN, BLUE)):
        part = slice(band * n // 3, (band + 1) * n // 3)
        if vertical:
            a[:, part] = colour
        else:
            a[part, :] = colour
    return Image.fromarray(a)


# -- decode_image ----------------------------------------------------------------------------


def test_centre_square_of_a_landscape_and_a_portrait_image(tmp_path):
    # 30x10: the central 10x10 square is exactly the green band; at scale 1 bilinear is exact.
    three_bands(30, 10).save(tmp_path / "wide.png")
    out = decode_image(tmp_path / "wide.png", 10)
    assert out.shape == (3, 10, 10) and out.dtype == np.uint8
    assert np.array_equal(
        out, np.broadcast_to(np.array(GREEN, np.uint8)[:, None, None], (3, 10, 10))
    )
    three_bands(12, 36, vertical=False).save(tmp_path / "tall.png")
    assert np.array_equal(
        decode_image(tmp_path / "tall.png", 12)[:, :, 0].T,
        np.tile(np.array(GREEN, np.uint8), (12, 1)),
    )


def test_shorter_side_is_scaled_to_s(tmp_path):
    # 40x20 image of 2x2-pixel checks -> central 20x20 square -> 10x10: every output pixel
    # averages a 2x2 block holding two black and two white pixels.
    checks = (np.indices((20, 40)).sum(axis=0) % 2 * 255).astype(np.uint8)
    Image.fromarray(checks).save(tmp_path / "checks.png")
    out = decode_image(tmp_path / "checks.png", 10)
    assert out.shape == (3, 10, 10)
    assert np.all(np.abs(out.astype(int) - 128) <= 1)


@pytest.mark.parametrize(
    "mode, fmt, name",
    [
        ("L", "JPEG", "grey.JPEG"),
        ("CMYK", "JPEG", "cmyk.JPEG"),
        ("P", "PNG", "palette.png"),
        ("RGB", "PNG", "png-named.JPEG"),
        ("RGB", "GIF", "anim.gif"),
        ("RGB", "BMP", "old.bmp"),
        ("RGB", "WEBP", "new.webp"),
    ],
)
def test_any_mode_and_format_becomes_rgb(tmp_path, mode, fmt, name):
    colour = (200, 120, 40)
    if mode == "P":  # a palette whose entry 3 is colour
        img = Image.new("P", (30, 20), 3)
        img.putpalette([0, 0, 0] * 3 + list(colour) + [9, 9, 9] * 252)
    else:
        img = Image.new("RGB", (30, 20), colour).convert(mode)
    img.save(tmp_path / name, format=fmt)
    expected = (
        img.getpixel((0, 0))
        if mode == "P"
        else Image.new("RGB", (1, 1), colour).convert(mode).convert("RGB").getpixel((0, 0))
    )
    expected = colour if mode == "P" else expected
    out = decode_image(tmp_path / name, 8)
    assert out.shape == (3, 8, 8) and out.dtype == np.uint8
    lossy = 6 if fmt in ("JPEG", "WEBP") else 0
    assert np.abs(out.reshape(3, -1).astype(int) - np.array(expected)[:, None]).max() <= lossy


def test_transparency_is_composited_on_white_and_16_bit_scaled(tmp_path):
    rgba = np.zeros((10, 10, 4), dtype=np.uint8)
    rgba[..., 0] = 255
    rgba[:, 5:, 3] = 255  # left half fully transparent, right half opaque red
    Image.fromarray(rgba, "RGBA").save(tmp_path / "logo.png")
    out = decode_image(tmp_path / "logo.png", 10)
    assert out[:, :, 0].tolist() == [[255] * 10, [255] * 10, [255] * 10]  # white
    assert out[:, :, 9].tolist() == [[255] * 10, [0] * 10, [0] * 10]  # red
    deep = np.full((10, 10), 40000, dtype=np.uint16)  # 16-bit greyscale
    Image.fromarray(deep).save(tmp_path / "deep.png")
    assert np.all(decode_image(tmp_path / "deep.png", 4) == round(40000 * 255 / 65535))


def test_exif_orientation_is_applied(tmp_path):
    # Stored 20x10 with red on the left, blue on the right; EXIF orientation 6 says "rotate
    # 90 degrees clockwise to display": the photo is 10 wide, 20 tall, red on top.
    a = np.zeros((10, 20, 3), dtype=np.uint8)
    a[:, :10] = RED
    a[:, 10:] = BLUE
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(a).save(tmp_path / "phone.jpg", exif=exif.tobytes(), quality=95)
    out = decode_image(tmp_path / "phone.jpg", 10).astype(int)
    assert out[0, 1].mean() > 200 and out[2, 1].mean() < 60  # a top row is red
    assert out[2, 8].mean() > 200 and out[0, 8].mean() < 60  # a bottom row is blue


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"", "UnidentifiedImageError"),
        (b"GIF89a not really", "UnidentifiedImageError"),
        ("truncated", "(?i)truncated"),
    ],
)
def test_unreadable_files_raise_unreadable_image(tmp_path, content, reason):
    if content == "truncated":
        Image.new("RGB", (64, 64), (1, 2, 3)).save(tmp_path / "full.jpg", quality=95)
        content = (tmp_path / "full.jpg").read_bytes()[:300]
    (tmp_path / "bad.JPEG").write_bytes(content)
    with pytest.raises(UnreadableImage, match=reason) as info:
        decode_image(tmp_path / "bad.JPEG", 8)
    assert info.value.path == str(tmp_path / "bad.JPEG")
    assert info.value.reason.startswith(("UnidentifiedImageError: ", "OSError: "))
    assert isinstance(info.value, DataError)
    with pytest.raises(UnreadableImage, match="No such file"):
        decode_image(tmp_path / "missing.jpg", 8)


def test_jpeg_draft_mode_is_used_for_large_photos_and_is_accurate(tmp_path, monkeypatch):
    # A photo-like 800x600 JPEG: smooth colour fields plus sharp-edged shapes.
    rng = np.random.default_rng(0)
    coarse = rng.uniform(0, 255, size=(6, 8, 3)).astype(np.uint8)
    img = Image.fromarray(coarse).resize((800, 600), Image.Resampling.BICUBIC)
    a = np.asarray(img).copy()
    for _ in range(12):
        y, x = rng.integers(0, 550), rng.integers(0, 750)
        a[y : y + rng.integers(10, 50), x : x + rng.integers(10, 50)] = rng.integers(0, 255, 3)
    Image.fromarray(a).save(tmp_path / "photo.jpg", quality=90)

    drafts = []
    real_draft = JpegImagePlugin.JpegImageFile.draft
    monkeypatch.setattr(
        JpegImagePlugin.JpegImageFile,
        "draft",
        lambda self, mode, size: drafts.append(size) or real_draft(self, mode, size),
    )
    out = decode_image(tmp_path / "photo.jpg", 64).astype(int)
    assert drafts == [(171, 128)]  # shorter side >= 2 * 64
    # Reference: full-resolution decode, same geometry and filter.
    with Image.open(tmp_path / "photo.jpg") as im:
        im.load()
        full = (
            np.asarray(im.resize((64, 64), Image.Resampling.BILINEAR, box=(100, 0, 700, 600)))
            .transpose(2, 0, 1)
            .astype(int)
        )
    assert np.abs(out - full).mean() < 1.5  # about one grey level on average
    drafts.clear()
    decode_image(tmp_path / "photo.jpg", 256)  # 600 < 4 * 256: no draft
    assert drafts == []


@pytest.mark.skipif(not os.path.isdir(SAMPLES), reason="../shared/data not present")
def test_real_imagenet_samples_decode_and_draft_error_is_small():
    paths = sorted(glob.glob(os.path.join(SAMPLES, "*", "*.JPEG")))
    assert len(paths) == 100
    errors = []
    for path in paths[::5]:
        out = decode_image(path, 64).astype(int)
        with Image.open(path) as im:
            im = im.convert("RGB")
            w, h = im.size
            s = min(w, h)
            box = ((w - s) / 2, (h - s) / 2, (w + s) / 2, (h + s) / 2)
            full = np.asarray(im.resize((64, 64), Image.Resampling.BILINEAR, box=box))
        errors.append(np.abs(out - full.transpose(2, 0, 1)).mean())
    # Measured: 1.0 on average over all 100 samples; choosing bicubic over bilinear changes
    # the same images by 2.0.
    assert np.mean(errors) < 2.0


# -- build_split: skipped files, reuse, staleness --------------------------------------------


def make_folder(root, n_per_class=3, classes=("a", "b")):
    for k, cls in enumerate(classes):
        os.makedirs(root / cls, exist_ok=True)
        for i in range(n_per_class):
            Image.new("RGB", (16, 12), (50 * k + 10, 20 * i + 5, 77)).save(root / cls / f"{i}.png")


def identity(root, size=8, subset="all"):
    return {"source_root": str(root), "subset": subset, "image_size": size}


def files_of(root):
    classes = sorted(d for d in os.listdir(root) if not d.startswith("."))
    return list_class_folders(str(root), classes, "test")


def test_unreadable_files_are_skipped_reported_and_rows_stay_aligned(tmp_path):
    root = tmp_path / "data"
    make_folder(root)
    (root / "a" / "1.png").write_bytes(b"\x89PNG broken")  # middle of class a
    good = (root / "b" / "0.png").read_bytes()
    (root / "b" / "2.png").write_bytes(good[: len(good) // 2])  # truncated, last file
    files = files_of(root)
    logged = []
    with pytest.warns(UserWarning, match="skipped 2 unreadable file"):
        result = build_split(
            str(tmp_path / "c"), files, identity(root), "train", log=logged.append, chunk_size=2
        )
    report = (tmp_path / "c" / "skipped.txt").read_text().splitlines()
    assert [line.split("\t")[0] for line in report] == ["a/1.png", "b/2.png"]
    assert any("WARNING" in line and "a/1.png" in line for line in logged)
    ds = result.dataset
    assert len(ds) == 4 and ds.labels.tolist() == [0, 0, 1, 1]
    kept = [p for p in files.paths if not p.endswith(("a/1.png", "b/2.png"))]
    for row, path in zip(np.asarray(ds.images), kept):  # each row is its own file's pixels
        assert np.array_equal(row, decode_image(path, 8))
    # The .npy header was rewritten in place: a plain np.load sees 4 rows.
    assert np.load(tmp_path / "c" / "images.npy").shape == (4, 3, 8, 8)
    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert manifest["num_images"] == 4 and manifest["num_files"] == 6
    assert not os.path.exists(tmp_path / "c" / "progress")
    assert not os.path.exists(tmp_path / "c" / "plan.json")


def test_all_unreadable_is_an_error(tmp_path):
    root = tmp_path / "data"
    os.makedirs(root / "a")
    (root / "a" / "x.jpg").write_bytes(b"nope")
    with pytest.raises(DataError, match="none of the 1 images could be decoded"):
        build_split(str(tmp_path / "c"), files_of(root), identity(root), "train", log=quiet)


def test_cache_is_reused_and_rebuilt_when_files_change(tmp_path):
    root = tmp_path / "data"
    make_folder(root)
    folder = str(tmp_path / "c")
    first = build_split(
        folder, files_of(root), identity(root), "train", with_stats=True, log=quiet
    )
    assert first.decoded == 6 and first.stats is not None
    logged = []
    again = build_split(
        folder, files_of(root), identity(root), "train", with_stats=True, log=logged.append
    )
    assert again.decoded == 0 and "using the cache" in logged[0]
    np.testing.assert_array_equal(again.stats.mean, first.stats.mean)

    # Rewrite one file (new content, new mtime): rebuilt, and the new pixels are there.
    Image.new("RGB", (16, 12), (255, 255, 255)).save(root / "b" / "1.png")
    os.utime(root / "b" / "1.png", ns=(1, 1))
    logged.clear()
    changed = build_split(folder, files_of(root), identity(root), "train", log=logged.append)
    assert changed.decoded == 6 and "out of date (files were added" in logged[0]
    assert np.all(np.asarray(changed.dataset.images)[4] == 255)
    # Add a file, remove another.
    os.remove(root / "a" / "0.png")
    Image.new("RGB", (5, 5)).save(root / "a" / "9.png")
    Image.new("RGB", (5, 5)).save(root / "a" / "8.png")
    logged.clear()
    grown = build_split(folder, files_of(root), identity(root), "train", log=logged.append)
    assert "it holds 6 files, the folder now 7" in logged[0] and len(grown.dataset) == 7


def test_foreign_or_unrelated_cache_folders_are_refused(tmp_path):
    root = tmp_path / "data"
    make_folder(root, classes=("a", "b", "c"))
    other = tmp_path / "other"
    make_folder(other)
    open_dataset(root, image_size=8, val_fraction=0.34, cache_dir=tmp_path / "c", log=quiet)
    for kwargs, what in (
        (dict(image_size=16), "image size 16"),
        (dict(data_dir=other), "other"),
        (dict(subset=tmp_path / "ab.txt"), "ab.txt"),
    ):
        (tmp_path / "ab.txt").write_text("a\nb\n")
        args = dict(
            data_dir=root, image_size=8, val_fraction=0.34, cache_dir=tmp_path / "c", log=quiet
        )
        args.update(kwargs)
        with pytest.raises(DataError, match=f"belongs to another dataset.*needs .*{what}"):
            open_dataset(**args)
    # A folder of someone's files is never used (or touched) as a cache.
    personal = tmp_path / "Documents"
    os.makedirs(personal)
    (personal / "thesis.tex").write_text("precious")
    with pytest.raises(DataError, match="is not a minialexnet cache"):
        open_dataset(root, image_size=8, cache_dir=personal, log=quiet)
    assert os.listdir(personal) == ["thesis.tex"]


def test_default_cache_location_is_per_dataset_and_outside_the_data(tmp_path):
    root = tmp_path / "data"
    make_folder(root)
    logged = []
    open_dataset(root, image_size=8, val_fraction=0.34, log=logged.append)
    open_dataset(root, image_size=12, val_fraction=0.34, log=logged.append)
    made = sorted(os.listdir(tmp_path / "default-cache"))
    assert len(made) == 2 and made[0].startswith("data-all-S12-") and "-S8-" in made[1]
    assert sorted(os.listdir(root)) == ["a", "b"]


def test_not_enough_disk_space_is_a_clear_error(tmp_path, monkeypatch):
    root = tmp_path / "data"
    make_folder(root)
    monkeypatch.setattr(
        cache_files.shutil,
        "disk_usage",
        lambda path: types.SimpleNamespace(total=100, used=0, free=100),
    )
    with pytest.raises(DataError, match=r"needs 0\.0 GiB but .* has only 0\.0 GiB free"):
        build_split(str(tmp_path / "c"), files_of(root), identity(root), "train", log=quiet)


# -- interrupted preparation resumes ---------------------------------------------------------


def _count_decodes(monkeypatch, interrupt_after=None):
    calls = []
    real = cache.decode_image

    def counting(path, size):
        if interrupt_after is not None and len(calls) == interrupt_after:
            raise KeyboardInterrupt
        calls.append(path)
        return real(path, size)

    monkeypatch.setattr(cache, "decode_image", counting)
    return calls


def test_interrupted_preparation_resumes_without_redoing_chunks(tmp_path, monkeypatch):
    root = tmp_path / "data"
    make_folder(root, n_per_class=5)  # 10 files, chunks of 3
    folder = str(tmp_path / "c")
    reference = build_split(
        str(tmp_path / "ref"), files_of(root), identity(root), "train", log=quiet, chunk_size=3
    )
    # Ctrl-C in the middle of the third chunk: chunks 0 and 1 are finished.
    calls = _count_decodes(monkeypatch, interrupt_after=7)
    with pytest.raises(KeyboardInterrupt):
        build_split(folder, files_of(root), identity(root), "train", log=quiet, chunk_size=3)
    assert sorted(os.listdir(os.path.join(folder, "progress"))) == ["000000.json", "000001.json"]
    assert not os.path.exists(os.path.join(folder, "manifest.json"))
    monkeypatch.undo()
    calls = _count_decodes(monkeypatch)
    logged = []
    resumed = build_split(
        folder, files_of(root), identity(root), "train", log=logged.append, chunk_size=3
    )
    assert len(calls) == 4 and resumed.decoded == 4  # only chunks 2 and 3 again
    assert any("resuming an interrupted preparation (6/10 images done)" in line for line in logged)
    assert np.array_equal(np.asarray(resumed.dataset.images), np.asarray(reference.dataset.images))


def test_resume_starts_over_when_the_files_changed_meanwhile(tmp_path, monkeypatch):
    root = tmp_path / "data"
    make_folder(root, n_per_class=3)
    folder = str(tmp_path / "c")
    _count_decodes(monkeypatch, interrupt_after=3)
    with pytest.raises(KeyboardInterrupt):
        build_split(folder, files_of(root), identity(root), "train", log=quiet, chunk_size=2)
    monkeypatch.undo()
    Image.new("RGB", (5, 5)).save(root / "b" / "new.png")
    calls = _count_decodes(monkeypatch)
    logged = []
    build_split(folder, files_of(root), identity(root), "train", log=logged.append, chunk_size=2)
    assert len(calls) == 7 and any("starting over" in line for line in logged)


def test_prepare_resumes_through_open_dataset_with_worker_processes(tmp_path, monkeypatch):
    """Simulated interruption: only some chunks were prepared (their markers exist), the
    rest are done by two worker processes; the result equals a one-process build."""
    root = tmp_path / "data"
    make_folder(root, n_per_class=6, classes=("a", "b", "c"))
    monkeypatch.setattr(cache, "DEFAULT_CHUNK_SIZE", 4)
    single = open_dataset(
        root, image_size=8, val_fraction=0.25, workers=1, cache_dir=tmp_path / "one", log=quiet
    )
    _count_decodes(monkeypatch, interrupt_after=9)  # chunks 0, 1 done
    with pytest.raises(KeyboardInterrupt):
        open_dataset(
            root, image_size=8, val_fraction=0.25, workers=1, cache_dir=tmp_path / "two", log=quiet
        )
    monkeypatch.undo()
    monkeypatch.setattr(cache, "DEFAULT_CHUNK_SIZE", 4)
    logged = []
    double = open_dataset(
        root,
        image_size=8,
        val_fraction=0.25,
        workers=2,
        cache_dir=tmp_path / "two",
        log=logged.append,
    )
    assert any("(8/18 images done)" in line for line in logged)
    assert any("with 2 process(es)" in line for line in logged)
    for a, b in zip(single, double):
        if hasattr(a, "images"):
            assert np.array_equal(np.asarray(a.images), np.asarray(b.images))
            assert np.array_equal(a.labels, b.labels)
        else:
            np.testing.assert_array_equal(a.mean, b.mean)


# -- the prepare command ---------------------------------------------------------------------


def test_prepare_command(tmp_path, capsys):
    from minialexnet.prepare import main

    root = tmp_path / "data"
    make_folder(root, n_per_class=4)
    assert (
        main(
            [
                "--data-dir",
                str(root),
                "--image-size",
                "8",
                "--workers",
                "1",
                "--val-fraction",
                "0.25",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "ready: 6 training and 2 validation images of 3x8x8, 2 classes" in out
    assert "RGB PCA eigenvalues" in out
    assert main(["--data-dir", str(tmp_path / "nothing-here")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the data folder") and "Traceback" not in err


def test_a_cache_of_an_older_format_is_rebuilt(tmp_path, monkeypatch):
    root = tmp_path / "data"
    make_folder(root)
    open_dataset(root, image_size=8, val_fraction=0.34, cache_dir=tmp_path / "c", log=quiet)
    monkeypatch.setattr(cache, "CACHE_FORMAT_VERSION", cache.CACHE_FORMAT_VERSION + 1)
    monkeypatch.setattr(cache_dir, "CACHE_FORMAT_VERSION", cache.CACHE_FORMAT_VERSION)
    logged = []
    open_dataset(
        root, image_size=8, val_fraction=0.34, cache_dir=tmp_path / "c", log=logged.append
    )
    assert any("(made by another minialexnet version); rebuilding" in line for line in logged)
    identity = json.loads((tmp_path / "c" / "dataset.json").read_text())
    assert identity["format_version"] == cache.CACHE_FORMAT_VERSION


@pytest.mark.skipif(os.name != "posix", reason="the cache lock uses fcntl (POSIX)")
def test_a_second_run_waits_for_the_one_preparing_the_cache(tmp_path):
    import fcntl
    import threading

    root = tmp_path / "data"
    make_folder(root)
    folder = tmp_path / "c"
    os.makedirs(folder)
    holder = open(folder / ".lock", "a")
    fcntl.flock(holder, fcntl.LOCK_EX)  # "another process" is preparing
    logged = []
    worker = threading.Thread(
        target=lambda: logged.append(
            build_split(str(folder), files_of(root), identity(root), "train", log=logged.append)
        )
    )
    worker.start()
    worker.join(timeout=0.5)
    assert worker.is_alive()  # blocked on the lock
    assert any("waiting for another process" in str(line) for line in logged)
    fcntl.flock(holder, fcntl.LOCK_UN)
    holder.close()
    worker.join(timeout=30)
    assert not worker.is_alive() and len(logged[-1].dataset) == 6


def test_statistics_are_added_to_a_cache_made_without_them(tmp_path, monkeypatch):
    root = tmp_path / "data"
    make_folder(root)
    folder = str(tmp_path / "c")
    build_split(folder, files_of(root), identity(root), "val", log=quiet)
    calls = _count_decodes(monkeypatch)
    again = build_split(folder, files_of(root), identity(root), "val", with_stats=True, log=quiet)
    assert calls == [] and again.stats is not None  # no image decoded again
    np.testing.assert_allclose(
        again.stats.mean, np.asarray(again.dataset.images, np.float64).mean(axis=0), atol=1e-4
    )
