"""`cream.profile`: parameters and multiply-adds of a model, a timm name or an arch."""

from __future__ import annotations

from typing import Any

from torch import nn

from cream.cost import measure, reported_cost
from cream.errors import ConfigError


def profile(model_or_arch: Any, input_size: tuple[int, int, int] | None = None, space: Any = None) -> dict:
    """`{"params": int, "macs": int}`.

    * an `nn.Module`: measured (needs `input_size`);
    * a timm model name: built without weights and measured at its default input size
      unless `input_size` is given;
    * an arch mapping with `space` (a space or a space name): the space's analytic count.
    """
    if isinstance(model_or_arch, dict):
        if space is None:
            raise ConfigError("profiling an arch needs its space (space=...)")
        from cream.spaces import get_space

        sp = get_space(space)
        return sp.cost(sp.validate(model_or_arch))
    reported: dict[str, int] = {}
    if isinstance(model_or_arch, str):
        name, model_or_arch = model_or_arch, create_model(model_or_arch)
        if input_size is None:  # the paper's own counts hold at the model's default size only
            reported = reported_cost(name)
    if isinstance(model_or_arch, nn.Module):
        if input_size is None:
            cfg = getattr(model_or_arch, "pretrained_cfg", None) or {}
            input_size = tuple(cfg.get("input_size", (3, 224, 224)))
        return {**measure(model_or_arch, input_size), **reported}
    raise ConfigError(f"cannot profile a {type(model_or_arch).__name__}; give a model, a timm name or an arch")


def create_model(name: str, *, key: str = "model.kwargs", **kwargs: Any) -> nn.Module:
    """`timm.create_model(name)` without pretrained weights, with one-line errors for an unknown name and for
    keyword arguments (config key `key`) the model's constructor does not take."""
    import timm

    import cream.models  # noqa: F401  (registers our models with timm)

    if not timm.is_model(name):
        close = timm.list_models(f"*{name.split('_')[0]}*")[:8]
        raise ConfigError(f"model '{name}' is not a known timm model; similar names: {close}")
    try:
        return timm.create_model(name, pretrained=False, **kwargs)
    except TypeError as e:  # an unexpected or missing keyword of the model's constructor
        raise ConfigError(f"config key '{key}' = {kwargs!r} does not fit timm model '{name}': {e}") from None
