"""How well one score ranks archs compared to another (e.g. supernet accuracy vs. trained accuracy).

`rank_stats(true, pred)` gives Kendall tau, Spearman rho (scipy), Kendall tau within the true top 10 %,
precision@top-k (the overlap of the predicted and true top-k) and the true score and regret of the
predicted best; `supernet_quality` adds the largest and smallest scored archs and the same
statistics of trivial proxies (MACs, params), with a warning when a proxy ranks better;
`compare_score_files` does the same between two files of arch -> score (`paired_scores` pairs
them; `cream rank --scores --truth` calls it and `rank_stats` itself, as it also plots the pairs);
`stratified_sample` picks archs spread over the accuracy range of a table column.
"""

from __future__ import annotations

import csv
import json
import math
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from scipy import stats

from cream.errors import ConfigError, DataError
from cream.spaces.base import arch_key

DEFAULT_KS: tuple[float, ...] = (0.05, 0.1, 0.2, 0.5)
TOP_FRACTION = 0.1  # "the true top 10 %"
PROXIES: tuple[str, ...] = ("macs", "params")  # trivial predictors a supernet must beat


def kendall_tau(true: Sequence[float], pred: Sequence[float]) -> float:
    return float(stats.kendalltau(true, pred).statistic)


def spearman_rho(true: Sequence[float], pred: Sequence[float]) -> float:
    return float(stats.spearmanr(true, pred).statistic)


def _top(values: Sequence[float], k: int) -> set[int]:
    return set(sorted(range(len(values)), key=lambda i: (-values[i], i))[:k])


def resolve_k(k: float, n: int) -> int:
    """A count from k: an int is a count, a float in (0, 1) a fraction of n (rounded, at least 1)."""
    if isinstance(k, bool) or not (isinstance(k, int) and 1 <= k <= n or isinstance(k, float) and 0 < k < 1):
        raise ConfigError(f"top-k = {k!r} is not allowed; use a count 1 … {n} or a fraction in (0, 1)")
    return k if isinstance(k, int) else max(1, round(k * n))


def precision_at_k(true: Sequence[float], pred: Sequence[float], k: float) -> float:
    """Fraction of the true top-k that are also in the predicted top-k (ties: earlier item first)."""
    count = resolve_k(k, len(true))
    return len(_top(true, count) & _top(pred, count)) / count


def top_kendall_tau(true: Sequence[float], pred: Sequence[float], fraction: float = TOP_FRACTION) -> float:
    """Kendall tau among the archs in the true top `fraction` (at least 2 of them; ties: earlier item first).

    One-shot supernets rank the best archs far worse than all of them; this is the figure that says so."""
    top = sorted(_top(true, max(2, round(fraction * len(true)))))
    return kendall_tau([true[i] for i in top], [pred[i] for i in top])


def pick(true: Sequence[float], pred: Sequence[float]) -> dict[str, Any]:
    """The predicted best (earlier on ties): its position, its true score, and its regret (best true score - it)."""
    i = min(range(len(pred)), key=lambda j: (-pred[j], j))
    return {"position": i, "true": float(true[i]), "best_true": float(max(true)),
            "regret": float(max(true) - true[i])}


def rank_stats(
    true: Sequence[float], pred: Sequence[float], ks: Sequence[float] = DEFAULT_KS
) -> dict[str, Any]:
    """Kendall tau, Spearman rho, tau within the true top 10 %, precision@k (= overlap of the true and
    predicted top-k) and the pick's true score and regret, of `pred` against `true` (same order, n >= 2)."""
    if len(true) != len(pred) or len(true) < 2:
        raise DataError(
            f"rank statistics need two score lists of equal length >= 2, got {len(true)} and {len(pred)}"
        )
    return {
        "n": len(true),
        "kendall_tau": kendall_tau(true, pred),
        "spearman_rho": spearman_rho(true, pred),
        "top10_kendall_tau": top_kendall_tau(true, pred),
        "precision_at_k": {str(k): precision_at_k(true, pred, k) for k in ks},
        "pick": pick(true, pred),
    }


def supernet_quality(
    true: Sequence[float], pred: Sequence[float], costs: Sequence[Mapping[str, float]],
    proxies: Sequence[str] = PROXIES, ks: Sequence[float] = DEFAULT_KS,
) -> dict[str, Any]:
    """`rank_stats` of a supernet's scores, with what puts them in context on the same archs.

    `largest` / `smallest`: the scored archs with the most / fewest of the first proxy cost (the
    second breaks ties), with both scores. `proxies`: the statistics of each cost taken as a score
    (bigger = better); `warnings` names each proxy whose Kendall tau beats the supernet's (also when the
    supernet's is undefined: scores all equal).
    """
    stats = rank_stats(true, pred, ks)
    order = sorted(range(len(costs)), key=lambda i: tuple(costs[i][c] for c in proxies))
    stats["largest"], stats["smallest"] = ({"position": i, "cost": {c: costs[i][c] for c in proxies},
                                            "true": float(true[i]), "pred": float(pred[i])}
                                           for i in (order[-1], order[0]))
    stats["proxies"] = {}
    for name in proxies:
        stats["proxies"][name] = yardstick_stats(true, [float(c[name]) for c in costs], ks)
    stats["warnings"] = [f"the supernet ranks worse than the trivial proxy '{name}': Kendall tau "
                         f"{stats['kendall_tau']:.3f} < {ref['kendall_tau']:.3f}"
                         for name, ref in stats["proxies"].items() if _beats(ref["kendall_tau"], stats["kendall_tau"])]
    return stats


