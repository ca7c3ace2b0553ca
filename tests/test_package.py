"""What ``import minialexnet`` sets up before any kernel runs.

Each case runs in a fresh interpreter: the settings are read from the environment once, at
import, so they cannot be tested in this (already importing) process.
"""

from __future__ import annotations

import pytest
from helpers import run_python

#: Records the OMP_WAIT_POLICY that Numba's thread pool starts with, then prints it and the
#: process's variable after the compiled kernels are imported.
SHOW_POLICY = """
import os
from numba.np.ufunc import parallel
seen = []
launch = parallel._launch_threads
parallel._launch_threads = lambda: (seen.append(os.environ.get("OMP_WAIT_POLICY")), launch())
import minialexnet.kernels.cpu
print(seen[0], os.environ.get("OMP_WAIT_POLICY"))
"""


def test_numba_threads_start_with_sleeping_workers_and_the_setting_does_not_leak():
    """Spinning OpenMP workers took the cores from OpenBLAS (3.5x slower mini steps); the
    variable must not stay set for other libraries' OpenMP runtimes (PyTorch's)."""
    shown = run_python(SHOW_POLICY, unset_env=("OMP_WAIT_POLICY",), timeout=120)
    assert shown.split() == ["PASSIVE", "None"]


@pytest.mark.parametrize("policy", ["ACTIVE", "passive"])
def test_a_wait_policy_the_user_set_is_kept(policy):
    shown = run_python(SHOW_POLICY, set_env={"OMP_WAIT_POLICY": policy}, timeout=120)
    assert shown.split() == [policy, policy]


def test_the_policy_is_set_before_numba_starts_its_threads():
    """The OpenMP runtime reads OMP_WAIT_POLICY when it loads: that must come after import."""
    code = (
        "import sys, minialexnet; from minialexnet.model import AlexNet; "
        "print('numba.np.ufunc.omppool' in sys.modules)"
    )
    assert run_python(code, unset_env=("OMP_WAIT_POLICY",), timeout=120).strip() == "False"
