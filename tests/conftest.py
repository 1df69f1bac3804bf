"""Shared test fixtures.

The real datasets live in `../shared/data` beside the repository (override with the
CREAM_SHARED_DATA environment variable); tests that need them skip cleanly without them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
# Decoded-image caches go to a temporary folder, never into the user's ~/.cache (subprocesses inherit it).
_OWN_CACHE = None if "CREAM_CACHE_DIR" in os.environ else tempfile.mkdtemp(prefix="cream-test-cache-")
if _OWN_CACHE:
    os.environ["CREAM_CACHE_DIR"] = _OWN_CACHE


def pytest_sessionfinish(session, exitstatus):
    if _OWN_CACHE:
        shutil.rmtree(_OWN_CACHE, ignore_errors=True)


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Tests use tiny models: one thread is about as fast, and far steadier when other work shares the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def shared_data_dir() -> Path:
    return Path(os.environ.get("CREAM_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def cifar10_archive() -> Path:
    path = shared_data_dir() / "cifar10" / "cifar10-jpg.tar.gz"
    if not path.is_file():
        pytest.skip(f"real CIFAR-10 archive not found at {path}")
    return path


@pytest.fixture(scope="session")
def nb201_table() -> Path:
    path = shared_data_dir() / "nb201" / "nb201.csv"
    if not path.is_file():
        pytest.skip(f"NAS-Bench-201 table not found at {path}")
    return path
