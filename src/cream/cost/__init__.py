"""Parameters and multiply-adds: measured on a model, or analytic for an arch.

Model families whose papers count multiply-adds in their own convention register a function
with `register_reported_cost(model_name, fn)`; `cream profile` adds what it returns (e.g.
`macs_ptflops` for the Cream models) to the measured counts.
"""

from collections.abc import Callable

from cream.cost.measure import count_params, measure, measure_macs

_REPORTED: dict[str, Callable[[], dict[str, int]]] = {}


def register_reported_cost(model_name: str, fn: Callable[[], dict[str, int]]) -> None:
    _REPORTED[model_name] = fn


def reported_cost(model_name: str) -> dict[str, int]:
    """Costs of a registered model in its paper's own convention ({} when it has none)."""
    fn = _REPORTED.get(model_name)
    return fn() if fn else {}


__all__ = ["count_params", "measure", "measure_macs", "register_reported_cost", "reported_cost"]
