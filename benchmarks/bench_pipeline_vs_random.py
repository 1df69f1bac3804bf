"""Does search pay off? `cream run`'s retrained winner vs 5 random archs retrained with the same recipe.

Runs the embedded default pipeline (supernet → search → retrain → test), then retrains 5 archs
drawn at random from the same space under the same cost limits (`search.limits`), with the same retrain
recipe and seed, and compares test accuracy with their median. Prints one JSON object.

    python benchmarks/bench_pipeline_vs_random.py [--random 5] [--out runs/bench-pipeline]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path

from cream.commands.run import DEFAULT
from cream.config import RunConfig, load_config, with_overrides
from cream.data import build_splits
from cream.run_dir import RunDir
from cream.workflows.pipeline import run_pipeline
from cream.workflows.search import search_feasible
from cream.workflows.supernet import resolve_space
from cream.workflows.train_model import train_standalone


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--random", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/bench-pipeline")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is steadier on a shared machine)")
    args = ap.parse_args()
    out = Path(args.out)
    cfg = load_config(RunConfig, DEFAULT, [f"train.threads={args.threads}"])
    start = time.perf_counter()
    found = run_pipeline(cfg, RunDir.create(str(out / "pipeline"), "run"))
    pipeline_s = time.perf_counter() - start

    space = resolve_space(cfg, build_splits(cfg.data).num_classes)
    feasible = search_feasible(cfg.search, space)  # the limits the search had
    rng = random.Random(args.seed)
    randoms = []
    while len(randoms) < args.random:
        arch = space.sample(rng)
        if feasible is None or feasible(arch):
            randoms.append(arch)
    results = []
    for i, arch in enumerate(randoms):
        rcfg = with_overrides(cfg, cfg.retrain, arch=arch, retrain={})
        s = train_standalone(rcfg, RunDir.create(str(out / f"random{i}"), "retrain"))
        results.append({"arch": arch, "params": space.cost(arch)["params"], "test_top1": s["test_top1"]})
    median = statistics.median(r["test_top1"] for r in results)
    print(json.dumps({
        "benchmark": "pipeline_vs_random_archs", "pipeline_wall_s": round(pipeline_s, 1),
        "searched_arch": json.loads(found["best_arch"]), "searched_params": found["params"],
        "searched_test_top1": found["test_top1"], "random_test_top1": [r["test_top1"] for r in results],
        "random_params": [r["params"] for r in results], "random_median_test_top1": median,
        "beats_median": found["test_top1"] > median,
    }))


if __name__ == "__main__":
    main()
