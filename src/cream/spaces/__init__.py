"""Search spaces as plain data, one module per family; importing this package registers them all.

`get_space` turns a preset name, a YAML file or a config mapping into a space.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cream import registry
from cream.errors import ConfigError
from cream.spaces import (  # noqa: F401  (each registers its family and presets)
    darts,
    darts_stages,
    efficientvit,
    ensemble,
    mobilenet,
    nb201,
    neas,
    nse,
    swin,
    vit,
)
from cream.spaces.base import Arch, Space


def space_names() -> list[str]:
    return sorted(registry.PRESETS)


def get_space(spec: str | dict[str, Any] | Space, **overrides: Any) -> Space:
    """A space from a preset name, a YAML path, a config mapping ({"family": ..., ...}) or a space."""
    if isinstance(spec, Space) and not isinstance(spec, (str, dict)):
        return spec
    if isinstance(spec, str) and spec in registry.PRESETS:
        return registry.PRESETS[spec](**overrides)
    if isinstance(spec, str) and (spec.endswith((".yaml", ".yml")) or Path(spec).is_file()):
        from cream.config import read_yaml

        spec = read_yaml(spec)
    if isinstance(spec, dict):
        cfg = {**spec, **overrides}
        family = cfg.pop("family", None)
        if "preset" in cfg:
            preset = cfg.pop("preset")
            if preset not in registry.PRESETS:
                raise ConfigError(f"space.preset = {preset!r} is unknown; choose one of {space_names()}")
            return registry.PRESETS[preset](**cfg)
        if family not in registry.FAMILIES:
            raise ConfigError(f"space.family = {family!r} is unknown; choose one of {sorted(registry.FAMILIES)}")
        return registry.FAMILIES[family](**cfg)
    raise ConfigError(f"space {spec!r} is unknown; choose a preset from {space_names()}, a YAML file or a mapping")


__all__ = ["Arch", "Space", "get_space", "space_names"]
