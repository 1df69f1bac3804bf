"""How well a CPU-trained NAS-Bench-201 supernet ranks cells, against the benchmark's 200-epoch accuracies.

Trains the supernet of `configs/nb201/supernet-cifar10-cpu.yaml` (uniform single-path sampling, real
CIFAR-10 JPEGs), scores a stratified sample of cells with inherited weights (BN recalibrated per
cell) on the held-out split, and ranks the scores against `cifar10_test_200ep`: the quality report
of `cream rank` (Kendall tau, Spearman rho, tau in the true top 10 %, precision@top-k, the pick's
regret, the largest and smallest cells, the trivial proxies MACs and params). On the same cells,
the table's 12-epoch columns (really trained, short schedule) are ranked against the same truth as a
yardstick. Prints one JSON object.

    PYTHONPATH=src python benchmarks/bench_nb201_rank.py [--sample 100] [--epochs 4] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from common import CIFAR10_ARCHIVE, NB201_TABLE, REPO

CONFIG = REPO / "configs" / "nb201" / "supernet-cifar10-cpu.yaml"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", default=str(NB201_TABLE))
    ap.add_argument("--archive", default=str(CIFAR10_ARCHIVE))
    ap.add_argument("--sample", type=int, default=100)
    ap.add_argument("--bn-recal-images", type=int, default=256)
    ap.add_argument("--epochs", type=int, help="override train.epochs of the config")
    ap.add_argument("--out", help="run directory (default: a temporary folder)")
    args = ap.parse_args()

    from cream.config import RunConfig, load_config
    from cream.run_dir import RunDir
    from cream.tabular import NB201Table
    from cream.tabular.nb201_rank import write_rank
    from cream.workflows.rank import rank_supernet_run
    from cream.workflows.supernet import train_supernet

    overrides = [f"data.root={args.archive}"] + ([f"train.epochs={args.epochs}"] if args.epochs else [])
    cfg = load_config(RunConfig, CONFIG, overrides)
    with tempfile.TemporaryDirectory() as tmp:
        run = RunDir.create(args.out or str(Path(tmp) / "run"), "supernet")
        t0 = time.perf_counter()
        summary = train_supernet(cfg, run)
        train_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        result = rank_supernet_run(run.path, NB201Table(args.table), args.sample, 0, args.bn_recal_images)
        rank_s = time.perf_counter() - t0
        if args.out:
            write_rank(run.path, result)
    r = result["rank"]
    images = cfg.data.train_per_class * cfg.space["num_classes"]
    out = {
        "protocol": {
            "config": str(CONFIG.relative_to(REPO)), "space": cfg.space, "strategy": cfg.strategy.name,
            "epochs": cfg.train.epochs, "train_images": images - r["eval_images"], "eval_images": r["eval_images"],
            "bn_recal_images": r["bn_recal_images"], "sample": r["sample"],
            "sampling": "stratified over cifar10_test_200ep (equal-width bins), seed 0",
            "truth": r["truth"], "steps": summary["steps"],
        },
        "kendall_tau": round(r["kendall_tau"], 4),
        "spearman_rho": round(r["spearman_rho"], 4),
        "top10_kendall_tau": round(r["top10_kendall_tau"], 4),
        "precision_at_k": r["precision_at_k"],
        "pick": r["pick"], "largest": r["largest"], "smallest": r["smallest"],
        "proxies": r["proxies"], "warnings": r["warnings"],
        "reference_12ep": {c: {"kendall_tau": round(v["kendall_tau"], 4), "spearman_rho": round(v["spearman_rho"], 4),
                               "precision_at_k": v["precision_at_k"]} for c, v in r["reference"].items()},
        "supernet_val_top1": {k: v for k, v in summary.items() if k.startswith("val_top1")},
        "score_range": [min(x["score"] for x in result["records"]), max(x["score"] for x in result["records"])],
        "train_s": round(train_s, 1),
        "rank_s": round(rank_s, 1),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
