"""Supernets, one module per space family and kind; importing this package registers them all."""

from __future__ import annotations

from typing import Any

from cream import registry
from cream.errors import ConfigError
from cream.registry import KINDS, MIXED, SINGLE_PATH
from cream.spaces.base import Space
from cream.supernets import (  # noqa: F401  (each registers its supernets)
    cdarts_darts,
    darts,
    efficientvit,
    ensemble,
    from_timm,
    mobilenet,
    nb201,
    nse,
    swin,
    vit,
)
from cream.supernets.base import Supernet, arch_selected


def build_supernet(space: Space, kind: str = SINGLE_PATH, **kwargs: Any) -> Any:
    """The supernet of `kind` (an nn.Module implementing `Supernet`) holding the weights of `space`."""
    builder = registry.SUPERNETS.get((space.family, kind))
    if builder is None:
        have = sorted(k for f, k in registry.SUPERNETS if f == space.family)
        raise ConfigError(f"no {kind} supernet is registered for space '{space.name}' (family {space.family}); "
                          f"this family has {have or 'none'}")
    return builder(space, **kwargs)


__all__ = ["KINDS", "MIXED", "SINGLE_PATH", "Supernet", "arch_selected", "build_supernet"]
