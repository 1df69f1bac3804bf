"""Multi-objective search with pymoo's NSGA-II: maximise the score, minimise named costs.

The objectives are the score and the cost models named in `objectives` (any cost `search.limits`
can bound: `params`, `macs`, `macs_<convention>`, registered models such as latency). pymoo does
the non-dominated sorting, crowding distance, binary tournaments and survival; the space's own
`sample`, `mutate` and `crossover` are the variation operators, since archs are not vectors.

Every offspring pymoo is given is an arch it has never seen (evaluated or refused), so each
generation spends its queries on new archs; an arch outside the limits is never scored: it enters
the population as infeasible (constraint violation 1), which NSGA-II ranks behind every feasible
arch. A step is one generation (`population` archs after the first, `offspring` after); the state
(pymoo's population, its random generator, the archs refused) is saved with the records, so a
resumed search ends exactly where an uninterrupted one ends. The result's `front` lists the
records on the Pareto front of (score, objectives...).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import numpy as np
from pymoo.algorithms.moo.nsga2 import NSGA2
from pymoo.core.crossover import Crossover
from pymoo.core.duplicate import DuplicateElimination
from pymoo.core.mutation import Mutation
from pymoo.core.population import Population
from pymoo.core.problem import Problem
from pymoo.core.sampling import Sampling
from pymoo.core.termination import NoTermination
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

from cream.cost.models import select_cost_models
from cream.errors import ConfigError
from cream.search.base import Search, SearchResult
from cream.spaces.base import Arch, arch_key

DEFAULT_OBJECTIVES: tuple[str, ...] = ("macs",)


def _python_rng(random_state: np.random.Generator) -> random.Random:
    """A `random.Random` drawn from pymoo's generator, for the space's operators (one random stream in all)."""
    return random.Random(int(random_state.integers(2**63)))


def _column(archs: Sequence[Arch]) -> np.ndarray:
    x = np.empty((len(archs), 1), dtype=object)
    for i, arch in enumerate(archs):
        x[i, 0] = arch
    return x


class _SpaceSampling(Sampling):
    """Random archs, each new and inside the limits when `max_attempts` draws find one."""

    def __init__(self, search: NSGA2Search) -> None:
        super().__init__()
        self.search = search

    def _do(self, problem: Problem, n_samples: int, *args: Any, random_state: Any = None, **kwargs: Any) -> Any:
        rng, s = _python_rng(random_state), self.search
        archs: list[Arch] = []
        keys: set[Any] = set()
        for _ in range(n_samples):
            for _ in range(s.max_attempts):
                arch = s.space.sample(rng)
                if arch_key(arch) not in keys and s.is_legal(arch):
                    break
            if arch_key(arch) not in keys:
                archs.append(arch)
                keys.add(arch_key(arch))
        return _column(archs)


class _SpaceCrossover(Crossover):
    """One child of two parents by the space's crossover (parent a again when the space calls them incompatible)."""

    def __init__(self, search: NSGA2Search, prob: float) -> None:
        super().__init__(n_parents=2, n_offsprings=1, prob=prob)
        self.search = search

    def _do(self, problem: Problem, X: Any, *args: Any, random_state: Any = None, **kwargs: Any) -> Any:
        rng = _python_rng(random_state)
        out = np.empty((1, X.shape[1], 1), dtype=object)
        for k in range(X.shape[1]):
            a, b = X[0, k, 0], X[1, k, 0]
            child = self.search.space.crossover(a, b, rng)
            out[0, k, 0] = a if child is None else child
        return out


class _SpaceMutation(Mutation):
    def __init__(self, search: NSGA2Search, prob: float) -> None:
        super().__init__(prob=prob)
        self.search = search

    def _do(self, problem: Problem, X: Any, *args: Any, random_state: Any = None, **kwargs: Any) -> Any:
        rng, s = _python_rng(random_state), self.search
        return _column([s.space.mutate(x[0], rng, **s.mutate_kwargs) for x in X])


class _NewArchs(DuplicateElimination):
    """Drops archs pymoo has seen: evaluated, refused by the limits, or already in the same batch or population."""

    def __init__(self, search: NSGA2Search) -> None:
        super().__init__()
        self.search = search

    def _do(self, pop: Population, other: Population | None, is_duplicate: np.ndarray) -> np.ndarray:
        s = self.search
        seen = {arch_key(x[0]) for x in other.get("X")} if other is not None else set()
        for i, x in enumerate(pop.get("X")):
            key = arch_key(x[0])
            if key in seen or key in s._positions or key in s.refused:
                is_duplicate[i] = True
            elif other is None:
                seen.add(key)
        return is_duplicate


