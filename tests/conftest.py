"""Shared fixtures: real data and weights where the machine has them.

Tests marked ``real`` use the real weights and the LFW / Glint24 folders beside the project.
On a developer machine without the data they skip with a reason; under CI (``CI=true``) a
missing folder is a failure, so a broken CI set-up cannot pass by skipping.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from fr_shield.core import weights
from fr_shield.core.paths import data_root
from fr_shield.core.runtime import configure_torch

configure_torch()


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        message = f"{what} not found at {path} (set FR_SHIELD_DATA)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def lfw_root() -> Path:
    return _require(data_root() / "lfw-deepfunneled", "LFW")


@pytest.fixture(scope="session")
def glint_root() -> Path:
    return _require(data_root() / "glint24-aligned", "Glint24 sample")


@pytest.fixture(scope="session")
def weight_cache() -> Path:
    folder = weights.default_cache_dir()
    missing = [w.filename for w in weights.WEIGHTS.values() if not (folder / w.filename).exists()]
    if missing:
        message = f"weights missing from {folder}: {missing}; run `python -m fr_shield weights fetch`"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return folder


REAL_FIXTURES = frozenset({"lfw_root", "glint_root", "weight_cache"})


def pytest_collection_modifyitems(config, items):
    """Mark ``real`` every test that needs real data or weights, directly or through another fixture.

    ``item.fixturenames`` is the closure of the test's fixtures, so a test reaching LFW through
    a module fixture is marked as surely as one asking for ``lfw_root`` itself: ``-m "not real"``
    then selects only tests that run on a machine with neither the data nor the weights.
    """
    for item in items:
        if REAL_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.real)


@pytest.fixture()
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(scope="module")
def one_thread():
    """Batch-1 workloads gain little from threads and lose 10x when the cores are shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
