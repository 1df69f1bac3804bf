"""A run directory: resolved config, metrics, checkpoints, weights, summary and report.

Only the main process writes. Creating a run in a folder that already holds a run is refused
unless resuming, so nothing already written is lost by a typo. A new run's config.yaml is its
first file, so a run killed at any later moment can be continued with --resume.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cream.atomic import atomic_write_text, is_temp
from cream.errors import CreamError


@dataclass
class RunDir:
    path: Path
    write: bool = True

    @classmethod
    def create(cls, out: str | None, command: str, *, resume: bool = False,
               config: dict[str, Any] | None = None) -> RunDir:
        """The run folder `out` (default runs/<command>-<time>); refuse to reuse a non-empty one unless resuming.

        A new run writes `config` (the resolved config) first, before anything else. Under torchrun
        only rank 0 checks and writes; the other ranks get a read-only handle.
        """
        path = Path(out) if out else Path("runs") / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}"
        write = int(os.environ.get("RANK", "0")) == 0
        if not write:
            return cls(path, write=False)
        if resume:
            if not (path / "config.yaml").is_file():
                raise CreamError(f"cannot resume '{path}': it holds no config.yaml (is it a run directory?)")
        elif path.exists() and any(not is_temp(p) for p in path.iterdir()):
            raise CreamError(f"run directory '{path}' already exists and is not empty; "
                             f"use --resume {path} to continue it, or another --out")
        path.mkdir(parents=True, exist_ok=True)
        if config is not None and not resume:
            atomic_write_text(path / "config.yaml", yaml.safe_dump(config, sort_keys=False))
        (path / "checkpoints").mkdir(exist_ok=True)
        return cls(path)

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    def file(self, name: str) -> Path:
        return self.path / name

    def write_text(self, name: str, text: str) -> None:
        if self.write:
            atomic_write_text(self.path / name, text)

    def write_json(self, name: str, obj: Any) -> None:
        self.write_text(name, json.dumps(obj, indent=2, sort_keys=False) + "\n")

    def write_yaml(self, name: str, obj: Any) -> None:
        self.write_text(name, yaml.safe_dump(obj, sort_keys=False))

    def log_metrics(self, record: dict[str, Any]) -> None:
        """Append one JSON object to metrics.jsonl."""
        if self.write:
            with open(self.path / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")

    def truncate_metrics(self, step: int) -> None:
        """Drop metric lines logged after `step` (they are redone when a killed run resumes)."""
        path = self.path / "metrics.jsonl"
        if not self.write or not path.is_file():
            return
        keep = [line for line in path.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= step]
        atomic_write_text(path, "".join(line + "\n" for line in keep))

    def drop_metrics(self) -> None:
        """Forget metric lines of a start that was killed before its first checkpoint (they are redone)."""
        if self.write:
            (self.path / "metrics.jsonl").unlink(missing_ok=True)

    def read_metrics(self) -> list[dict[str, Any]]:
        path = self.path / "metrics.jsonl"
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


