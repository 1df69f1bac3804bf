"""Supernet training throughput (a new random path every step) vs training its largest subnet alone.

Same data, loader, recipe and engine; the standalone side is the extracted largest arch.
Alternating repeats, median images/s, ratio (goal >= 0.95). Prints one JSON object.

    python benchmarks/bench_supernet_throughput.py [--set space.embed_dims=[...] ...]
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch
from common import images_per_second

from cream.commands.run import DEFAULT
from cream.config import RunConfig, load_config
from cream.data import build_splits
from cream.oneshot import new_supernet, resolve_space
from cream.train.engine import Engine, seed_everything
from cream.train.strategies import make_strategy
from cream.train.strategy import Strategy
from cream.train.uniform import Uniform


class LargestPath(Uniform):
    """The supernet pinned to its largest path: isolates the cost of weight slicing in training."""

    def arch_for_step(self, step: int) -> dict:
        return self.space.largest()


def throughput(cfg: RunConfig, splits, model: torch.nn.Module, strategy: Strategy, steps: int) -> float:
    engine = Engine(cfg, model, splits, None, strategy)
    engine.model.train()
    return images_per_second(engine.train_loader, engine.train_step, steps)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 keeps ratios stable on a shared machine)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(RunConfig, DEFAULT, args.overrides)
    splits = build_splits(cfg.data)
    space = resolve_space(cfg, splits.num_classes)
    sup, pinned, alone = [], [], []
    for _ in range(args.repeats):
        seed_everything(0)
        net = new_supernet(cfg, space)
        sup.append(throughput(cfg, splits, net, make_strategy(cfg.strategy, space, 0), args.steps))
        seed_everything(0)
        pinned.append(throughput(cfg, splits, new_supernet(cfg, space), LargestPath(space), args.steps))
        seed_everything(0)
        largest = new_supernet(cfg, space).extract(space.largest())
        alone.append(throughput(cfg, splits, largest, Strategy(), args.steps))
    s, p, a = statistics.median(sup), statistics.median(pinned), statistics.median(alone)
    print(json.dumps({"benchmark": "supernet_vs_largest_subnet_training", "space": space.name,
                      "batch_size": cfg.data.batch_size, "threads": args.threads,
                      "supernet_random_path_images_per_s": round(s, 1),
                      "supernet_largest_path_images_per_s": round(p, 1),
                      "largest_alone_images_per_s": round(a, 1), "ratio_random_path": round(s / a, 3),
                      "ratio_largest_path": round(p / a, 3)}))


if __name__ == "__main__":
    main()
