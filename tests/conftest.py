"""Shared test fixtures.

The real datasets live in `../shared/data` beside the repository (override with the
CREAM_SHARED_DATA environment variable); tests that need them skip cleanly without them.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import ModuleType

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


# Cream-like ops (DS/IR with SE, conv-BN-act, skip) at toy widths
TINY_CREAM = {
    "family": "mobilenet", "input_size": 32, "num_classes": 10, "act": "swish",
    "stem": {"channels": 8, "stride": 2}, "head": {"channels": 64},
    "stages": [
        {"channels": 8, "stride": 1, "ops": ["ds_k3_se"]},
        {"channels": 16, "stride": 2, "layers": 2, "ops": ["ir_k3_e4_se", "ir_k5_e6_se", "ir_k7_e4_se"]},
        {"channels": 24, "stride": 2,
         "ops": [["ir_k3_e4_se", "ir_k5_e6"], ["skip", "ir_k3_e6_se", "ir_k5_e4"]]},
        {"channels": 32, "stride": 1, "ops": ["cn_k1"]},
    ],
}


def shared_data_dir() -> Path:
    return Path(os.environ.get("CREAM_SHARED_DATA", REPO.parent / "shared" / "data"))


def _shared_file(relative: str, what: str) -> Path:
    """A file of the shared data, or skip the test that needs it."""
    path = shared_data_dir() / relative
    if not path.is_file():
        pytest.skip(f"{what} not found at {path}")
    return path


@pytest.fixture(scope="session")
def cifar10_archive() -> Path:
    return _shared_file("cifar10/cifar10-jpg.tar.gz", "real CIFAR-10 archive")


@pytest.fixture(scope="session")
def nb201_table() -> Path:
    return _shared_file("nb201/nb201.csv", "NAS-Bench-201 table")


def sets(items: list[str]) -> list[str]:
    """`--set ITEM` for each item: config overrides on a `cream` command line."""
    return [a for item in items for a in ("--set", item)]


def nested_equal(a, b) -> bool:
    """Bitwise equality of nested states (tensors with their dtypes, dicts, lists, numbers)."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(nested_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(nested_equal(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def validates(space, arch) -> bool:
    """Whether `space` accepts `arch`."""
    from cream.errors import ArchError

    try:
        space.validate(arch)
    except ArchError:
        return False
    return True


def kill_at_checkpoint(victim: subprocess.Popen, checkpoints: Path, step: int, timeout: float = 300) -> None:
    """SIGKILL a training process as soon as it has written a checkpoint at `step` or later."""
    deadline = time.time() + timeout
    while time.time() < deadline and not any(int(p.stem[5:]) >= step for p in checkpoints.glob("step-*.pt")):
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)
    victim.communicate()
    assert victim.returncode == -signal.SIGKILL


def resume_matches(reference: Path, killed: Path, files: tuple[str, ...]) -> None:
    """Resume the killed supernet run at `killed` in-process; assert its weights and `files` equal `reference`'s."""
    from safetensors.torch import load_file

    from cream.config import RunConfig, load_config
    from cream.run_dir import RunDir
    from cream.workflows.supernet import train_supernet

    run = RunDir.create(str(killed), "supernet", resume=True)
    train_supernet(load_config(RunConfig, run.file("config.yaml")), run, resume=True)
    a, b = load_file(reference / "supernet.safetensors"), load_file(killed / "supernet.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for name in files:
        assert (reference / name).read_text() == (killed / name).read_text(), name


def benchmark_module(name: str) -> ModuleType:
    """The script `benchmarks/<name>.py` as a module, so a test reuses a benchmark's helpers (e.g. its kills)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
