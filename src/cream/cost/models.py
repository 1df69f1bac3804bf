"""Cost models: the named costs of a space's archs that `search.limits` can bound.

A cost model maps (space, arch) to one number in its own unit. Every space offers its analytic
counts as the default models: the keys of `space.cost(arch)` — `params` (a count) and `macs`
(multiply-adds in the plain convention: conv and linear layers only, what
`cream.cost.measure_macs` counts on the built model). A space that also counts MACs in other
conventions (its `conventions`, e.g. MobileNet's "ptflops" and "ptflops-search") offers each as
`macs_<convention>` (`macs_ptflops`, `macs_ptflops_search`), so a MACs figure always names its
convention. Measured latency, lookup tables and learned predictors register per space family
with `register_cost_model`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from cream.errors import ConfigError

if TYPE_CHECKING:
    from cream.spaces.base import Arch, Space

CostModel = Callable[["Space", "Arch"], float]

_REGISTERED: dict[str, dict[str, CostModel]] = {}  # space family -> cost name -> model
DEFAULT_CONVENTION = "plain"  # the convention of `space.cost(arch)["macs"]`


def register_cost_model(family: str, name: str, model: CostModel) -> None:
    """Offer `model(space, arch) -> number` as cost `name` for every space of `family`."""
    _REGISTERED.setdefault(family, {})[name] = model


def _analytic(key: str) -> CostModel:
    return lambda space, arch: space.cost(arch)[key]


def _macs_in(convention: str) -> CostModel:
    return lambda space, arch: space.cost(arch, convention=convention)["macs"]


def cost_models(space: Space) -> dict[str, CostModel]:
    """Every named cost `space` offers: its analytic counts, its other MACs conventions, registered models."""
    models: dict[str, Any] = {key: _analytic(key) for key in space.cost(space.sample(random.Random(0)))}
    for convention in getattr(space, "conventions", ()):
        if convention != DEFAULT_CONVENTION:
            models[f"macs_{convention.replace('-', '_')}"] = _macs_in(convention)
    models.update(_REGISTERED.get(space.family, {}))
    return models


def select_cost_models(space: Space, names: Iterable[str], where: str = "cost limits") -> dict[str, CostModel]:
    """The cost models of `names`, or a one-line `ConfigError` (starting with `where`) listing those offered."""
    models = cost_models(space)
    for name in names:
        if name not in models:
            raise ConfigError(f"{where}: cost {name!r} is not one that space {space.name!r} reports; "
                              f"it offers: {', '.join(models)}")
    return {name: models[name] for name in names}
