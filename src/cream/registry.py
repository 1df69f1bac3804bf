"""The name tables every family registers into: presets, space parsers, supernets, model builders.

This module imports nothing of ours, so any family module may register here without an import
cycle. The lookups that need the built-in families loaded live one level up, next to them:
`cream.spaces.get_space`, `cream.supernets.build_supernet` and `cream.models.build_model`.

Supernets are keyed by (space family, kind): a space may have a *single-path* supernet (one
choice per layer runs; SPOS, Cream, AutoFormer) and a *mixed* one (every layer a weighted sum of
its candidates; DARTS-style differentiable search) side by side.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

SINGLE_PATH = "single_path"
MIXED = "mixed"
KINDS = (SINGLE_PATH, MIXED)

PRESETS: dict[str, Callable[..., Any]] = {}
FAMILIES: dict[str, Callable[..., Any]] = {}
SUPERNETS: dict[tuple[str, str], Callable[..., Any]] = {}
MODEL_BUILDERS: dict[str, Callable[..., Any]] = {}


def register_space(name: str, factory: Callable[..., Any]) -> None:
    """Make a preset space available by name (e.g. "autoformer-tiny")."""
    PRESETS[name] = factory


def register_family(family: str, from_config: Callable[..., Any]) -> None:
    """Register the parser that builds a space of `family` from a config mapping."""
    FAMILIES[family] = from_config


def register_supernet(family: str, kind: str, builder: Callable[..., Any]) -> None:
    """Register the supernet class (or builder) of `kind` for spaces of `family`."""
    if kind not in KINDS:
        raise ValueError(f"supernet kind {kind!r} is unknown; choose one of {list(KINDS)}")
    SUPERNETS[(family, kind)] = builder


def register_model_builder(family: str, builder: Callable[..., Any]) -> None:
    """Register `builder(space, arch, **overrides)`, the standalone network of an arch of `family`."""
    MODEL_BUILDERS[family] = builder
