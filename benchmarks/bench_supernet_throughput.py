"""Supernet training throughput vs training its largest subnet alone.

Three training engines on the same config, data and recipe (optimizer step included):
* the supernet with a new random path every step (how a supernet is trained);
* the supernet pinned to its largest path (isolates what weight slicing costs);
* the largest arch extracted as a standalone model.
Steps run round-robin on the same pre-loaded batches, timed in process CPU seconds (the data
loader, the same for all three, is left out); the median step time gives images/s. Ratios are
against the standalone model (goal for the largest path: >= 0.95). Prints one JSON object.

    python benchmarks/bench_supernet_throughput.py [--set space.embed_dims=[...] ...]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
from functools import partial
from itertools import islice

import torch
from common import time_round_robin

from cream.commands.run import DEFAULT
from cream.config import RunConfig, load_config
from cream.data import build_splits
from cream.train.engine import Engine, seed_everything
from cream.train.strategies import make_strategy
from cream.train.strategy import Strategy
from cream.train.uniform import Uniform
from cream.workflows.supernet import new_supernet, resolve_space

# AutoFormer-T's space and supernet (super embed 256, depth 14, 4 heads, MLP ratio 4) at its real
# input (224 px, patch 16: 197 tokens), on the embedded images upsampled; batch 32 per step.
AUTOFORMER_T = ["space.embed_dims=[192,216,240]", "space.super_embed_dim=256", "space.depths=[12,13,14]",
                "space.num_heads=[3,4]", "space.mlp_ratios=[3.5,4.0]", "space.head_dim=64", "space.img_size=224",
                "space.patch_size=16", "space.max_relative_position=14", "data.image_size=224", "data.batch_size=32"]


class LargestPath(Uniform):
    """The supernet pinned to its largest path: isolates the cost of weight slicing in training."""

    def arch_for_step(self, step: int) -> dict:
        return self.space.largest()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30, help="timed steps of each engine")
    ap.add_argument("--autoformer-t", action="store_true",
                    help="AutoFormer-T's supernet at 224 px (else the cream run preset)")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 keeps ratios stable on a shared machine)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(RunConfig, DEFAULT, (AUTOFORMER_T if args.autoformer_t else []) + args.overrides)
    splits = build_splits(cfg.data)
    space = resolve_space(cfg, splits.num_classes)
    engines = {}
    for name in ("random_path", "largest_path", "largest_alone"):
        seed_everything(0)
        net = new_supernet(cfg, space)
        if name == "largest_alone":
            net = net.extract(space.largest())
        strategy = {"random_path": make_strategy(cfg.strategy, space, 0), "largest_path": LargestPath(space),
                    "largest_alone": Strategy()}[name]
        engines[name] = Engine(cfg, net, splits, None, strategy)
        engines[name].model.train()
    batches = list(islice(engines["largest_alone"].train_loader, 4))
    step_of = {name: iter(range(10**9)) for name in engines}

    def step(name: str) -> None:
        engines[name].train_step(*batches[next(step_of[name]) % len(batches)])

    t = time_round_robin({name: partial(step, name) for name in engines}, args.steps, stat=statistics.median)
    ips = {name: cfg.data.batch_size / s for name, s in t.items()}
    print(json.dumps({"benchmark": "supernet_vs_largest_subnet_training", "space": space.name,
                      "shape": "AutoFormer-T" if args.autoformer_t else "cream run preset",
                      "tokens": space.grid[0] * space.grid[1] + 1,
                      "batch_size": cfg.data.batch_size, "threads": args.threads, "steps": args.steps,
                      "machine": platform.processor() or platform.machine(), "torch": torch.__version__,
                      **{f"{name}_images_per_s": round(v, 1) for name, v in ips.items()},
                      "ratio_random_path": round(ips["random_path"] / ips["largest_alone"], 3),
                      "ratio_largest_path": round(ips["largest_path"] / ips["largest_alone"], 3)}))


if __name__ == "__main__":
    main()
