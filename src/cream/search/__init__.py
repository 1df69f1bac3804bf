"""Space-agnostic search: random, regularised evolution, AutoFormer-style evolution and NSGA-II (multi-objective).

Every method takes a space, a `score(arch) -> float` callback (higher is better), an optional
`feasible(arch) -> bool` constraint and a seed, and returns a `SearchResult` with every evaluated
arch (score, cost) and the best-so-far after each query. `BoardSearch` (Cream's final choice)
scores a given list of paths instead of exploring the space.
"""

from __future__ import annotations

from typing import Any

from cream.cost.limits import cost_window, millions_window
from cream.errors import ConfigError
from cream.search.base import Search, SearchResult
from cream.search.board import BoardSearch
from cream.search.evolution import EvolutionSearch
from cream.search.nsga2 import NSGA2Search
from cream.search.random import RandomSearch
from cream.search.regularized import RegularizedEvolution

# The methods that explore a space (`cream bench` simulates these); "board" also needs a given board.
METHODS: dict[str, type[Search]] = {
    "random": RandomSearch,
    "regularized": RegularizedEvolution,
    "evolution": EvolutionSearch,
    "nsga2": NSGA2Search,
}
_ALL: dict[str, type[Search]] = {**METHODS, "board": BoardSearch}


def make_search(method: str, space: Any, score: Any, **kwargs: Any) -> Search:
    """The search object of a named method (keyword arguments as in its class; "board" needs `board=`)."""
    if method not in _ALL:
        raise ConfigError(f"search method {method!r} is unknown; choose one of {sorted(_ALL)}")
    try:
        return _ALL[method](space, score, **kwargs)
    except TypeError as e:
        raise ConfigError(f"search method {method!r}: {e}") from None


def search(method: str, space: Any, score: Any, resume: bool = False, **kwargs: Any) -> SearchResult:
    """Run a named method to the end; `resume=True` continues from `state_path` when it exists."""
    return make_search(method, space, score, **kwargs).run(resume=resume)


__all__ = ["METHODS", "BoardSearch", "EvolutionSearch", "NSGA2Search", "RandomSearch", "RegularizedEvolution", "Search",
           "SearchResult", "cost_window", "make_search", "millions_window", "search"]
