"""Cost of Cream's supernet training step vs a uniform (SPOS) step, and of one meta update, side by side.

One engine per strategy on the same supernet, data and optimizer. Timed: engine.train_step with
Uniform (path drawn with the same op probabilities), with Cream before its warm-up ends (board
empty: the same work plus the board bookkeeping), with Cream on a full board (matching scores over
all board images, teacher forward, distillation), and Cream's meta update alone. The cases are
run alternately for `--repeats` rounds; medians in ms. Prints one JSON object.

    python benchmarks/bench_cream_strategy.py [--layers 2] [--image-size 64] [--batch-size 32] [--steps 10]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from cream.config import RunConfig, load_config
from cream.data import build_splits
from cream.spaces import get_space
from cream.supernets import build_supernet
from cream.train.engine import Engine, seed_everything
from cream.train.strategies import make_strategy

PRE_PROB = {"ir_k3_e4_se": 0.05, "ir_k3_e6_se": 0.2, "ir_k5_e4_se": 0.05, "ir_k5_e6_se": 0.5,
            "ir_k7_e4_se": 0.05, "ir_k7_e6_se": 0.15}


def make_engine(cfg: RunConfig, splits) -> Engine:
    seed_everything(0)
    space = get_space(dict(cfg.space, num_classes=splits.num_classes))
    return Engine(cfg, build_supernet(space), splits, None, make_strategy(cfg.strategy, space, 0))


def time_steps(engine: Engine, batches: list, first_step: int, steps: int) -> float:
    """Median ms of `engine.train_step` over `steps` steps (global step indices from `first_step`)."""
    times = []
    for i in range(steps):
        engine.step = first_step + i
        x, y = batches[i % len(batches)]
        start = time.perf_counter()
        engine.train_step(x, y)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=2, help="layers per searchable stage of the Cream space")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--board-size", type=int, default=10)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    common = [f"space={{preset: cream, layers: {[args.layers] * 5}, input_size: {args.image_size}}}",
              f"data.image_size={args.image_size}", f"data.batch_size={args.batch_size}", "optim.opt=sgd",
              "optim.lr=0.05", "optim.sched=none", "optim.smoothing=0.1"]
    probs = json.dumps(PRE_PROB)
    uniform_cfg = load_config(RunConfig, None, [*common, "strategy.name=uniform",
                                                f"strategy.kwargs={{probs: {probs}}}"])
    cream_cfg = load_config(RunConfig, None, [*common, "strategy.name=cream", (
        f"strategy.kwargs={{probs: {probs}, board_size: {args.board_size}, meta_start_epoch: 0, "
        "update_every: 1000000}")])
    splits = build_splits(uniform_cfg.data)
    uniform, warmup, cream = make_engine(uniform_cfg, splits), make_engine(cream_cfg, splits), \
        make_engine(cream_cfg, splits)
    batches = []
    for x, y in uniform.train_loader:
        batches.append((x, y))
        if len(batches) == args.steps:
            break
    strategy = cream.strategy
    cream.epoch = 1  # past the warm-up: fill the board
    step = 1
    while len(strategy.board) < args.board_size:
        cream.step = step
        cream.train_step(*batches[step % len(batches)])
        step += 1

    results: dict[str, list[float]] = {"uniform": [], "cream_warmup": [], "cream": [], "meta_update": []}
    for r in range(args.repeats):
        offset = 10_000 * (r + 1)  # fresh paths each round, the same for every strategy
        results["uniform"].append(time_steps(uniform, batches, offset, args.steps))
        results["cream_warmup"].append(time_steps(warmup, batches, offset, args.steps))
        results["cream"].append(time_steps(cream, batches, offset, args.steps))
        meta = []
        for i in range(args.steps):
            x, y = batches[i % len(batches)]
            start = time.perf_counter()
            strategy.meta_update(x, y, strategy.arch_for_step(offset + i))
            meta.append(time.perf_counter() - start)
        results["meta_update"].append(1000 * statistics.median(meta))
    ms = {k: round(statistics.median(v), 2) for k, v in results.items()}
    print(json.dumps({
        "space": f"cream layers {[args.layers] * 5} @{args.image_size}", "batch_size": args.batch_size,
        "board_size": args.board_size, "board_images": strategy.board_images, "threads": args.threads,
        "steps": args.steps, "repeats": args.repeats,
        "uniform_step_ms": ms["uniform"], "cream_warmup_step_ms": ms["cream_warmup"],
        "cream_step_ms": ms["cream"], "meta_update_ms": ms["meta_update"],
        "cream_warmup_over_uniform": round(ms["cream_warmup"] / ms["uniform"], 3),
        "cream_over_uniform": round(ms["cream"] / ms["uniform"], 3),
        "meta_update_over_uniform_step": round(ms["meta_update"] / ms["uniform"], 3),
        "cream_over_uniform_with_meta_every_200": round(
            (ms["cream"] + ms["meta_update"] / 200) / ms["uniform"], 3),
        "torch": torch.__version__, "machine": platform.machine(),
    }))


if __name__ == "__main__":
    main()
