"""Files written whole or not at all: a hidden temp file beside the target, fsync, then a rename.

A job killed mid-write leaves the old file (or none) and at worst a hidden temp file that `is_temp`
recognises, never half a file. Every writer of run state goes through `atomic_path`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TEMP_INFIX = ".tmp"


def is_temp(path: Path) -> bool:
    """A temp file left by a write that was killed before its rename (it holds nothing of the run)."""
    return path.name.startswith(".") and TEMP_INFIX in path.name


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path to write `path`'s new content to; on success it is synced and renamed over `path`.

    The temp name keeps the suffix, for writers that add or check one (numpy's savez, safetensors).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}{TEMP_INFIX}{os.getpid()}{path.suffix}")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