def yardstick_stats(true: Sequence[float], pred: Sequence[float], ks: Sequence[float] = DEFAULT_KS) -> dict[str, Any]:
    """The `rank_stats` a yardstick (a proxy, a short schedule) is compared on: the rank figures, not the pick."""
    ref = rank_stats(true, pred, ks)
    return {k: ref[k] for k in ("kendall_tau", "spearman_rho", "top10_kendall_tau", "precision_at_k")}


def _beats(proxy: float, supernet: float) -> bool:
    return not math.isnan(proxy) and not supernet >= proxy  # a NaN supernet tau (constant scores) is beaten


def stratified_sample(values: Sequence[float], size: int = 100, seed: int = 0) -> list[int]:
    """`size` indices spread evenly over the range of `values`.

    The range [min, max] is cut into `size` equal-width bins; picks go round-robin over the
    non-empty bins (a random unpicked member each time, seeded) until `size` are picked. Sparse
    regions (e.g. the few poor archs of a benchmark) are thus represented, unlike a uniform sample.
    """
    if not 1 <= size <= len(values):
        raise ConfigError(f"sample size = {size} is not allowed; use 1 … {len(values)}")
    rng = random.Random(seed)
    lo, hi = min(values), max(values)
    width = (hi - lo) / size or 1.0
    bins: list[list[int]] = [[] for _ in range(size)]
    for i, v in enumerate(values):
        bins[min(int((v - lo) / width), size - 1)].append(i)
    for members in bins:
        rng.shuffle(members)
    picked: list[int] = []
    while len(picked) < size:
        for members in bins:
            if members and len(picked) < size:
                picked.append(members.pop())
    return sorted(picked)


def load_scores(path: str | Path) -> dict[str, float]:
    """Arch -> score from a JSON or CSV file.

    JSON: a mapping `{arch: score}`, or a list of `{"arch": ..., "score": ...}` (e.g. search
    records). CSV: a header with `arch` and `score` columns. An arch may be a string (a name, an
    NB201 cell string, an index) or an arch object; objects are keyed canonically.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"score file '{path}' does not exist")
    try:
        if path.suffix.lower() == ".csv":
            with path.open(newline="") as f:
                reader = csv.DictReader(f)
                if not reader.fieldnames or not {"arch", "score"} <= set(reader.fieldnames):
                    raise DataError(
                        f"score file '{path}' needs CSV columns 'arch' and 'score', has {reader.fieldnames}"
                    )
                return {row["arch"]: float(row["score"]) for row in reader}
        data = json.loads(path.read_text())
        if isinstance(data, dict) and isinstance(data.get("records"), list):
            data = data["records"]
        if isinstance(data, dict):
            return {str(k): float(v) for k, v in data.items()}
        if isinstance(data, list):
            return {_key(r["arch"]): float(r["score"]) for r in data}
    except (ValueError, KeyError, TypeError) as e:
        raise DataError(f"score file '{path}' is malformed: {e}") from None
    raise DataError(f"score file '{path}' must hold a mapping arch -> score or a list of {{arch, score}}")


def _key(arch: Any) -> str:
    return arch if isinstance(arch, str) else str(arch_key(arch))


def paired_scores(true_path: str | Path, pred_path: str | Path) -> tuple[list[float], list[float], dict[str, int]]:
    """The two files' scores of the archs both hold (same order), and how many archs each holds alone."""
    true, pred = load_scores(true_path), load_scores(pred_path)
    common = [k for k in true if k in pred]
    if len(common) < 2:
        raise DataError(f"score files '{true_path}' and '{pred_path}' share {len(common)} archs; need >= 2")
    unmatched = {"only_in_true": len(true) - len(common), "only_in_pred": len(pred) - len(common)}
    return [true[k] for k in common], [pred[k] for k in common], unmatched


def compare_score_files(
    true_path: str | Path, pred_path: str | Path, ks: Sequence[float] = DEFAULT_KS
) -> dict[str, Any]:
    """Rank statistics of the predicted scores against the true ones over the archs both files hold."""
    true, pred, unmatched = paired_scores(true_path, pred_path)
    return {**rank_stats(true, pred, ks), **unmatched}
