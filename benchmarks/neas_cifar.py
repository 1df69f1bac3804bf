"""NEAS on CIFAR-10: a searched 2-member ensemble vs the best single arch, same MACs limit and search budget.

Both sides start from the same member space (a small MobileNet-style space at 16 px), train a
one-shot supernet for the same epochs on the same images (single: uniform single-path SPOS; ensemble:
K-path training with the per-member loss, `strategy.name=ensemble`), run the same evolutionary search
(same budget, same MACs limit, inherited weights, same held-out images), and retrain the winner with
the same recipe from scratch for each seed (the ensemble with the sum of member losses). Prints one
JSON object: per side the arch, its MACs/params, and test top-1 per seed.

Sized for a 2-core CPU (31 min with the two sides in parallel on the heavily shared machine): 200 train
images per class, 16 px, a few epochs. The accuracies are far from CIFAR-10's usual numbers; the
comparison, not the level, is the point.

    python benchmarks/neas_cifar.py [--seeds 3] [--out runs/bench-neas]
    python benchmarks/neas_cifar.py --side single & python benchmarks/neas_cifar.py --side ensemble  # in parallel
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from common import CIFAR10_ARCHIVE

from cream.config import RunConfig, load_config
from cream.run_dir import RunDir
from cream.workflows.search import search_supernet
from cream.workflows.supernet import train_supernet
from cream.workflows.train_model import train_standalone

CHOICE = ["ir_k3_e3", "ir_k5_e3", "ir_k3_e6"]
MEMBER = {
    "family": "mobilenet", "name": "cifar-tiny", "input_size": 16, "num_classes": 10, "act": "relu",
    "stem": {"channels": 8, "stride": 1}, "head": {"channels": 128},
    "stages": [{"channels": c, "stride": s, "ops": [CHOICE, ["skip", *CHOICE]]}
               for c, s in ((16, 1), (24, 2), (40, 2))],
}
ENSEMBLE = {"family": "ensemble", "member": MEMBER, "members": 2}  # splits: the stage boundaries 2 and 4


def data(per_class: int, test_per_class: int) -> list[str]:
    return [
        "data.name=imagefolder", f"data.root={CIFAR10_ARCHIVE}", "data.image_size=16",
        f"data.train_per_class={per_class}", f"data.test_per_class={test_per_class}", "data.val_fraction=0.1",
        "data.batch_size=64", "data.eval_batch_size=500", "data.train_crop=pad", "data.pad=2", "data.hflip=0.5",
        "data.mean=[0.4913, 0.4821, 0.4465]", "data.std=[0.2452, 0.2428, 0.2606]",
    ]


def recipe(epochs: int, threads: int, seed: int) -> list[str]:
    return ["optim.opt=sgd", "optim.lr=0.1", "optim.momentum=0.9", "optim.weight_decay=5e-4", "optim.smoothing=0.1",
            "optim.sched=cosine", f"train.epochs={epochs}", f"train.threads={threads}", f"train.seed={seed}",
            "train.log_every=50"]


def side(name: str, space: dict, strategy: str, args: argparse.Namespace, out: Path) -> dict:
    common = data(args.per_class, args.test_per_class)
    start = time.perf_counter()
    cfg = load_config(RunConfig, None, [*common, *recipe(args.supernet_epochs, args.threads, 0),
                                        f"space={json.dumps(space)}", f"strategy.name={strategy}"])
    train_supernet(cfg, RunDir.create(str(out / f"{name}-supernet"), "supernet"))
    scfg = load_config(RunConfig, None, [
        *common, f"train.threads={args.threads}", f"space={json.dumps(space)}", "search.method=evolution",
        f"search.budget={args.budget}", f"search.limits={{macs: [null, {args.macs_limit}]}}",
        "search.eval_images=500", "search.bn_recal_images=256", "search.test_top_k=0",
        "search.kwargs={generations: 6, population: 8, parents: 4, mutations: 4, crossovers: 4}"])
    search_run = RunDir.create(str(out / f"{name}-search"), "search")
    search_supernet(scfg, out / f"{name}-supernet", search_run)
    found = json.loads((search_run.path / "arch.json").read_text())
    searched_s = time.perf_counter() - start
    tops = []
    for seed in range(args.seeds):
        rcfg = load_config(RunConfig, None, [
            *common, *recipe(args.retrain_epochs, args.threads, seed),
            f"space={json.dumps(found['space'])}", f"arch={json.dumps(found['arch'])}"])
        tops.append(train_standalone(rcfg, RunDir.create(str(out / f"{name}-retrain{seed}"), "retrain"))["test_top1"])
    return {"arch": found["arch"], "macs": found["cost"]["macs"], "params": found["cost"]["params"],
            "search_val_top1": found["score"], "test_top1": tops, "test_top1_mean": statistics.mean(tops),
            "test_top1_std": statistics.stdev(tops) if len(tops) > 1 else 0.0,
            "supernet_and_search_s": round(searched_s, 1), "wall_s": round(time.perf_counter() - start, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--per-class", type=int, default=200)
    ap.add_argument("--test-per-class", type=int, default=200)
    ap.add_argument("--supernet-epochs", type=int, default=10)
    ap.add_argument("--retrain-epochs", type=int, default=8)
    ap.add_argument("--budget", type=int, default=24)
    ap.add_argument("--macs-limit", type=int, default=2_400_000)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is steadier on a shared machine)")
    ap.add_argument("--side", choices=["both", "single", "ensemble"], default="both",
                    help="one side only (run the two in parallel processes; each prints its own JSON)")
    ap.add_argument("--out", default="runs/bench-neas")
    args = ap.parse_args()
    out = Path(args.out)
    result = {"benchmark": "neas_cifar", **{k: v for k, v in vars(args).items() if k != "out"}}
    if args.side in ("both", "single"):
        result["single"] = side("single", MEMBER, "uniform", args, out)
    if args.side in ("both", "ensemble"):
        result["ensemble"] = side("ensemble", ENSEMBLE, "ensemble", args, out)
    if args.side == "both":
        result["ensemble_minus_single"] = result["ensemble"]["test_top1_mean"] - result["single"]["test_top1_mean"]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
