"""Data-parallel training (minialexnet.distributed): shards, the Allreduce, one voice, MPI runs.

The tests without MPI run everywhere. The tests that start ``mpiexec`` (2 and 3 processes of
``tests/distributed_worker.py``) use the ``mpiexec`` installed beside this Python (the ``mpich``
wheel of the ``test`` extra) and skip only where ``mpi4py`` is not installed.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
import sys

import numpy as np
import pytest
from helpers import REPO, run_python
from hypothesis import given, settings
from hypothesis import strategies as st

from minialexnet.distributed import (
    DataParallelEngine,
    GradientAllreduce,
    Shard,
    SingleProcess,
    check_batches,
    dropout_layers,
    launched_by_mpi,
    launched_world_size,
    local_rank_from_environment,
    main_only,
    prepared_once,
    shard_of,
    sharded_dropout,
    stop_all_on_failure,
)
from minialexnet.engine import CPUEngine
from minialexnet.layers import Dropout
from minialexnet.model import AlexNet
from minialexnet.optim import SGD

WORKER = os.path.join(REPO, "tests", "distributed_worker.py")
MPI_TIMEOUT_S = 300  # generous: three processes share two busy cores
RELATIVE_TOLERANCE = 1e-5
_LAUNCHER_PREFIXES = ("PMI_", "PMIX_", "OMPI_", "MV2_", "MPI_LOCAL", "HYDRA_", "SLURM_")


# -- launch: the environment of an MPI launcher ------------------------------------------------


@pytest.mark.parametrize(
    "environ, size, local",
    [
        ({}, 1, None),
        ({"PMI_SIZE": "4", "PMI_RANK": "2", "MPI_LOCALRANKID": "1"}, 4, 1),  # MPICH hydra
        ({"PMI_SIZE": "1", "PMI_RANK": "0"}, 1, None),  # mpiexec -n 1
        ({"OMPI_COMM_WORLD_SIZE": "3", "OMPI_COMM_WORLD_LOCAL_RANK": "2"}, 3, 2),  # Open MPI
        ({"SLURM_NTASKS": "8", "SLURM_LOCALID": "3"}, 1, 3),  # sbatch, no srun
        (
            {"SLURM_NTASKS": "8", "SLURM_STEP_ID": "0", "PMIX_RANK": "5", "SLURM_LOCALID": "1"},
            8,
            1,
        ),  # srun --mpi=pmix
        ({"PMIX_RANK": "0"}, 2, None),  # size unknown
    ],
)
def test_launch_reads_the_launchers_environment(environ, size, local):
    assert launched_world_size(environ) == size
    assert launched_by_mpi(environ) == (size > 1)
    assert local_rank_from_environment(environ) == local


def test_a_single_process_never_imports_mpi4py():
    out = run_python(
        "import sys\n"
        "from minialexnet.distributed import init_context, DataParallelEngine\n"
        "print(type(init_context()).__name__, 'mpi4py' in sys.modules)\n",
        unset_env=[k for k in os.environ if k.startswith(_LAUNCHER_PREFIXES)],
    )
    assert out.split() == ["SingleProcess", "False"]


# -- shards -----------------------------------------------------------------------------------


def test_shards_by_hand():
    assert [tuple(shard_of(128, 3, r)) for r in range(3)] == [
        (0, 43, 128),
        (43, 86, 128),
        (86, 128, 128),
    ]
    assert [shard_of(10, 4, r).size for r in range(4)] == [3, 3, 2, 2]
    assert shard_of(7, 1, 0) == Shard(0, 7, 7) and shard_of(7, 1, 0).weight == 1.0
    assert shard_of(15, 2, 1).weight == 7 / 15


@given(st.integers(1, 1000), st.integers(1, 64))
@settings(max_examples=200, deadline=None)
def test_shards_cover_the_batch_evenly_and_weights_sum_to_one(batch, size):
    if batch < size:
        with pytest.raises(ValueError, match="at least one image"):
            shard_of(batch, size, 0)
        return
    shards = [shard_of(batch, size, r) for r in range(size)]
    assert shards[0].start == 0 and shards[-1].stop == batch
    assert all(a.stop == b.start for a, b in itertools.pairwise(shards))
    assert max(s.size for s in shards) - min(s.size for s in shards) <= 1
    assert sum(s.weight for s in shards) == pytest.approx(1.0, rel=1e-12)


def test_shard_errors_are_clear():
    with pytest.raises(ValueError, match=r"rank 3 is not in 0\.\.2"):
        shard_of(10, 3, 3)
    check_batches(70, 15, 3)  # last batch 10 >= 3
    check_batches(64, 16, 4)  # no smaller last batch
    with pytest.raises(ValueError, match="leave a batch of 1 images, fewer than the 2"):
        check_batches(61, 15, 2)
    with pytest.raises(ValueError, match="leave a batch of 2 images, fewer than the 3"):
        check_batches(2, 16, 3)


# -- dropout: the global batch's mask, one shard's rows ---------------------------------------


def test_dropout_shard_takes_its_rows_of_the_global_mask():
    x = np.random.default_rng(1).standard_normal((7, 5, 3)).astype(np.float32)
    dy = np.random.default_rng(2).standard_normal((7, 5, 3)).astype(np.float32)
    whole = Dropout(0.5, np.random.default_rng(9))
    y, dx = whole.forward(x, train=True), whole.backward(dy)
    for start, stop in ((0, 3), (3, 5), (5, 7)):
        part = Dropout(0.5, np.random.default_rng(9))
        part.shard = (start, stop, 7)
        np.testing.assert_array_equal(part.forward(x[start:stop], train=True), y[start:stop])
        np.testing.assert_array_equal(part.backward(dy[start:stop]), dx[start:stop])
        assert part.rng.bit_generator.state == whole.rng.bit_generator.state


def test_dropout_default_path_is_unchanged():
    x = np.ones((4, 6), dtype=np.float32)
    keep = np.random.default_rng(5).random((4, 6)) >= 0.3
    y = Dropout(0.3, np.random.default_rng(5)).forward(x, train=True)
    np.testing.assert_array_equal(y, keep * np.float32(1 / 0.7))


def test_dropout_shard_that_does_not_fit_is_refused():
    layer = Dropout(0.5, np.random.default_rng(0))
    layer.shard = (2, 5, 8)
    with pytest.raises(ValueError, match="does not fit a batch of 4 rows"):
        layer.forward(np.ones((4, 3), dtype=np.float32), train=True)


def test_sharded_dropout_sets_and_clears_every_dropout_layer():
    model = AlexNet(10, "tiny", rng=np.random.default_rng(0))
    layers = dropout_layers(model)
    assert len(layers) == 2
    with sharded_dropout(model, Shard(2, 4, 9)):
        assert all(layer.shard == (2, 4, 9) for layer in layers)
    assert all(layer.shard is None for layer in layers)


# -- the Allreduce buffer and the engine, in one process --------------------------------------


def test_gradient_allreduce_packs_weighs_and_unpacks():
    rng = np.random.default_rng(0)
    grads = [rng.standard_normal(s).astype(np.float32) for s in ((3, 4), (5,), (2, 2, 2))]
    grads.append(rng.standard_normal((4, 3)).astype(np.float32).T)  # not C-contiguous
    expected = [g * np.float32(0.25) for g in grads]
    allreduce = GradientAllreduce(grads, SingleProcess())
    assert allreduce.nbytes == 4 * (12 + 5 + 8 + 12)
    stats = allreduce(grads, 0.25, np.array([1.5, 3, 7]))
    for g, e in zip(grads, expected):
        np.testing.assert_array_equal(g, e)
    np.testing.assert_array_equal(stats, [1.5, 3, 7])
    with pytest.raises(ValueError, match="was built for gradients shaped"):
        allreduce(grads[:2], 1.0, np.zeros(3))
    with pytest.raises(TypeError, match="float32 gradients"):
        GradientAllreduce([np.zeros(3)], SingleProcess())


def _tiny_engine(seed: int = 0) -> CPUEngine:
    model = AlexNet(10, "tiny", rng=np.random.default_rng(seed))
    return CPUEngine(model, SGD(model, lr=0.01))


def test_data_parallel_engine_of_one_process_is_the_local_engine():
    rng = np.random.default_rng(4)
    plain, wrapped = _tiny_engine(), DataParallelEngine(_tiny_engine(), SingleProcess())
    for _ in range(3):
        x = rng.standard_normal((6, 3, 31, 31)).astype(np.float32)
        labels = rng.integers(0, 10, 6)
        got, expected = wrapped.train_step(x, labels), plain.train_step(x, labels)
        assert got._replace(loss=0) == expected._replace(loss=0)
        assert got.loss == pytest.approx(expected.loss, rel=1e-6)  # a float32 slot
    for (name, a, _), (_, b, _) in zip(
        plain.model.named_parameters(), wrapped.model.named_parameters()
    ):
        np.testing.assert_array_equal(a, b, err_msg=name)
    assert wrapped.last_shard == Shard(0, 6, 6)
    wrapped.check_replicas()


class CudaLikeEngine:
    """Stands for a GPU engine: not a CPUEngine, so its dropout masks are its own."""

    def __init__(self, model) -> None:
        self.model, self.optimizer = model, SGD(model, lr=0.01)
        self.input_size, self.num_classes = model.input_size, model.num_classes

    def sync_to_host(self) -> None:
        pass

    def load_from_host(self) -> None:
        pass


def test_an_engine_with_its_own_dropout_masks_is_refused():
    engine = CudaLikeEngine(AlexNet(10, "tiny", rng=np.random.default_rng(0)))
    with pytest.raises(ValueError, match="CudaLikeEngine draws its dropout masks on its own"):
        DataParallelEngine(engine, SingleProcess())
    engine.follows_dropout_shard = True
    DataParallelEngine(engine, SingleProcess())
    DataParallelEngine(CudaLikeEngine(AlexNet(10, "tiny", dropout=0.0)), SingleProcess())


# -- one voice, no hangs, cache (single process) ----------------------------------------------


def test_main_only_logs_on_rank_0_only():
    lines = []

    class Rank1(SingleProcess):
        rank, size = 1, 2

        @property
        def is_main(self):
            return False

    main_only(lines.append, SingleProcess())("rank 0 speaks")
    main_only(lines.append, Rank1())("rank 1 is silent")
    assert lines == ["rank 0 speaks"]


def test_single_process_failure_is_an_ordinary_exception():
    with pytest.raises(KeyError, match="plain"), stop_all_on_failure(SingleProcess()):
        raise KeyError("plain")


def test_prepared_once_in_one_process_opens_once():
    calls = []
    assert prepared_once(lambda: calls.append(1) or "cache", SingleProcess()) == "cache"
    assert calls == [1]


# -- GPU buffers, under the CUDA simulator ----------------------------------------------------


def test_device_gradients_under_the_cuda_simulator():
    """Host staging (non-CUDA-aware MPI) and the device buffer with its weighting kernel
    (CUDA-aware MPI), with simulated device arrays; what a real MPI does with a device
    buffer cannot be tested without GPUs."""
    pytest.importorskip("numba.cuda")
    out = run_python(
        "import numpy as np\n"
        "from numba import cuda\n"
        "from minialexnet.distributed import GradientAllreduce, SingleProcess\n"
        "class Aware(SingleProcess):\n"
        "    cuda_aware = True\n"
        "rng = np.random.default_rng(0)\n"
        "host = [rng.standard_normal(s).astype(np.float32) for s in ((3, 4), (5,))]\n"
        "for context in (SingleProcess(), Aware()):\n"
        "    grads = [cuda.to_device(g) for g in host]\n"
        "    a = GradientAllreduce(grads, context)\n"
        "    stats = a(grads, 0.5, np.array([1.0, 2, 3]))\n"
        "    ok = all(np.array_equal(g.copy_to_host(), h * np.float32(0.5))\n"
        "             for g, h in zip(grads, host))\n"
        "    print(a.device_buffer is not None, ok, stats.tolist())\n",
        set_env={"NUMBA_ENABLE_CUDASIM": "1"},
    )
    assert out.splitlines() == ["False True [1.0, 2.0, 3.0]", "True True [1.0, 2.0, 3.0]"]


# -- MPI: 2 and 3 processes under mpiexec -----------------------------------------------------


def _mpiexec() -> str:
    pytest.importorskip("mpi4py", reason="mpi4py is not installed (pip install -e '.[mpi]')")
    path = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    assert os.path.exists(path), (
        f"mpi4py is installed but there is no mpiexec beside "
        f"{sys.executable}: install the mpich wheel "
        f"(pip install -e '.[test]')"
    )
    return path


def _reports(folder) -> str:
    """The lines the worker's ranks wrote with ``say``, rank 0's first."""
    names = sorted(os.listdir(folder))
    return "".join(open(os.path.join(folder, name)).read() for name in names)


def _run(processes: int | None, *args: str, timeout: float = MPI_TIMEOUT_S, reports=None):
    """Run the worker under ``mpiexec -n processes`` (plain Python if None); return
    (exit status, stdout, stderr). The whole process group is killed on a timeout."""
    command = [sys.executable, WORKER, *args]
    if processes is not None:
        command = [_mpiexec(), "-n", str(processes), *command]
    env = {k: v for k, v in os.environ.items() if not k.startswith(_LAUNCHER_PREFIXES)}
    if reports is not None:
        env["WORKER_REPORTS"] = str(reports)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    child = subprocess.Popen(
        command,
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        out, err = child.communicate()
        pytest.fail(f"{' '.join(command)} did not end within {timeout} s:\n{err[-3000:]}")
    return child.returncode, out, err


@pytest.fixture(scope="module")
def one_process_epoch(tmp_path_factory):
    """One epoch of the built-in data in one process, the reference (batch 15: uneven
    shards for 2 and 3 processes, and a last batch of 10)."""
    _mpiexec()
    out = str(tmp_path_factory.mktemp("mpi") / "one.npz")
    code, _, err = _run(None, "train", out, "15")
    assert code == 0, err[-3000:]
    return np.load(out)


@pytest.mark.parametrize("processes", [2, 3])
def test_n_processes_train_the_same_network_as_one(processes, one_process_epoch, tmp_path):
    out = str(tmp_path / f"{processes}.npz")
    code, _, err = _run(processes, "train", out, "15")
    assert code == 0, err[-3000:]
    many, one = np.load(out), one_process_epoch
    np.testing.assert_array_equal(many["counts"], one["counts"])
    np.testing.assert_allclose(many["losses"], one["losses"], rtol=RELATIVE_TOLERANCE)
    worst = 0.0
    for name in one.files:
        if name not in ("losses", "counts"):
            worst = max(
                worst, float(np.abs(many[name] - one[name]).max() / np.abs(one[name]).max())
            )
    print(f"{processes} processes: worst relative parameter difference {worst:.2e}")
    assert worst <= RELATIVE_TOLERANCE


def test_fit_under_mpiexec_trains_as_one_process_and_only_rank_0_speaks_and_writes(tmp_path):
    """The trainer's wiring (``fit(..., context=...)``): the same network as one process,
    validation split and summed, one voice, one writer of the run folder."""
    one, two = tmp_path / "one", tmp_path / "two"
    code, out_one, err = _run(None, "fit", str(one))
    assert code == 0, err[-3000:]
    code, out_two, err = _run(2, "fit", str(two))
    assert code == 0, err[-3000:]
    assert "rank 0: epoch 2/2:" in out_two and "rank 1:" not in out_two
    epoch_lines = [
        [line.split("|")[1] for line in out.splitlines() if ": epoch " in line and "/2:" in line]
        for out in (out_one, out_two)
    ]
    assert epoch_lines[0] == epoch_lines[1]  # the same validation errors, per epoch
    assert sorted(os.listdir(two)) == sorted(os.listdir(one))
    a, b = np.load(one / "params.npz"), np.load(two / "params.npz")
    for name in a.files:
        assert np.abs(a[name] - b[name]).max() <= RELATIVE_TOLERANCE * np.abs(a[name]).max()


def test_a_failing_rank_stops_every_rank_with_its_message():
    code, out, err = _run(2, "fail")  # a hang would end in the timeout
    assert code != 0
    assert "[rank 1/2]" in err and "rank 1 fails on purpose at step 3" in err, (
        f"exit status {code}; stdout ends {out[-1000:]!r}; stderr ends {err[-2000:]!r}"
    )


def test_a_non_finite_loss_on_one_rank_skips_the_update_on_all(tmp_path):
    out = str(tmp_path / "nonfinite.npz")
    code, _, err = _run(2, "nonfinite", out)
    assert code == 0, err[-3000:]
    reports = []
    for rank in (0, 1):
        with open(f"{out}.rank{rank}.txt") as report:
            reports.append(report.read())
    assert reports == [
        "rank 0: step 2 unchanged=True",
        "rank 1: step 2 unchanged=True",
    ]
    np.testing.assert_array_equal(
        np.load(out)["updated"], [True, True, False, True, True, True, True]
    )


def test_validation_split_among_three_processes_counts_as_one(tmp_path):
    reports = tmp_path / "reports"
    reports.mkdir()
    code, _, err = _run(3, "validate", reports=reports)
    assert code == 0, err[-3000:]
    stdout = _reports(reports)
    # mpiexec may join the processes' lines, so the messages are found, not split on lines
    found = re.findall(r"(center|ten): split (\([\d, ]+\)) whole (\([\d, ]+\))", stdout)
    assert [crops for crops, _, _ in found] == ["center", "ten"]  # rank 0 only
    for _, split, whole in found:
        assert split == whole
    assert sorted(re.findall(r"rank \d done", stdout)) == [f"rank {r} done" for r in range(3)]


def test_the_cache_is_prepared_by_rank_0_while_the_others_wait(tmp_path):
    reports = tmp_path.parent / f"{tmp_path.name}-reports"
    reports.mkdir()
    code, _, err = _run(3, "cache", str(tmp_path), reports=reports)
    assert code == 0, err[-3000:]
    stdout = _reports(reports)
    assert sorted(os.listdir(tmp_path)) == ["builder-0", "built"]
    found = sorted(re.findall(r"rank \d found=\w+", stdout))  # lines may be joined
    assert found == [f"rank {r} found=True" for r in range(3)]


def test_mpi_singleton_init_under_plain_python():
    _mpiexec()
    out = run_python(
        "import numpy as np\n"
        "from minialexnet.distributed import init_context\n"
        "context = init_context(use_mpi=True)\n"
        "buffer = np.arange(3, dtype=np.float32)\n"
        "context.allreduce_sum(buffer)\n"
        "context.barrier()\n"
        "print(context.size, context.rank, context.local_rank, buffer.tolist())\n",
        unset_env=[k for k in os.environ if k.startswith(_LAUNCHER_PREFIXES)],
    )
    assert out.split() == ["1", "0", "0", "[0.0,", "1.0,", "2.0]"]
