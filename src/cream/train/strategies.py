"""Supernet-training strategies by name, and the factory that builds one from a `StrategyConfig`."""

from __future__ import annotations

from cream.config import StrategyConfig
from cream.errors import ConfigError
from cream.spaces.base import Space
from cream.train.abs import Abs
from cream.train.cdarts import Cdarts
from cream.train.cdarts_darts import CdartsStages
from cream.train.cream import Cream
from cream.train.darts import Darts
from cream.train.ensemble import DiversityShrink, EnsembleUniform
from cream.train.gdas import Gdas
from cream.train.nse import Nse
from cream.train.setn import Setn
from cream.train.shrink import Shrink
from cream.train.strategy import Strategy
from cream.train.uniform import Uniform

STRATEGIES: dict[str, type[Strategy]] = {"uniform": Uniform, "cream": Cream, "shrink": Shrink, "darts": Darts,
                                         "gdas": Gdas, "setn": Setn, "cdarts": Cdarts, "nse": Nse, "abs": Abs,
                                         "ensemble": EnsembleUniform, "ensemble_shrink": DiversityShrink}
#: a strategy's class for spaces of one family where it differs from `STRATEGIES`' ((name, family) -> class)
FAMILY_VARIANTS: dict[tuple[str, str], type[Strategy]] = {("cdarts", "darts_stages"): CdartsStages}


def supernet_kind(cfg: StrategyConfig) -> str:
    """The kind of supernet strategy `cfg.name` trains (`cream.registry.KINDS`)."""
    return _strategy_class(cfg).supernet_kind


def _strategy_class(cfg: StrategyConfig) -> type[Strategy]:
    if cfg.name not in STRATEGIES:
        raise ConfigError(f"config key 'strategy.name' = {cfg.name!r} is not available; "
                          f"choose one of {sorted(STRATEGIES)}")
    return STRATEGIES[cfg.name]


def make_strategy(cfg: StrategyConfig, space: Space, seed: int) -> Strategy:
    """The strategy `cfg.name` for `space`, with `cfg.kwargs`; a one-line error for bad parameters."""
    cls = FAMILY_VARIANTS.get((cfg.name, space.family), _strategy_class(cfg))
    try:
        return cls(space, seed=seed, **cfg.kwargs)
    except TypeError as e:
        raise ConfigError(f"config key 'strategy.kwargs' = {cfg.kwargs!r} does not fit strategy "
                          f"'{cfg.name}': {e}") from None

