"""One-shot methods against NAS-Bench-201 ground truth at one CPU budget, and random search at the same wall time.

Runs `cream bench nb201-oneshot` (the workflow behind it) for each method on the same CIFAR-10 images,
epochs and seeds, then random search over the table at each method's mean wall time. A random-search
query stands for training one cell at the same budget; its cost is taken as the wall time of SPOS's
supernet training (one path a step, the same images and epochs: what training one standalone cell
costs), and what the query sees is the table's `cifar10_val_12ep` (a 12-epoch training on the full
data: an optimistic stand-in for what our budget would show). Prints one JSON object.

    PYTHONPATH=src python benchmarks/bench_nb201_oneshot.py --epochs 2 --train-images 400 --seeds 3 \\
        --out runs/bench-oneshot [--set-setn strategy.kwargs={candidates:20,eval_images:100}]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from common import CIFAR10_ARCHIVE, NB201_TABLE


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default="spos,darts,gdas,setn")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--train-images", type=int, default=400)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--table", default=str(NB201_TABLE))
    ap.add_argument("--archive", default=str(CIFAR10_ARCHIVE))
    ap.add_argument("--out", required=True)
    ap.add_argument("--set", dest="common", action="append", default=[], help="override for every method")
    for m in ("spos", "darts", "gdas", "setn", "cdarts"):
        ap.add_argument(f"--set-{m}", dest=m, action="append", default=[], help=f"override for {m} only")
    args = ap.parse_args()

    from cream.tabular import NB201Table, run_bench
    from cream.workflows.oneshot_bench import run_oneshot

    table = NB201Table(args.table)
    methods = args.methods.split(",")
    results = {}
    for m in methods:
        results[m] = run_oneshot(m, args.epochs, args.train_images, args.seeds, table, args.archive,
                                 Path(args.out) / m, [*args.common, *getattr(args, m)])
        print(json.dumps({m: results[m]}), flush=True)
    out: dict = {"protocol": {"epochs": args.epochs, "train_images": args.train_images, "seeds": args.seeds,
                              "common": args.common, **{m: getattr(args, m) for m in methods}},
                 "methods": results}
    if "spos" in results:
        query_s = sum(json.loads((Path(args.out) / "spos" / f"seed{s}" / "supernet" / "summary.json").read_text())
                      ["wall_s"] for s in range(args.seeds)) / args.seeds
        out["random"] = {"query_s": round(query_s, 2)}
        for m, res in results.items():
            queries = max(1, math.floor(res["wall_s"]["mean"] / query_s))
            rs = {k: run_bench(table, "random", queries, 30, search_metric="cifar10_val_12ep",
                               report_metric=f"{k}_test_200ep")["final"] for k in ("cifar10", "cifar100", "imagenet16")}
            out["random"][f"at_{m}_wall"] = {"queries": queries, **rs}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
