"""Regularised (aging) evolution, Real et al. 2019.

Keep a population of the `population` most recent archs. Each query: draw `sample` members
uniformly (with replacement), mutate the best of them, evaluate the child, add it and drop the
oldest member. A child must be legal (unvisited, feasible): mutation is retried up to
`max_attempts` times and then a random legal arch is taken instead, so the budget counts unique
archs.

With `batch` > 1, a step breeds `batch` children from the population as it stood at the step's
start (scored together, then aged in in order): a batched variant, whose result depends on `batch`.
"""

from __future__ import annotations

from typing import Any

from cream.errors import ConfigError
from cream.search.base import Search


class RegularizedEvolution(Search):
    method = "regularized"

    def __init__(
        self,
        *args: Any,
        population: int = 10,
        sample: int = 3,
        mutate_kwargs: dict[str, Any] | None = None,
        save_every: int = 10,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, save_every=save_every, **kwargs)
        if self.budget is None:
            raise ConfigError("regularized evolution needs a budget (a number of queries)")
        if population < 1 or sample < 1:
            raise ConfigError(f"population = {population}, sample = {sample}: both must be >= 1")
        self.population_size = population
        self.sample_size = sample
        self.mutate_kwargs = dict(mutate_kwargs or {})
        self.population: list[int] = []

    def config(self) -> dict[str, Any]:
        return {**super().config(), "population": self.population_size, "sample": self.sample_size,
                "mutate_kwargs": self.mutate_kwargs}

    def _extra_state(self) -> dict[str, Any]:
        return {"population": self.population}

    def _load_extra_state(self, extra: dict[str, Any]) -> None:
        self.population = list(extra["population"])

    def _step(self) -> None:
        pool = list(self.population)  # parents come from the scored population only
        children: list[int] = []
        for _ in range(self.batch):
            if self.stopped is not None or self.budget_spent:
                break
            pos = None
            if len(pool) >= self.population_size:
                contenders = [self.rng.choice(pool) for _ in range(self.sample_size)]
                parent = self.records[self.ranked(contenders)[0]]["arch"]
                for _ in range(self.max_attempts):
                    pos = self.evaluate(self.space.mutate(parent, self.rng, **self.mutate_kwargs))
                    if pos is not None:
                        break
            if pos is None:
                pos = self.evaluate_random()
            if pos is not None:
                children.append(pos)
        for pos in children:
            self.population.append(pos)
            if len(self.population) > self.population_size:
                self.population.pop(0)
