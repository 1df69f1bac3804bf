"""`cream rank`: how well one score ranks archs against another.

Two forms:

* `cream rank --scores A.json --truth B.json`: rank statistics between two score files.
* `cream rank --supernet RUN --table nb201.csv`: score a stratified sample of NAS-Bench-201 cells
  with the weights of a trained supernet run and rank them against the benchmark.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from cream.commands import is_main_process, nb201_table_path
from cream.errors import CreamError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("rank", help="rank correlation of scores (or of a supernet) with ground truth",
                       description="Kendall tau, Spearman rho, tau within the true top 10 %%, overlap of the true and "
                                   "predicted top-k, and the true score and regret of the predicted best, of predicted "
                                   "scores against true ones, with a scatter plot. With --supernet, also the largest "
                                   "and smallest cells of the sample and the same figures of the trivial proxies MACs "
                                   "and params, with a warning when a proxy ranks better than the supernet. Either two "
                                   "score files (--scores, --truth), or a "
                                   "trained NAS-Bench-201 supernet run (--supernet RUN) against the NAS-Bench-201 "
                                   "table: a stratified sample of cells is scored with inherited weights (BN "
                                   "recalibrated) on the run's held-out validation split.")
    p.add_argument("--scores", help="predicted scores: JSON {arch: score} or [{arch, score}], or CSV arch,score")
    p.add_argument("--truth", help="true scores, same formats")
    p.add_argument("--supernet", metavar="RUN", help="a supernet run directory (config.yaml + weights)")
    p.add_argument("--table", help="nb201.csv for --supernet (default: $CREAM_SHARED_DATA/nb201/nb201.csv or "
                                   "../shared/data/nb201/nb201.csv)")
    p.add_argument("--sample", type=int, default=100, help="cells in the stratified sample (--supernet)")
    p.add_argument("--sample-seed", type=int, default=0,
                   help="seed of the sample, of the BN calibration images and of --eval-images")
    p.add_argument("--bn-recal-images", type=int, default=1024,
                   help="training images for BN recalibration of each cell (0 = keep the supernet's statistics)")
    p.add_argument("--eval-images", type=int, default=0,
                   help="validation images scored per cell (0 = the run's whole held-out split)")
    p.add_argument("--out", help="output folder (default: the run directory with --supernet, else the cwd)")
    p.add_argument("--json", action="store_true", help="print the statistics as one JSON object")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    if args.supernet and (args.scores or args.truth):
        raise CreamError("give either --scores and --truth, or --supernet RUN (not both)")
    if args.supernet:
        stats = _rank_supernet(args)
    elif args.scores and args.truth:
        stats = _rank_files(args)
    else:
        raise CreamError("give --scores FILE and --truth FILE, or --supernet RUN")
    if not is_main_process():
        return 0
    if args.json:
        print(json.dumps(stats))
        return 0
    print("\n".join(report_lines(stats)))
    for warning in stats.get("warnings", []):
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def _stat_line(name: str, s: dict[str, Any]) -> str:
    return (f"{name}: Kendall tau {s['kendall_tau']:.4f}, Spearman rho {s['spearman_rho']:.4f}, "
            f"tau in the true top 10 % {s['top10_kendall_tau']:.4f}")


def report_lines(stats: dict[str, Any]) -> list[str]:
    """The terminal report of `cream rank`: every figure in rank.json, one line each."""
    pick = stats["pick"]
    lines = [_stat_line(f"{stats['n']} archs", stats),
             "top-k overlap (true and predicted top-k): "
             + ", ".join(f"{k}: {v:.2f}" for k, v in stats["precision_at_k"].items()),
             f"pick (predicted best): true score {pick['true']:.4f}, regret {pick['regret']:.4f} "
             f"(best scored {pick['best_true']:.4f})"
             + (f", regret {pick['table_regret']:.4f} to the table's best {pick['table_best_true']:.4f}"
                if "table_regret" in pick else "")]
    for extreme in ("largest", "smallest"):
        if extreme in stats:
            e = stats[extreme]
            lines.append(f"{extreme} scored arch: true {e['true']:.4f}, predicted {e['pred']:.4f}")
    for name, ref in {**stats.get("proxies", {}), **stats.get("reference", {})}.items():
        lines.append(_stat_line(f"proxy {name}" if name in stats.get("proxies", {}) else f"reference {name}", ref))
    lines.append(f"written: {', '.join(stats['files'])}")
    return lines


def _rank_files(args: argparse.Namespace) -> dict[str, Any]:
    from cream.report.plots import plot_rank_scatter
    from cream.search.rank import paired_scores, rank_stats

    true, pred, unmatched = paired_scores(args.truth, args.scores)
    stats = {**rank_stats(true, pred), **unmatched}
    out = Path(args.out or ".")
    png = plot_rank_scatter(true, pred, out / "rank.png", xlabel=f"true ({Path(args.truth).name})",
                            ylabel=f"predicted ({Path(args.scores).name})")
    (out / "rank.json").write_text(json.dumps(stats, indent=2) + "\n")
    return {**stats, "files": [str(out / "rank.json"), str(png)]}


def _rank_supernet(args: argparse.Namespace) -> dict[str, Any]:
    from cream.tabular import NB201Table
    from cream.tabular.nb201_rank import write_rank
    from cream.workflows.rank import rank_supernet_run

    table = NB201Table(nb201_table_path(args.table))
    result = rank_supernet_run(args.supernet, table, args.sample, args.sample_seed, args.bn_recal_images,
                               args.eval_images)
    files = write_rank(args.out or args.supernet, result) if is_main_process() else {}  # under torchrun: rank 0
    return {**result["rank"], "files": [str(p) for p in files.values()]}
