"""Checkpoints: round trip, atomic writes, and clear errors for bad files."""

import json
import os

import numpy as np
import pytest
from helpers import run_python

from minialexnet.data.dataset import DatasetStats
from minialexnet.model import AlexNet
from minialexnet.optim import SGD
from minialexnet.training import checkpoint as ckpt_mod
from minialexnet.training.checkpoint import (
    CheckpointError,
    load_checkpoint,
    model_from_checkpoint,
    restore_model,
    save_checkpoint,
)


def _stats(size=35):
    rng = np.random.default_rng(0)
    return DatasetStats(
        mean=rng.uniform(0, 255, (3, size, size)),
        pca_eigvals=np.array([30.0, 5.0, 1.0]),
        pca_eigvecs=np.linalg.qr(rng.standard_normal((3, 3)))[0],
    )


def _trained_tiny(seed=0):
    model = AlexNet(4, "tiny", rng=np.random.default_rng(seed))
    opt = SGD(model, lr=0.1)
    for name, p, _ in model.named_parameters():  # non-zero momentum buffers
        opt.velocity[name][...] = np.random.default_rng(1).standard_normal(p.shape)
    return model, opt


def test_round_trip_restores_everything(tmp_path):
    model, opt = _trained_tiny()
    stats = _stats()
    path = tmp_path / "c.npz"
    save_checkpoint(path, model, opt, stats, meta={"epoch": 3, "class_names": list("abcd")})
    ckpt = load_checkpoint(path)
    assert ckpt.meta["epoch"] == 3 and ckpt.meta["class_names"] == list("abcd")
    assert ckpt.meta["arch"] == "tiny" and ckpt.meta["num_classes"] == 4
    assert ckpt.meta["input_size"] == 31 and ckpt.meta["image_size"] == 35
    assert ckpt.meta["lr"] == 0.1 and ckpt.meta["optimizer"]["momentum"] == 0.9
    for name, p, _ in model.named_parameters():
        np.testing.assert_array_equal(ckpt.params[name], p)
        np.testing.assert_array_equal(ckpt.optim[name], opt.velocity[name])
    np.testing.assert_array_equal(ckpt.stats.mean, stats.mean)
    np.testing.assert_array_equal(ckpt.stats.pca_eigvecs, stats.pca_eigvecs)
    with np.load(path, allow_pickle=False) as npz:  # the documented layout
        assert "param/conv1.W" in npz.files and "optim/fc8.b" in npz.files
        assert {"data/mean", "data/pca_eigvals", "data/pca_eigvecs", "meta"} <= set(npz.files)


def test_model_from_checkpoint_rebuilds_the_same_function(tmp_path):
    model = AlexNet(3, "tiny", rng=np.random.default_rng(4), activation="tanh", lrn=False)
    save_checkpoint(tmp_path / "m.npz", model)
    clone, ckpt = model_from_checkpoint(tmp_path / "m.npz")
    assert clone.config == model.config and ckpt.stats is None and ckpt.optim == {}
    x = np.random.default_rng(0).normal(0, 3, (2, 3, 31, 31)).astype(np.float32)
    np.testing.assert_array_equal(clone.forward(x), model.forward(x))


class Boom(Exception):
    pass


@pytest.mark.parametrize("error", [Boom, KeyboardInterrupt])
def test_a_failed_write_leaves_the_old_checkpoint_and_no_temporary_file(
    tmp_path, monkeypatch, error
):
    model, _ = _trained_tiny()
    path = tmp_path / "checkpoint_last.npz"
    save_checkpoint(path, model, meta={"epoch": 1})
    before = path.read_bytes()

    def half_written(f, **arrays):
        f.write(b"PK\x03\x04 half a zip file")
        raise error("disk full / Ctrl-C in the middle of the write")

    monkeypatch.setattr(ckpt_mod.np, "savez", half_written)
    with pytest.raises(error):
        save_checkpoint(path, model, meta={"epoch": 2})
    assert path.read_bytes() == before
    assert load_checkpoint(path).meta["epoch"] == 1
    assert sorted(os.listdir(tmp_path)) == ["checkpoint_last.npz"]
    with pytest.raises(error):
        save_checkpoint(tmp_path / "new.npz", model)
    assert sorted(os.listdir(tmp_path)) == ["checkpoint_last.npz"]


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.npz")


