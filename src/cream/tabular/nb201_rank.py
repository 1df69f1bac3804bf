"""How well a supernet ranks NAS-Bench-201 cells, against the benchmark's trained accuracies.

Protocol: a stratified sample of cells (equal-width bins over `cifar10_test_200ep`, so poor
cells are represented too) is scored with inherited supernet weights on held-out images (BN
recalibrated per cell); the scores are ranked against `cifar10_test_200ep` (`supernet_quality`:
Kendall tau, Spearman rho, tau in the true top 10 %, precision@top-k, the pick's regret, the
largest and smallest cells of the sample). As yardsticks, the 12-epoch columns of the table (real
training, short schedule) and the trivial proxies MACs and params (of the benchmark's own network,
`NB201Space()`) are ranked against the same truth on the same sample.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cream.report.plots import plot_rank_scatter
from cream.search.rank import DEFAULT_KS, stratified_sample, supernet_quality, yardstick_stats
from cream.spaces.base import Arch
from cream.spaces.nb201 import NB201Space, arch_to_str, index_to_arch
from cream.tabular.nb201 import NB201Table

TRUTH = "cifar10_test_200ep"
REFERENCES: tuple[str, ...] = ("cifar10_val_12ep", "cifar10_test_12ep")


def rank_scores(score: Callable[[list[Arch]], list[float]], table: NB201Table, sample: int = 100, seed: int = 0,
                truth: str = TRUTH, ks: Sequence[float] = DEFAULT_KS) -> dict[str, Any]:
    """Score a stratified sample of `sample` cells with `score(archs)` (one batch) and rank them against `truth`.

    Returns `{"records": [{"arch", "index", "score", truth, "cost"}], "rank": {...}}`; `rank` holds the
    statistics of the scores (`supernet_quality`; the pick's regret also against the table's best cell) and,
    under `reference`, those of the 12-epoch columns on the same cells.
    """
    truth_values = table.column(truth)
    indices = stratified_sample(truth_values, sample, seed)
    archs = [index_to_arch(i) for i in indices]
    scores = [float(v) for v in score(archs)]
    true = [float(truth_values[i]) for i in indices]
    space = NB201Space()
    costs = [space.cost(a) for a in archs]
    records = [{"arch": arch_to_str(a), "index": i, "score": s, truth: t, "cost": c}
               for a, i, s, t, c in zip(archs, indices, scores, true, costs, strict=True)]
    reference = {}
    for column in REFERENCES:
        values = table.column(column)
        reference[column] = yardstick_stats(true, [float(values[i]) for i in indices], ks)
    quality = supernet_quality(true, scores, costs, ks=ks)
    for extreme in ("largest", "smallest", "pick"):
        quality[extreme]["arch"] = records[quality[extreme]["position"]]["arch"]
    quality["pick"]["table_best_true"] = float(truth_values.max())
    quality["pick"]["table_regret"] = float(truth_values.max()) - quality["pick"]["true"]
    rank = {"truth": truth, "sample": sample, "sample_seed": seed, **quality, "reference": reference}
    return {"records": records, "rank": rank}


def write_rank(out: str | Path, result: dict[str, Any]) -> dict[str, Path]:
    """`scores.json` (records), `rank.json` (statistics) and `rank.png` (scatter) in `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    truth = result["rank"]["truth"]
    paths = {"scores": out / "scores.json", "rank": out / "rank.json", "plot": out / "rank.png"}
    paths["scores"].write_text(json.dumps(result["records"], indent=1) + "\n")
    paths["rank"].write_text(json.dumps(result["rank"], indent=2) + "\n")
    records = result["records"]
    plot_rank_scatter([r[truth] for r in records], [r["score"] for r in records], paths["plot"],
                      xlabel=f"{truth} (%)", ylabel="supernet accuracy, inherited weights (%)",
                      title=f"NAS-Bench-201: {len(records)} stratified cells",
                      marks={name: result["rank"][name]["position"] for name in ("pick", "largest", "smallest")})
    return paths
