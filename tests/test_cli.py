"""The four command lines share ``minialexnet.cli`` and never import one another."""

from __future__ import annotations

import ast
import os

import pytest
from helpers import REPO, run_python

COMMANDS = ("train", "evaluate", "predict", "prepare")


def _imported_modules(path: str) -> set[str]:
    """Every module an ``import`` statement anywhere in the file names (also inside
    functions), with ``from minialexnet import x`` counted as ``minialexnet.x``."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=path)
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("command", COMMANDS)
def test_a_command_line_module_names_no_other_one(command):
    path = os.path.join(REPO, "minialexnet", f"{command}.py")
    others = {f"minialexnet.{other}" for other in COMMANDS if other != command}
    assert not _imported_modules(path) & others


@pytest.mark.parametrize("command", COMMANDS)
def test_importing_a_command_line_loads_no_other_one(command):
    """Not even through another module: the command is imported alone, in a fresh process."""
    loaded = run_python(
        f"import sys, minialexnet.{command}; print(' '.join(sorted(sys.modules)))", timeout=120
    ).split()
    assert [m for m in loaded if m in {f"minialexnet.{c}" for c in COMMANDS}] == [
        f"minialexnet.{command}"
    ]


def test_train_evaluate_runs_the_evaluate_command_s_function():
    from minialexnet import evaluate, train
    from minialexnet.training.evaluation import evaluate_checkpoint

    assert train.evaluate_checkpoint is evaluate_checkpoint
    assert evaluate.evaluate_checkpoint is evaluate_checkpoint


@pytest.mark.parametrize(
    "text, message",
    [
        ("0", "must be a positive integer, got 0"),
        ("x", "expected a positive integer, got 'x'"),
    ],
)
def test_positive_int_rejects_with_a_message(text, message):
    import argparse

    from minialexnet.cli import positive_int

    with pytest.raises(argparse.ArgumentTypeError, match=message):
        positive_int(text)
    assert positive_int("3") == 3


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_has_help_text(command):
    import importlib

    parser = importlib.import_module(f"minialexnet.{command}").build_parser()
    silent = [
        action.option_strings or [action.dest] for action in parser._actions if not action.help
    ]
    assert not silent


def test_train_passes_cache_dir_and_val_labels_to_the_data(monkeypatch, tmp_path):
    from minialexnet import cli, train

    seen = {}

    def open_dataset(data_dir, subset, **options):
        seen.update(options, data_dir=data_dir)
        raise cli.imagenet.DataError("stop here")

    monkeypatch.setattr(cli.imagenet, "open_dataset", open_dataset)
    with pytest.raises(SystemExit):
        train.main(
            [
                "--data-dir",
                str(tmp_path),
                "--cache-dir",
                str(tmp_path / "c"),
                "--val-labels",
                str(tmp_path / "val.txt"),
                "--output",
                str(tmp_path / "r"),
            ]
        )
    assert seen["cache_dir"] == str(tmp_path / "c")
    assert seen["val_labels"] == str(tmp_path / "val.txt")
