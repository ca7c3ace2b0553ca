"""set_threads: Numba's and BLAS's thread counts move together; OMP_WAIT_POLICY and
OPENBLAS_THREAD_TIMEOUT are set only while the thread pools start."""

import json
import os

import numba
import numpy as np
import pytest
from helpers import run_python

from minialexnet.threads import blas_core, blas_threads, set_threads, start_numba_threads


def test_set_threads_sets_numba_and_blas_together():
    before = (numba.get_num_threads(), blas_threads())
    try:
        used = set_threads(1)
        assert used["numba"] == numba.get_num_threads() == 1
        if used["blas"] is not None:  # a NumPy built on another BLAS: not reachable
            assert used["blas"] == blas_threads() == 1
    finally:
        numba.set_num_threads(before[0])
        if before[1] is not None:
            set_threads(before[0])


def test_set_threads_caps_numba_at_its_pool_and_rejects_nonsense():
    before = numba.get_num_threads()
    try:
        assert set_threads(10_000)["numba"] == numba.config.NUMBA_NUM_THREADS
    finally:
        set_threads(before)
    with pytest.raises(ValueError, match="threads"):
        set_threads(0)


def test_blas_core_is_a_name_or_unknown():
    core = blas_core()
    assert core is None or (isinstance(core, str) and core)


def test_start_numba_threads_restores_the_environment(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    start_numba_threads()
    assert "OMP_WAIT_POLICY" not in os.environ
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    start_numba_threads()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


def test_fit_sets_the_threads_of_its_config(monkeypatch):
    """``TrainConfig(threads=N)`` (``train --threads N``) reaches ``set_threads``."""
    from minialexnet.data.synthetic import make_synthetic
    from minialexnet.model import AlexNet
    from minialexnet.training import TrainConfig, fit, trainer

    calls = []
    monkeypatch.setattr(trainer, "set_threads", calls.append)
    data = make_synthetic("train", num_classes=3, n_per_class=2, image_size=32, seed=1)
    fit(
        AlexNet(3, "tiny", rng=np.random.default_rng(0)),
        data,
        data,
        TrainConfig(epochs=1, batch_size=3, lr=0.01, schedule=None, threads=1),
        log=lambda line: None,
    )
    assert calls == [1]
    with pytest.raises(ValueError, match="threads"):
        TrainConfig(threads=0)


# A fresh interpreter: which OPENBLAS_THREAD_TIMEOUT NumPy saw when it was imported (a finder
# that runs before NumPy's), and what is left in the environment afterwards.
TIMEOUT_SEEN_BY_NUMPY = """
import json, os, sys

seen = []


class Watch:
    def find_spec(self, name, path=None, target=None):
        if name == "numpy":
            seen.append(os.environ.get("OPENBLAS_THREAD_TIMEOUT"))
        return None


sys.meta_path.insert(0, Watch())
if NUMPY_FIRST:
    import numpy
import minialexnet
print(json.dumps({"seen": seen, "after": os.environ.get("OPENBLAS_THREAD_TIMEOUT")}))
"""


def timeout_seen_by_numpy(numpy_first: bool, user_value: str | None) -> tuple:
    """(what NumPy's import saw, what the environment holds after ``import minialexnet``)."""
    code = TIMEOUT_SEEN_BY_NUMPY.replace("NUMPY_FIRST", repr(numpy_first))
    if user_value is None:
        out = run_python(code, unset_env=("OPENBLAS_THREAD_TIMEOUT",))
    else:
        out = run_python(code, set_env={"OPENBLAS_THREAD_TIMEOUT": user_value})
    result = json.loads(out.strip().splitlines()[-1])
    return result["seen"], result["after"]


def test_numpy_is_imported_with_sleeping_blas_workers_and_the_environment_restored():
    assert timeout_seen_by_numpy(numpy_first=False, user_value=None) == (["4"], None)
    # A value the user chose is what OpenBLAS sees, and it stays.
    assert timeout_seen_by_numpy(numpy_first=False, user_value="12") == (["12"], "12")
    # NumPy imported first: its import saw no value, and minialexnet leaves none behind
    # (it sets the variable only while OpenBLAS reads it again: the test below).
    assert timeout_seen_by_numpy(numpy_first=True, user_value=None) == ([None], None)


# A fresh interpreter with NumPy imported first, as in every notebook: process CPU time
# during a 0.1 s sleep right after a matrix product, which OpenBLAS's workers spend spinning
# unless they were told to sleep at once. One JSON line per case.
SPIN_AFTER_PRODUCT = """
import json, time
import numpy as np
if IMPORT_MINIALEXNET:
    import minialexnet
    from minialexnet.threads import blas_threads
    threads = blas_threads()
else:
    threads = None
a = np.ones((1500, 1500), dtype=np.float32)
busy = []
for _ in range(3):
    a @ a
    start = time.process_time()
    time.sleep(0.1)
    busy.append(time.process_time() - start)
print(json.dumps({"busy": sorted(busy)[1], "threads": threads}))
"""


def cpu_seconds_while_idle(import_minialexnet: bool) -> dict:
    code = SPIN_AFTER_PRODUCT.replace("IMPORT_MINIALEXNET", repr(import_minialexnet))
    out = run_python(code, unset_env=("OPENBLAS_THREAD_TIMEOUT",))
    return json.loads(out.strip().splitlines()[-1])


def test_blas_workers_started_before_minialexnet_are_put_to_sleep():
    plain = cpu_seconds_while_idle(import_minialexnet=False)
    if plain["busy"] < 0.02:
        pytest.skip("this OpenBLAS (or its thread count) does not spin after a product")
    fixed = cpu_seconds_while_idle(import_minialexnet=True)
    assert fixed["threads"] >= 2  # the workers were restarted, not lost
    assert fixed["busy"] < 0.02, (plain, fixed)