def test_truncated_and_garbage_files_are_reported_as_corrupt(tmp_path):
    model, opt = _trained_tiny()
    path = tmp_path / "c.npz"
    save_checkpoint(path, model, opt)
    data = path.read_bytes()
    (tmp_path / "truncated.npz").write_bytes(data[: len(data) // 2])
    (tmp_path / "garbage.npz").write_bytes(b"this is not a zip file" * 10)
    for name in ("truncated.npz", "garbage.npz"):
        with pytest.raises(CheckpointError, match="corrupt, truncated or not an .npz"):
            load_checkpoint(tmp_path / name)


def test_foreign_npz_files(tmp_path):
    np.savez(tmp_path / "weights.npz", w=np.zeros(3))
    with pytest.raises(CheckpointError, match="not a minialexnet checkpoint"):
        load_checkpoint(tmp_path / "weights.npz")
    # Object arrays would need pickle, which is never allowed.
    np.savez(tmp_path / "pickled.npz", meta=np.array([{"a": 1}], dtype=object))
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_checkpoint(tmp_path / "pickled.npz")
    np.savez(tmp_path / "future.npz", meta=np.array(json.dumps({"format_version": 99})))
    with pytest.raises(CheckpointError, match="format_version 99"):
        load_checkpoint(tmp_path / "future.npz")


def test_foreign_architecture_is_refused_with_both_descriptions(tmp_path):
    tiny, _ = _trained_tiny()
    save_checkpoint(tmp_path / "tiny.npz", tiny)
    ckpt = load_checkpoint(tmp_path / "tiny.npz")
    mini = AlexNet(4, "mini")
    with pytest.raises(
        CheckpointError, match="different network: variant='tiny'.*this run builds variant='mini'"
    ):
        restore_model(mini, ckpt, "tiny.npz")
    other_classes = AlexNet(5, "tiny")
    with pytest.raises(CheckpointError, match="num_classes=4.*num_classes=5"):
        restore_model(other_classes, ckpt)


def test_meta_must_be_json(tmp_path):
    model, _ = _trained_tiny()
    with pytest.raises(TypeError, match="JSON-serialisable"):
        save_checkpoint(tmp_path / "c.npz", model, meta={"bad": object()})
    assert not os.listdir(tmp_path)


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
@pytest.mark.parametrize(
    "umask, expected",
    [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)],
    ids=["umask-022", "umask-027", "umask-002"],
)
def test_atomic_write_gives_the_permissions_of_a_new_file(tmp_path, umask, expected):
    """Not mkstemp's owner-only 0o600: a shared cache or run folder must stay readable."""
    target = tmp_path / "out.bin"
    run_python(
        f"import os; os.umask({umask}); from minialexnet.atomic import atomic_write; "
        f"atomic_write({str(target)!r}, lambda f: f.write(b'x'))",
        timeout=120,
    )
    assert target.read_bytes() == b"x"
    assert os.stat(target).st_mode & 0o777 == expected


def test_same_network_ignores_preprocessing_class_names_and_keys_older_files_lack():
    from minialexnet.training.checkpoint import same_network

    built = AlexNet(3, "tiny", rng=np.random.default_rng(0)).config
    older = {k: v for k, v in built.items() if k not in ("preprocessing", "class_names")}
    assert same_network(older, built)
    renamed = dict(
        built,
        class_names=["a", "b", "c"],
        preprocessing={"channels": "BGR", "mean": [1.0, 2.0, 3.0]},
    )
    assert same_network(renamed, built)
    assert not same_network(dict(built, num_classes=4), built)
    assert not same_network(dict(built, variant="mini"), built)