class NSGA2Search(Search):
    method = "nsga2"

    def __init__(
        self,
        *args: Any,
        objectives: Sequence[str] = DEFAULT_OBJECTIVES,
        population: int = 20,
        offspring: int | None = None,
        crossover_prob: float = 0.9,
        mutation_prob: float = 1.0,
        mutate_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if self.budget is None:
            raise ConfigError("nsga2 needs a budget (a number of queries)")
        if isinstance(objectives, str) or not objectives:
            raise ConfigError(f"nsga2 objectives = {objectives!r} is not allowed; use a list of cost names, "
                              "e.g. [macs, params]")
        offspring = population if offspring is None else offspring
        if population < 2 or offspring < 1:
            raise ConfigError(f"nsga2 population = {population}, offspring = {offspring}: need population >= 2 "
                              "and offspring >= 1")
        for name, p in (("crossover_prob", crossover_prob), ("mutation_prob", mutation_prob)):
            if not 0.0 <= p <= 1.0:
                raise ConfigError(f"nsga2 {name} = {p} is not allowed; use a probability in [0, 1]")
        self.objectives = list(objectives)
        self.models = select_cost_models(self.space, self.objectives, where="nsga2 objectives")
        self.population_size, self.offspring = population, offspring
        self.crossover_prob, self.mutation_prob = crossover_prob, mutation_prob
        self.mutate_kwargs = dict(mutate_kwargs or {})
        self.refused: set[Any] = set()  # keys of archs outside the limits that pymoo proposed
        self._refused_archs: list[Arch] = []
        self.idle = 0  # generations in a row without a query
        self.problem = Problem(n_var=1, n_obj=1 + len(self.objectives),
                               n_ieq_constr=1 if self.feasible is not None else 0, vtype=object)
        self.algorithm = NSGA2(pop_size=population, n_offsprings=offspring, sampling=_SpaceSampling(self),
                               crossover=_SpaceCrossover(self, crossover_prob),
                               mutation=_SpaceMutation(self, mutation_prob), eliminate_duplicates=_NewArchs(self))
        self.algorithm.setup(self.problem, seed=self.seed, termination=NoTermination())

    def config(self) -> dict[str, Any]:
        return {**super().config(), "objectives": self.objectives, "population": self.population_size,
                "offspring": self.offspring, "crossover_prob": self.crossover_prob,
                "mutation_prob": self.mutation_prob, "mutate_kwargs": self.mutate_kwargs}

    # ---- records and objectives ----------------------------------------------------------------
    def evaluate(self, arch: Arch) -> int | None:
        """As the base, and the record's `cost` also holds each objective's value."""
        pos = super().evaluate(arch)
        if pos is not None:
            cost = self.records[pos]["cost"]
            cost.update({n: float(m(self.space, arch)) for n, m in self.models.items() if n not in cost})
        return pos

    def objective_values(self, record: dict[str, Any]) -> list[float]:
        """pymoo's minimised objectives of a scored record: -score, then each cost."""
        return [-float(record["score"]), *(float(record["cost"][n]) for n in self.objectives)]

    def front(self) -> list[int]:
        """Positions of the scored records on the Pareto front (no other is as good in all objectives and
        better in one), by increasing first cost."""
        if not self.records:
            return []
        f = np.array([self.objective_values(r) for r in self.records])
        front = NonDominatedSorting().do(f, only_non_dominated_front=True)
        return sorted((int(i) for i in front), key=lambda i: (f[i, 1], f[i, 0], i))

    def result(self) -> SearchResult:
        res = super().result()
        res.front = self.front()
        return res

    # ---- one generation --------------------------------------------------------------------------
    def _step(self) -> None:
        alg = self.algorithm
        infills = alg.ask()
        if infills is None or len(infills) == 0:
            self.stopped = "exhausted"
            return
        told: list[int] = []  # rows of `infills` pymoo is told about (all but those past the budget)
        positions: list[int | None] = []
        for row, x in enumerate(infills.get("X")):
            arch = x[0]
            if self.budget_spent:
                break
            if self.feasible is not None and not self.feasible(arch):
                self.refused.add(arch_key(arch))
                self._refused_archs.append(arch)
                positions.append(None)
                told.append(row)
                continue
            pos = self.evaluate(arch)  # new (pymoo is given new archs only) and inside the limits: recorded
            assert pos is not None
            positions.append(pos)
            told.append(row)
        self.score_pending()
        if not told:
            return
        infills = infills[told]
        infills.set("F", np.array([self._objectives_of(p) for p in positions]))
        if self.feasible is not None:
            infills.set("G", np.array([[0.0 if p is not None else 1.0] for p in positions]))
        alg.tell(infills=infills)
        self.idle = 0 if any(p is not None for p in positions) else self.idle + 1
        if self.idle >= self.max_attempts:  # generation after generation outside the limits
            self.stopped = "exhausted"

    def _objectives_of(self, pos: int | None) -> list[float]:
        # a refused arch's objectives are never compared: NSGA-II ranks infeasible archs by violation alone
        return self.objective_values(self.records[pos]) if pos is not None else [0.0] * self.problem.n_obj

    # ---- state -----------------------------------------------------------------------------------
    def _extra_state(self) -> dict[str, Any]:
        alg, pop = self.algorithm, self.algorithm.pop
        members = []
        if alg.is_initialized:
            for ind in pop:
                rank, crowding = ind.get("rank"), ind.get("crowding")
                members.append({
                    "arch": ind.X[0], "F": ind.F.tolist(), "G": ind.G.tolist(),
                    "rank": None if rank is None else int(rank),
                    "crowding": None if crowding is None else float(crowding),
                })
        return {"random_state": alg.random_state.bit_generator.state, "initialized": alg.is_initialized,
                "n_iter": alg.n_iter, "population": members, "refused": self._refused_archs, "idle": self.idle}

    def _load_extra_state(self, extra: dict[str, Any]) -> None:
        alg = self.algorithm
        alg.random_state.bit_generator.state = extra["random_state"]
        self._refused_archs = list(extra["refused"])
        self.refused = {arch_key(a) for a in self._refused_archs}
        self.idle = extra["idle"]
        if not extra["initialized"]:
            return
        members = extra["population"]
        pop = Population.new("X", _column([m["arch"] for m in members]))
        for ind, m in zip(pop, members, strict=True):
            ind.set("F", np.array(m["F"], dtype=float))
            ind.set("G", np.array(m["G"], dtype=float))
            ind.set("rank", m["rank"])
            ind.set("crowding", m["crowding"])
        alg._initialize()
        alg.pop, alg.n_iter, alg.is_initialized = pop, extra["n_iter"], True
