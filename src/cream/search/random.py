"""Random search: uniform samples from the space, each legal one evaluated, until the budget is spent."""

from __future__ import annotations

from typing import Any

from cream.errors import ConfigError
from cream.search.base import Search


class RandomSearch(Search):
    method = "random"

    def __init__(self, *args: Any, save_every: int = 10, **kwargs: Any) -> None:
        super().__init__(*args, save_every=save_every, **kwargs)
        if self.budget is None:
            raise ConfigError("random search needs a budget (a number of queries)")

    def _step(self) -> None:
        self.evaluate_random()

