"""Cream's final choice (spec §5.6): score the paths of the prioritized board, export the best.

The supernet run leaves its final board in board.json (best path first). Each board path inside
the search's cost limits is scored with inherited weights on the held-out split, in board order;
the best score wins, ties going to the path ranked higher on the board. Resumable like every
`Search`: `batch` board paths per step (the result does not depend on `batch`).
"""

from __future__ import annotations

from typing import Any

from cream.errors import ConfigError
from cream.search.base import Search
from cream.spaces.base import Arch, arch_key


class BoardSearch(Search):
    method = "board"

    def __init__(self, *args: Any, board: list[dict[str, Any]] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not board:
            raise ConfigError("search method 'board' needs the paths of a Cream board (board.json); it is empty")
        self.paths: list[Arch] = [self.space.validate(entry["arch"]) for entry in board]

    def config(self) -> dict[str, Any]:
        return {**super().config(), "board": [arch_key(a) for a in self.paths]}

    def _step(self) -> None:
        start = self.steps * self.batch
        for arch in self.paths[start:start + self.batch]:
            self.evaluate(arch)
        if start + self.batch >= len(self.paths):
            self.stopped = "board"
