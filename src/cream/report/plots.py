"""Plots written straight to PNG files (matplotlib's Agg canvas: no display, no global backend change)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from cream.search.pareto import pareto_front
from cream.search.rank import kendall_tau, spearman_rho


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def _counted_in_millions(cost: str) -> bool:
    return cost == "params" or cost.startswith("macs")


def plot_pareto(
    records: Sequence[dict[str, Any]], path: str | Path, cost: str = "params", title: str | None = None,
    front: Sequence[int] | None = None, chosen: int | None = None,
) -> Path:
    """Score vs one cost of search records (params and MACs in millions), the Pareto front highlighted.

    `front`: positions of a front found over more objectives than this plot shows (default: the
    front of score vs `cost`); `chosen`: the position of the arch the search picked, starred."""
    scale = 1e6 if _counted_in_millions(cost) else 1.0
    xs = [r["cost"][cost] / scale for r in records]
    ys = [r["score"] for r in records]
    front = pareto_front(list(zip(xs, ys, strict=True))) if front is None else sorted(front, key=lambda i: xs[i])
    fig = Figure(figsize=(6, 4.5))
    ax = fig.add_subplot()
    ax.scatter(xs, ys, s=10, alpha=0.5, color="tab:blue", label="evaluated")
    ax.plot([xs[i] for i in front], [ys[i] for i in front], "o-", color="tab:red", ms=4, label="Pareto front")
    if chosen is not None:
        ax.plot([xs[chosen]], [ys[chosen]], "*", color="black", ms=14, label="chosen")
    ax.set_xlabel(f"{cost} (M)" if scale != 1.0 else cost)
    ax.set_ylabel("score")
    ax.set_title(title or f"score vs {cost}")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_rank_scatter(
    true: Sequence[float], pred: Sequence[float], path: str | Path,
    xlabel: str = "true score", ylabel: str = "predicted score", title: str | None = None,
    marks: dict[str, int] | None = None,
) -> Path:
    """Predicted vs true scores, titled with Kendall tau and Spearman rho; `marks` labels points by position
    (e.g. the pick, the largest and smallest archs)."""
    fig = Figure(figsize=(5, 5))
    ax = fig.add_subplot()
    ax.scatter(true, pred, s=10, alpha=0.6)
    for (label, i), marker in zip((marks or {}).items(), "*^v", strict=False):
        ax.plot([true[i]], [pred[i]], marker, ms=11, label=label)
    if marks:
        ax.legend(loc="lower right")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    stat = f"Kendall τ = {kendall_tau(true, pred):.3f}, Spearman ρ = {spearman_rho(true, pred):.3f}"
    ax.set_title(f"{title}\n{stat}" if title else stat)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_trend(dim: str, trend: dict[str, Any], path: str | Path) -> Path:
    """A space search's trend of one dimension: E, T and E-T error of each choice, and the fitted E-T line."""
    xs = trend["x"]
    fig = Figure(figsize=(5, 4))
    ax = fig.add_subplot()
    for key, style in (("E", "s--"), ("T", "^--"), ("ET", "o-")):
        ax.plot(xs, trend[key], style, ms=5, label=key.replace("ET", "E-T"))
    ax.plot(xs, [trend["intercept"] + trend["slope"] * x for x in xs], ":", color="black",
            label=f"E-T trend (slope {trend['slope']:.3g})")
    ax.set_xticks(xs, [str(c) for c in trend["choices"]])
    ax.set_xlabel(f"{dim} choice")
    ax.set_ylabel("error")
    ax.set_title(f"{dim}: {trend['action']} → {trend['next']}")
    ax.legend()
    ax.grid(alpha=0.3)
    return _save(fig, path)
