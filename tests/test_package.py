"""What ``import minialexnet`` sets up before any kernel runs.

Each case runs in a fresh interpreter: the settings are read from the environment once, at
import, so they cannot be tested in this (already importing) process.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

SHOW_POLICY = "import os, minialexnet; print(os.environ.get('OMP_WAIT_POLICY'))"


def _fresh_python(code: str, **env_changes: str | None) -> str:
    env = dict(os.environ)
    for name, value in env_changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_idle_openmp_threads_sleep_by_default():
    """Spinning OpenMP workers took the cores from OpenBLAS: 3.5x slower mini steps."""
    assert _fresh_python(SHOW_POLICY, OMP_WAIT_POLICY=None) == "PASSIVE"


@pytest.mark.parametrize("policy", ["ACTIVE", "passive"])
def test_a_wait_policy_the_user_set_is_kept(policy):
    assert _fresh_python(SHOW_POLICY, OMP_WAIT_POLICY=policy) == policy


def test_the_policy_is_set_before_numba_starts_its_threads():
    """The OpenMP runtime reads OMP_WAIT_POLICY when it loads: that must come after import."""
    code = ("import sys, minialexnet; from minialexnet.model import AlexNet; "
            "print('numba.np.ufunc.omppool' in sys.modules)")
    assert _fresh_python(code, OMP_WAIT_POLICY=None) == "False"
