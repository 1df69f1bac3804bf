"""Limits on costs: windows [low, high] on what a space's analytic cost reports."""

from __future__ import annotations

import math
from collections.abc import Callable

from cream.spaces.base import Arch, Space

Feasible = Callable[[Arch], bool]


def millions_window(low: float, high: float) -> tuple[float, float] | None:
    """The [low, high] window of limits given in millions, where 0 means no limit; None when both are 0."""
    if not (low or high):
        return None
    return low * 1e6, high * 1e6 if high else math.inf


def cost_window(
    space: Space, params: tuple[float, float] | None = None, macs: tuple[float, float] | None = None
) -> Feasible:
    """A constraint accepting archs whose analytic params / MACs lie in closed [low, high] windows."""
    windows = {k: w for k, w in (("params", params), ("macs", macs)) if w is not None}

    def feasible(arch: Arch) -> bool:
        cost = space.cost(arch)
        return all(lo <= cost[k] <= hi for k, (lo, hi) in windows.items())

    return feasible
