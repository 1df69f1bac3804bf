"""Limits on costs: closed windows [low, high] on what a space's cost models report.

A window is in the cost's own unit (params and MACs: absolute counts). In configs, a limit is
written `[min, max]` where null or 0 leaves that end open (`limit_windows`); the older keys in
millions read through `millions_window`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from cream.cost.models import select_cost_models

if TYPE_CHECKING:
    from cream.spaces.base import Arch, Space

Feasible = Callable[["Arch"], bool]
Window = tuple[float, float]


def millions_window(low: float, high: float) -> Window | None:
    """The [low, high] window of limits given in millions, where 0 means no limit; None when both are 0."""
    if not (low or high):
        return None
    return low * 1e6, high * 1e6 if high else math.inf


def limit_windows(limits: Mapping[str, Sequence[float | None]]) -> dict[str, Window]:
    """Checked config limits `{cost: [min, max]}` (null or 0 = open end) as windows; fully open ones left out."""
    windows = {}
    for name, (low, high) in limits.items():
        if low or high:
            windows[name] = (float(low or 0.0), float(high) if high else math.inf)
    return windows


def cost_window(space: Space, windows: Mapping[str, Window], where: str = "cost limits") -> Feasible:
    """A constraint accepting archs whose named costs all lie in their closed [low, high] windows.

    Unknown cost names are refused here, before any search starts (`where` names them in the error).
    """
    models = select_cost_models(space, windows, where)

    def feasible(arch: Arch) -> bool:
        return all(lo <= models[name](space, arch) <= hi for name, (lo, hi) in windows.items())

    return feasible
