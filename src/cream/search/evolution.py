"""AutoFormer-style evolutionary search (spec autoformer.md §6), with the original's defects fixed.

Generation 0 evaluates `population` random legal archs. Each generation then merges the current
candidates into an elitist top-`parents` list, makes up to `mutations` mutants (parent drawn
uniformly from the top list, `space.mutate(parent, rng, **mutate_kwargs)`, at most
`mutation_attempts` tries) and up to `crossovers` children (two distinct parents; a pair the
space calls incompatible is redrawn up to `pair_attempts` times and never zipped; at most
`crossover_attempts` tries), and fills up to `population` with random legal archs. A candidate is
legal when it was never evaluated and `feasible(arch)` holds. A generation is scored as one batch
(`batch` plays no part here). Unlike the original, the last
generation is ranked too (the result ranks every evaluated arch), and the search is resumable.
"""

from __future__ import annotations

from typing import Any

from cream.errors import ConfigError
from cream.search.base import Search


class EvolutionSearch(Search):
    method = "evolution"

    def __init__(
        self,
        *args: Any,
        generations: int | None = 20,
        population: int = 50,
        parents: int = 10,
        mutations: int = 25,
        crossovers: int = 25,
        mutation_attempts: int | None = None,
        crossover_attempts: int | None = None,
        pair_attempts: int = 50,
        mutate_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if generations is None and self.budget is None:
            raise ConfigError("evolution needs generations or a budget (a number of queries), or both")
        sizes = {"generations": generations if generations is not None else 1, "population": population,
                 "parents": parents, "pair_attempts": pair_attempts}
        for name, value in sizes.items():
            if value < 1:
                raise ConfigError(f"evolution {name} = {value} is not allowed; it must be >= 1")
        if mutations < 0 or crossovers < 0:
            raise ConfigError(f"evolution mutations = {mutations}, crossovers = {crossovers}: must be >= 0")
        self.generations = generations
        self.population_size = population
        self.parents_size = parents
        self.mutations = mutations
        self.crossovers = crossovers
        self.mutation_attempts = 10 * mutations if mutation_attempts is None else mutation_attempts
        self.crossover_attempts = 10 * crossovers if crossover_attempts is None else crossover_attempts
        self.pair_attempts = pair_attempts
        self.mutate_kwargs = dict(mutate_kwargs or {})
        self.candidates: list[int] = []
        self.parents: list[int] = []

    def config(self) -> dict[str, Any]:
        return {**super().config(), "generations": self.generations, "population": self.population_size,
                "parents": self.parents_size, "mutations": self.mutations, "crossovers": self.crossovers,
                "mutation_attempts": self.mutation_attempts, "crossover_attempts": self.crossover_attempts,
                "pair_attempts": self.pair_attempts, "mutate_kwargs": self.mutate_kwargs}

    def _extra_state(self) -> dict[str, Any]:
        return {"candidates": self.candidates, "parents": self.parents}

    def _load_extra_state(self, extra: dict[str, Any]) -> None:
        self.candidates = list(extra["candidates"])
        self.parents = list(extra["parents"])

    def _step(self) -> None:
        if self.steps > 0:
            self._select()
            self.candidates = self._mutants() + self._children()
        self._fill()
        if self.stopped is None and self.generations is not None and self.steps >= self.generations:
            self.stopped = "generations"
        if self.stopped is not None or self.budget_spent:
            self.score_pending()
            self._select()  # rank the last generation too (the original never did)

    def _select(self) -> None:
        self.parents = self.ranked(list(dict.fromkeys(self.parents + self.candidates)))[: self.parents_size]
        self.candidates = []

    def _mutants(self) -> list[int]:
        out: list[int] = []
        for _ in range(self.mutation_attempts):
            if len(out) >= self.mutations or self.budget_spent:
                break
            parent = self.records[self.rng.choice(self.parents)]["arch"]
            pos = self.evaluate(self.space.mutate(parent, self.rng, **self.mutate_kwargs))
            if pos is not None:
                out.append(pos)
        return out

    def _children(self) -> list[int]:
        out: list[int] = []
        if len(self.parents) < 2:
            return out
        for _ in range(self.crossover_attempts):
            if len(out) >= self.crossovers or self.budget_spent:
                break
            for _ in range(self.pair_attempts):
                a, b = self.rng.sample(self.parents, 2)
                child = self.space.crossover(self.records[a]["arch"], self.records[b]["arch"], self.rng)
                if child is not None:
                    break
            pos = self.evaluate(child) if child is not None else None
            if pos is not None:
                out.append(pos)
        return out

    def _fill(self) -> None:
        while len(self.candidates) < self.population_size and not self.budget_spent:
            pos = self.evaluate_random()
            if pos is None:
                return
            self.candidates.append(pos)
