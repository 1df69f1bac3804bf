"""ABS on NAS-Bench-201 against the table's ground truth: does shrinking by angle keep the good cells?

Protocol (CPU-sized; every number is printed in the JSON):
1. Train one SPOS supernet (`configs/nb201/supernet-cifar10-cpu.yaml`: 1 cell per stage, real CIFAR-10
   JPEGs; images and epochs from the flags) with strategy `abs` set never to shrink, so its checkpoint
   holds W0 (the supernet at initialisation) beside the trained weights.
2. Shrink the NB201 space (15,625 cells) op by op until it holds at most 10 % and then 1 % of the cells:
   * `angle`: ABS scores (`cream.train.abs.score_ops`, every cell of the current space scored: the
     original's NB201 analysis is exhaustive), dropping one op per step by the global rule;
   * `angle_sampled`, `accuracy`: per step, `--children` cells drawn uniformly from the current space
     (the same cells for both, per seed); an op's score is the mean angle, or the mean supernet top-1
     with inherited weights (BN recalibrated), of the drawn cells containing it; `--drops` ops per step;
   * `random`: the same global rule on random scores.
   The sampled and random methods run `--seeds` seeds each.
3. For each shrunk space: how many of the table's top-1 % cells (by `cifar10_test_200ep`) survive, and the
   best / mean `cifar10_test_200ep` of the surviving cells.
4. Regularized evolution (REA) on the table (search on `cifar10_val_12ep`, report `cifar10_test_200ep`) in
   each shrunk space vs the full space, at 50 and 100 queries, `--rea-seeds` seeds.

    PYTHONPATH=src python benchmarks/abs_nb201.py [--per-class 300] [--epochs 3] [--seeds 5]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from common import CIFAR10_ARCHIVE, NB201_TABLE, REPO

CONFIG = REPO / "configs" / "nb201" / "supernet-cifar10-cpu.yaml"
TOTAL = 5**6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", default=str(NB201_TABLE))
    ap.add_argument("--archive", default=str(CIFAR10_ARCHIVE))
    ap.add_argument("--per-class", type=int, default=300)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--children", type=int, default=30)
    ap.add_argument("--drops", type=int, default=3, help="ops dropped per step by the sampled methods")
    ap.add_argument("--angle-drops", type=int, default=1, help="ops dropped per step by exhaustive `angle`")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bn-recal-images", type=int, default=64)
    ap.add_argument("--eval-images", type=int, default=250)
    ap.add_argument("--rea-seeds", type=int, default=20)
    args = ap.parse_args()

    from cream.config import RunConfig, load_config
    from cream.run_dir import RunDir
    from cream.search import make_search
    from cream.spaces.nb201 import NB201Space, arch_to_index, index_to_arch
    from cream.tabular import NB201Table
    from cream.train.abs import PartStats, PathVectors, drop_ops, score_ops
    from cream.train.checkpoint import list_checkpoints, load
    from cream.workflows.search import load_scorer
    from cream.workflows.supernet import train_supernet

    table = NB201Table(args.table)
    test200, val12 = table.column("cifar10_test_200ep"), table.column("cifar10_val_12ep")
    top = set(np.argsort(-test200)[: TOTAL // 100].tolist())  # the top 1 % (156 cells)
    targets = {"10pct": TOTAL // 10, "1pct": TOTAL // 100}

    overrides = [f"data.root={args.archive}", f"data.train_per_class={args.per_class}", f"train.epochs={args.epochs}",
                 f"train.threads={args.threads}",
                 "strategy.name=abs", f"strategy.kwargs={{first_epochs: {args.epochs + 1}, rebase: false}}",
                 f"search.bn_recal_images={args.bn_recal_images}", f"search.eval_images={args.eval_images}"]
    cfg = load_config(RunConfig, CONFIG, overrides)
    t0 = time.perf_counter()
    tmp = tempfile.mkdtemp()
    run = RunDir.create(str(Path(tmp) / "run"), "supernet")
    summary = train_supernet(cfg, run)
    train_s = time.perf_counter() - t0
    base = load(list_checkpoints(run.checkpoints)[-1])["strategy"]["base"]
    scorer, _ = load_scorer(cfg, run.path)
    net = scorer.net
    stats = PartStats(PathVectors(net), base)
    accuracy_cache: dict[int, float] = {}

    def accuracy(arch) -> float:
        i = arch_to_index(arch)
        if i not in accuracy_cache:
            accuracy_cache[i] = float(scorer(arch))
        return accuracy_cache[i]

    def members(space: NB201Space) -> list[int]:
        ok = [set(ops) for ops in space.edge_ops]
        return [i for i in range(TOTAL) if all(op in ok[e] for e, op in enumerate(index_to_arch(i)["ops"]))]

    def report(space: NB201Space) -> dict:
        cells = members(space)
        acc = test200[cells]
        return {"archs": len(cells), "top1pct_kept": len(top.intersection(cells)), "best": round(float(acc.max()), 2),
                "mean": round(float(acc.mean()), 2), "edge_ops": [list(o) for o in space.edge_ops]}

    def shrink(scores_of, k: int) -> dict[str, NB201Space]:
        """Drop ops (global rule, `k` per scoring) until each target size is reached; the spaces at the targets."""
        space, out, stalls = NB201Space(), {}, 0
        while len(out) < len(targets):
            dropped = drop_ops(space.choices(), scores_of(space), "global", k)
            stalls = 0 if dropped else stalls + 1
            if stalls > 20:
                raise RuntimeError(f"no op dropped 20 times in a row at {space.edge_ops}")
            for d, v in dropped:
                space = space.restrict({d: [o for o in space.choices()[d] if o != v]})
                for name, size in targets.items():
                    if name not in out and space.num_archs() <= size:
                        out[name] = space
                if len(out) == len(targets):
                    break
        return out

    def sampled(metric, rng: random.Random):
        def scores_of(space: NB201Space) -> dict:
            cells = [space.sample(rng) for _ in range(args.children)]
            values = [metric(a) for a in cells]
            sums: dict = {}
            for a, v in zip(cells, values, strict=True):
                for e, op in enumerate(a["ops"]):
                    sums.setdefault((f"ops[{e}]", op), []).append(v)
            return {c: statistics.fmean(vs) for c, vs in sums.items() if len(space.choices()[c[0]]) > 1}
        return scores_of

    def random_scores(rng: random.Random):
        return lambda space: {(d, v): rng.random() for d, vs in space.choices().items() if len(vs) > 1 for v in vs}

    t0 = time.perf_counter()
    results: dict[str, list[dict[str, NB201Space]]] = {
        "angle": [shrink(lambda s: score_ops(s, stats.angle, random.Random(0)), args.angle_drops)]}
    for name, make in (("angle_sampled", lambda r: sampled(stats.angle, r)),
                       ("accuracy", lambda r: sampled(accuracy, r)), ("random", random_scores)):
        results[name] = [shrink(make(random.Random(f"abs-bench:{seed}")), args.drops if name != "random" else 1)
                         for seed in range(args.seeds)]
    shrink_s = time.perf_counter() - t0

    def rea(space: NB201Space, budget: int) -> list[float]:
        out = []
        for seed in range(args.rea_seeds):
            res = make_search("regularized", space, lambda a: float(val12[arch_to_index(a)]), budget=budget,
                              seed=seed, population=10, sample=3).run()
            out.append(float(test200[arch_to_index(res.records[res.best_at[-1]]["arch"])]))
        return out

    def summarise(runs: list[dict[str, NB201Space]]) -> dict:
        out = {}
        for name in targets:
            reps = [report(r[name]) for r in runs]
            out[name] = {key: [r[key] for r in reps] for key in ("archs", "top1pct_kept", "best", "mean")}
            for budget in (50, 100):
                picks = [x for r in runs for x in rea(r[name], budget)]
                out[name][f"rea{budget}"] = {"mean": round(statistics.fmean(picks), 3),
                                             "std": round(statistics.pstdev(picks), 3)}
            if len(runs) == 1:
                out[name]["edge_ops"] = reps[0]["edge_ops"]
        return out

    full = {f"rea{b}": (lambda p: {"mean": round(statistics.fmean(p), 3), "std": round(statistics.pstdev(p), 3)})(
        rea(NB201Space(), b)) for b in (50, 100)}
    print(json.dumps({
        "protocol": {"config": str(CONFIG.relative_to(REPO)), "train_per_class": args.per_class,
                     "epochs": args.epochs, "steps": summary["steps"], "seeds": args.seeds,
                     "children_per_step": args.children, "drops_per_step": args.drops,
                     "angle_drops_per_step": args.angle_drops,
                     "bn_recal_images": args.bn_recal_images, "eval_images": args.eval_images,
                     "rea": {"population": 10, "sample": 3, "seeds": args.rea_seeds,
                             "search": "cifar10_val_12ep", "report": "cifar10_test_200ep"},
                     "targets": targets, "top1pct": len(top)},
        "supernet_val_top1": {k: v for k, v in summary.items() if k.startswith("val_top1")},
        "full_space": {"best": round(float(test200.max()), 2), "mean": round(float(test200.mean()), 2), **full},
        "methods": {name: summarise(runs) for name, runs in results.items()},
        "cells_evaluated_by_accuracy": len(accuracy_cache),
        "train_s": round(train_s, 1), "shrink_s": round(shrink_s, 1),
    }))
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
