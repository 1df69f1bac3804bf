"""Named search spaces and the supernet that goes with each space family.

Each family module (`cream.spaces.vit`, `cream.spaces.mobilenet`, ...) registers its presets
with `register_space` and its config parser with `register_family`; each supernet module
registers a builder for its space class with `register_supernet`. `cream.supernet(...)` and
the CLI look things up here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from cream.errors import ConfigError
from cream.spaces.base import Space

_PRESETS: dict[str, Callable[..., Space]] = {}
_FAMILIES: dict[str, Callable[..., Space]] = {}
_SUPERNETS: dict[type, Callable[..., Any]] = {}


def register_space(name: str, factory: Callable[..., Space]) -> None:
    """Make a preset space available by name (e.g. "autoformer-tiny")."""
    _PRESETS[name] = factory


def register_family(family: str, from_config: Callable[..., Space]) -> None:
    """Register the parser that builds a space of `family` from a config mapping."""
    _FAMILIES[family] = from_config


def register_supernet(space_cls: type, builder: Callable[..., Any]) -> None:
    """Register the supernet builder for spaces of class `space_cls`."""
    _SUPERNETS[space_cls] = builder


def space_names() -> list[str]:
    return sorted(_PRESETS)


def get_space(spec: str | dict[str, Any] | Space, **overrides: Any) -> Space:
    """A space from a preset name, a YAML path, a config mapping ({"family": ..., ...}) or a space."""
    _load_families()
    if isinstance(spec, Space) and not isinstance(spec, (str, dict)):
        return spec
    if isinstance(spec, str) and spec in _PRESETS:
        return _PRESETS[spec](**overrides)
    if isinstance(spec, str) and (spec.endswith((".yaml", ".yml")) or Path(spec).is_file()):
        from cream.config import read_yaml

        spec = read_yaml(spec)
    if isinstance(spec, dict):
        cfg = {**spec, **overrides}
        family = cfg.pop("family", None)
        if "preset" in cfg:
            preset = cfg.pop("preset")
            if preset not in _PRESETS:
                raise ConfigError(f"space.preset = {preset!r} is unknown; choose one of {space_names()}")
            return _PRESETS[preset](**cfg)
        if family not in _FAMILIES:
            raise ConfigError(f"space.family = {family!r} is unknown; choose one of {sorted(_FAMILIES)}")
        return _FAMILIES[family](**cfg)
    raise ConfigError(f"space {spec!r} is unknown; choose a preset from {space_names()}, a YAML file or a mapping")


def build_supernet(space: Space, **kwargs: Any) -> Any:
    """Build the supernet (an nn.Module) that holds the shared weights of `space`."""
    _load_families()
    for cls in type(space).__mro__:
        if cls in _SUPERNETS:
            return _SUPERNETS[cls](space, **kwargs)
    raise ConfigError(f"no supernet is registered for space '{space.name}' ({type(space).__name__})")


def _load_families() -> None:
    """Import the family modules so that they register themselves."""
    import cream.supernets  # noqa: F401
