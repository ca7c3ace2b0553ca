"""The teaching notebooks run from top to bottom, and are committed without outputs.

Every ``notebooks/*.ipynb`` is found by glob (so a new notebook is tested as soon as it exists)
and executed with nbclient:

- on a ``python3`` kernel that is *this* interpreter's ipykernel (a kernelspec written to a
  temporary folder at the front of ``JUPYTER_PATH``, so a stray user-level ``python3`` kernel
  of another Python cannot be picked up instead);
- with the notebook's own folder as the working directory, as Jupyter does;
- with ``MINIALEXNET_FAST=1``: each notebook then shrinks its experiments (fewer images and
  epochs) to a smoke test of its code paths that runs in seconds;
- under one deadline for the whole notebook (``MINIALEXNET_NOTEBOOK_TIMEOUT`` seconds, default
  300): a hang fails the test instead of stalling CI. This is a hang guard, not a timing
  assertion; on two cores each of notebooks 01-05 takes well under a minute.

The committed files must carry no outputs and no execution counts, so that diffs show only
what a person wrote; clear them with ``jupyter nbconvert --clear-output --inplace
notebooks/NAME.ipynb`` before committing. Every notebook must honour ``MINIALEXNET_FAST``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
IDS = [path.name for path in NOTEBOOKS]
TIMEOUT_S = float(os.environ.get("MINIALEXNET_NOTEBOOK_TIMEOUT", "300"))


def test_notebooks_exist():
    assert NOTEBOOKS, f"no notebooks found in {NOTEBOOK_DIR}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_is_committed_clean(path):
    """Valid nbformat 4, no outputs, no execution counts, and a FAST switch."""
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code_cells = [(i, cell) for i, cell in enumerate(nb.cells) if cell.cell_type == "code"]
    dirty = [i for i, cell in code_cells if cell.outputs or cell.execution_count is not None]
    assert not dirty, (
        f"{path.name}: code cells {dirty} carry outputs or execution counts; clear them "
        f"with `jupyter nbconvert --clear-output --inplace "
        f"{path.relative_to(NOTEBOOK_DIR.parent)}`"
    )
    source = "\n".join(cell.source for _, cell in code_cells)
    assert "MINIALEXNET_FAST" in source, (
        f"{path.name} never reads MINIALEXNET_FAST: every notebook must shrink its "
        f"experiments when MINIALEXNET_FAST=1, because the test suite runs them all"
    )


@pytest.fixture(scope="session")
def this_python_kernel(tmp_path_factory) -> Path:
    """A JUPYTER_PATH folder holding a ``python3`` kernelspec for the running interpreter."""
    from ipykernel.kernelspec import write_kernel_spec

    root = tmp_path_factory.mktemp("jupyter")
    write_kernel_spec(root / "kernels" / "python3")
    return root


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_runs(path, this_python_kernel, monkeypatch):
    """Execute every cell in order (fast mode); any exception in a cell fails the test."""
    from nbclient.exceptions import CellTimeoutError

    monkeypatch.setenv("MINIALEXNET_FAST", "1")
    monkeypatch.setenv(
        "JUPYTER_PATH",
        os.pathsep.join(filter(None, [str(this_python_kernel), os.environ.get("JUPYTER_PATH")])),
    )
    monkeypatch.delenv("MPLBACKEND", raising=False)  # let ipykernel use the inline backend

    nb = nbformat.read(path, as_version=4)
    deadline = time.monotonic() + TIMEOUT_S

    def time_left(cell) -> int:  # one deadline for the whole notebook
        return max(1, int(deadline - time.monotonic()))

    client = nbclient.NotebookClient(
        nb,
        kernel_name="python3",
        timeout_func=time_left,
        startup_timeout=120,
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
    )
    try:
        client.execute()
    except CellTimeoutError:
        pytest.fail(
            f"{path.name} did not finish within {TIMEOUT_S:g} s in fast mode "
            f"(MINIALEXNET_NOTEBOOK_TIMEOUT); a cell hangs or the fast mode is too big"
        )
