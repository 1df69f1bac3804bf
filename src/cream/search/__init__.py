"""Space-agnostic search: random, regularised evolution and AutoFormer-style evolution.

Every strategy takes a space, a `score(arch) -> float` callback (higher is better), an optional
`feasible(arch) -> bool` constraint and a seed, and returns a `SearchResult` with every evaluated
arch (score, cost) and the best-so-far after each query. `BoardSearch` (Cream's final choice)
scores a given list of paths instead of exploring the space.
"""

from __future__ import annotations

from typing import Any

from cream.errors import ConfigError
from cream.search.base import Search, SearchResult, cost_window, millions_window
from cream.search.board import BoardSearch
from cream.search.evolution import EvolutionSearch
from cream.search.random import RandomSearch
from cream.search.regularized import RegularizedEvolution

# The strategies that explore a space (`cream bench` simulates these); "board" also needs a given board.
STRATEGIES: dict[str, type[Search]] = {
    "random": RandomSearch,
    "regularized": RegularizedEvolution,
    "evolution": EvolutionSearch,
}
_ALL: dict[str, type[Search]] = {**STRATEGIES, "board": BoardSearch}


def make_search(strategy: str, space: Any, score: Any, **kwargs: Any) -> Search:
    """The search object of a named strategy (keyword arguments as in its class; "board" needs `board=`)."""
    if strategy not in _ALL:
        raise ConfigError(f"search strategy {strategy!r} is unknown; choose one of {sorted(_ALL)}")
    try:
        return _ALL[strategy](space, score, **kwargs)
    except TypeError as e:
        raise ConfigError(f"search strategy {strategy!r}: {e}") from None


def search(strategy: str, space: Any, score: Any, resume: bool = False, **kwargs: Any) -> SearchResult:
    """Run a named strategy to the end; `resume=True` continues from `state_path` when it exists."""
    return make_search(strategy, space, score, **kwargs).run(resume=resume)


__all__ = ["STRATEGIES", "BoardSearch", "EvolutionSearch", "RandomSearch", "RegularizedEvolution", "Search",
           "SearchResult", "cost_window", "make_search", "millions_window", "search"]
