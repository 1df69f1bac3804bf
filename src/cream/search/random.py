"""Random search: uniform samples from the space, each legal one evaluated, until the budget is spent.

`batch` samples are scored together per step; the result is the same for every batch size."""

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
        for _ in range(self.batch):  # the samples do not depend on scores: any batch gives the same result
            if self.stopped is not None or self.evaluate_random() is None:
                return

