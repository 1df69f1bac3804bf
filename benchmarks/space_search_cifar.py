"""Does searching the space pay off? `cream space-search` on the shared CIFAR-10 (CPU-sized), AutoFormerV2/S3.

Evolves a small ViT space for `--steps` steps (E and T per step), searches the evolved space under a MACs limit,
searches the initial space (step 0's supernet) under the same limit and budget, and retrains both archs with the
same recipe for `--seeds` seeds each. Prints one JSON object (recorded in docs/benchmarks.md).

    PYTHONPATH=src python benchmarks/space_search_cifar.py [--steps 2] [--seeds 3] [--out runs/bench-s3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from common import CIFAR10_ARCHIVE

from cream.config import RunConfig, from_dict, with_overrides
from cream.run_dir import RunDir
from cream.spaces import get_space
from cream.workflows.search import search_supernet
from cream.workflows.space_search import space_search
from cream.workflows.train_model import train_standalone

SPACE = {"family": "vit", "name": "vit-cifar-s3", "embed_dims": [32, 48, 64], "depths": [1, 2, 3],
         "num_heads": [1, 2, 3], "mlp_ratios": [1.0, 2.0, 3.0], "head_dim": 16, "img_size": 32, "patch_size": 8,
         "max_relative_position": 4, "num_classes": 10}


def config(archive: Path, steps: int, threads: int) -> dict:
    space = get_space(dict(SPACE))
    low, high = space.cost(space.smallest())["macs"], space.cost(space.largest())["macs"]
    return {
        "data": {"name": "imagefolder", "root": str(archive), "image_size": 32, "batch_size": 64,
                 "train_per_class": 200, "test_per_class": 100, "val_fraction": 0.1, "train_crop": "pad",
                 "hflip": 0.5},
        "space": SPACE,
        "optim": {"lr": 0.002, "warmup_epochs": 0.5, "weight_decay": 0.05},
        "train": {"epochs": 4, "threads": threads, "deterministic": True, "log_every": 50},
        "search": {"method": "evolution", "budget": 24, "eval_images": 0, "test_top_k": 1,
                   "limits": {"macs": [None, (low + high) // 2]},
                   "kwargs": {"generations": 4, "population": 6, "parents": 3, "mutations": 3, "crossovers": 3}},
        "space_search": {"steps": steps, "random_archs": 8, "evolution_budget": 8, "top_k": 3,
                         "evolution": {"population": 4, "parents": 2, "mutations": 2, "crossovers": 2},
                         "bounds": {"embed_dim": [16, 128], "depth": [1, 6], "num_heads": [1, 6],
                                    "mlp_ratio": [0.5, 6.0]}},
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--retrain-epochs", type=int, default=6)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="runs/bench-s3")
    args = ap.parse_args()
    archive = CIFAR10_ARCHIVE
    out = Path(args.out)
    cfg = from_dict(RunConfig, config(archive, args.steps, args.threads))
    start = time.perf_counter()
    evolved = space_search(cfg, RunDir.create(str(out / "space-search"), "space-search"))
    evolve_s = time.perf_counter() - start
    # the initial space, searched on its own supernet (step 0's) under the same limits and budget
    step0 = out / "space-search" / "steps" / "0" / "supernet"
    initial = search_supernet(with_overrides(cfg, {}, init=str(step0)), step0,
                              RunDir.create(str(out / "initial-search"), "search"))
    archs = {"initial": json.loads((out / "initial-search" / "arch.json").read_text()),
             "evolved": json.loads((out / "space-search" / "final" / "search" / "arch.json").read_text())}
    results = {}
    for name, found in archs.items():
        tops = []
        for seed in range(args.seeds):
            rcfg = with_overrides(cfg, {"train": {"epochs": args.retrain_epochs, "seed": seed}}, arch=found["arch"],
                                  space=found["space"])
            s = train_standalone(rcfg, RunDir.create(str(out / f"retrain-{name}-{seed}"), "retrain"))
            tops.append(s["test_top1"])
        results[name] = {"arch": found["arch"], "macs": found["cost"]["macs"], "params": found["cost"]["params"],
                         "inherited_val_top1": found["score"], "test_top1": tops,
                         "mean_test_top1": statistics.mean(tops)}
    steps = [json.loads((out / "space-search" / "steps" / str(k) / "et.json").read_text()) for k in range(args.steps)]
    print(json.dumps({
        "benchmark": "space_search_cifar", "macs_limit": cfg.search.limits["macs"][1],
        "E": evolved["E"], "T": evolved["T"], "ET": evolved["ET"],
        "moves": [{d: [t["action"], t["next"]] for d, t in s["dimensions"].items()} for s in steps],
        "initial_dimensions": evolved["initial_dimensions"], "final_dimensions": evolved["final_dimensions"],
        "initial": results["initial"], "evolved": results["evolved"],
        "evolved_beats_initial": results["evolved"]["mean_test_top1"] > results["initial"]["mean_test_top1"],
        "initial_search_queries": initial["queries"], "space_search_wall_s": round(evolve_s, 1),
        "wall_s": round(time.perf_counter() - start, 1),
    }))


if __name__ == "__main__":
    main()
