"""Shared test settings.

Hypothesis profiles: "ci" (the default) has no per-example deadline, because Numba compiles a
kernel the first time it meets a new dtype or layout and that first example can take seconds;
"dev" runs more examples. Select with HYPOTHESIS_PROFILE=dev.
"""

import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    deadline=None,
    max_examples=25,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "dev",
    deadline=None,
    max_examples=100,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True)
def _restore_cpu_backend():
    """Command-line tests switch the global CPU backend (``--backend numpy``); put it back
    after every test, so no test depends on which ran before it."""
    from minialexnet.backend import get_backend, set_backend

    before = get_backend()
    yield
    set_backend(before)


@pytest.fixture(scope="module")
def mini_data():
    """3 classes of 64x64 images for the "mini" variant, as the command line uses it."""
    from minialexnet.data.synthetic import make_synthetic

    return (
        make_synthetic("train", num_classes=3, n_per_class=8, seed=2),
        make_synthetic("val", num_classes=3, n_per_class=4, seed=2),
    )


@pytest.fixture
def cli_data(monkeypatch, mini_data):
    """Make ``python -m minialexnet.train`` train on the small ``mini_data`` instead of 7,000
    images."""
    from minialexnet import train

    monkeypatch.setattr(
        train,
        "open_datasets",
        lambda args, image_size, val_only=False: (*mini_data, None, "synthetic"),
    )
