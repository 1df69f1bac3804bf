"""Atomic checkpoints with everything a bit-identical resume needs.

A checkpoint is written to a temporary file in the same folder and renamed into place, so a
run killed at any moment leaves either the previous checkpoint or the new one, never half of
one. Loading uses `weights_only=True`: random-generator states are stored as tensors and
plain lists, not pickled objects.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from cream.atomic import atomic_path
from cream.errors import CheckpointError

if TYPE_CHECKING:
    from cream.run_dir import RunDir

_NAME = re.compile(r"^step-(\d{9})\.pt$")


def rng_state() -> dict[str, Any]:
    """States of the torch, numpy and Python generators, in weights_only-loadable form."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, py_state, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": {"version": version, "state": list(py_state), "gauss": py_gauss},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_atomic(obj: Any, path: Path) -> None:
    """torch.save, all or nothing (cream.atomic)."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def checkpoint_path(folder: Path, step: int) -> Path:
    return folder / f"step-{step:09d}.pt"


def list_checkpoints(folder: Path) -> list[Path]:
    """Checkpoints in `folder`, oldest first."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if _NAME.match(p.name))


def prune(folder: Path, keep: int) -> None:
    """Keep the newest `keep` checkpoints; drop half-written temp files that a killed process left."""
    for p in list_checkpoints(folder)[:-keep]:
        p.unlink(missing_ok=True)
    mine = f".tmp{os.getpid()}"
    for p in folder.glob(".step-*.pt.tmp*"):
        if not p.name.endswith(mine):
            p.unlink(missing_ok=True)


def continues(run: RunDir, resume: bool) -> bool:
    """Whether a run continues from a checkpoint. A resumed run killed before its first checkpoint has
    none: it starts again from step 0 with its saved config, and the metrics its killed start logged go."""
    if resume and list_checkpoints(run.checkpoints):
        return True
    if resume:
        run.drop_metrics()
    return False


def load_latest(folder: Path) -> dict[str, Any]:
    """The newest readable checkpoint in `folder` (an unreadable newest one falls back to the previous)."""
    found = list_checkpoints(folder)
    if not found:
        raise CheckpointError(f"no checkpoint to resume from in '{folder}' (expected step-*.pt files)")
    errors = []
    for path in reversed(found):
        try:
            return load(path)
        except CheckpointError as e:
            errors.append(str(e))
    raise CheckpointError(f"no readable checkpoint in '{folder}': {errors[0]}")


def load(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint '{path}' does not exist") from None
    except Exception as e:  # noqa: BLE001 - any unpickling failure is an unreadable checkpoint
        raise CheckpointError(f"checkpoint '{path}' cannot be read: {str(e).splitlines()[0]}") from None
