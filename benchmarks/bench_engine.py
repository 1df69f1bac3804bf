"""Training throughput of the engine vs a minimal hand-written PyTorch loop, side by side.

Same model architecture and init, same data, same loader, same optimizer (timm's AdamW), same number
of steps. The two are run alternately (A B A B ...) and the median images/s of each is
reported with their ratio (goal: engine / minimal >= 0.95). Prints one JSON object.

    python benchmarks/bench_engine.py [--model resnet18] [--image-size 32] [--steps 30] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics

import torch
from common import images_per_second
from timm.optim import create_optimizer_v2

from cream.config import RunConfig, load_config
from cream.data import build_splits, train_loader
from cream.train.engine import Engine, seed_everything
from cream.workflows.train_model import configured_model


def minimal_loop(cfg: RunConfig, splits, steps: int) -> float:
    seed_everything(cfg.train.seed)
    model = configured_model(cfg, splits.num_classes).train()
    opt = create_optimizer_v2(model, opt=cfg.optim.opt, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return images_per_second(train_loader(splits.train, cfg.data.batch_size, seed=cfg.train.seed), step, steps)


def engine_loop(cfg: RunConfig, splits, steps: int) -> float:
    seed_everything(cfg.train.seed)
    engine = Engine(cfg, configured_model(cfg, splits.num_classes), splits, None)
    engine.model.train()
    return images_per_second(engine.train_loader, engine.train_step, steps)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 keeps ratios stable on a shared machine)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(RunConfig, None, [f"model.name={args.model}", f"data.image_size={args.image_size}",
                                        f"data.batch_size={args.batch_size}", "optim.sched=none"])
    splits = build_splits(cfg.data)
    minimal, engine = [], []
    for _ in range(args.repeats):
        minimal.append(minimal_loop(cfg, splits, args.steps))
        engine.append(engine_loop(cfg, splits, args.steps))
    m, e = statistics.median(minimal), statistics.median(engine)
    print(json.dumps({
        "benchmark": "engine_vs_minimal_loop", "model": args.model, "image_size": args.image_size,
        "batch_size": args.batch_size, "steps": args.steps, "repeats": args.repeats,
        "minimal_images_per_s": round(m, 1), "engine_images_per_s": round(e, 1), "ratio": round(e / m, 3),
        "torch_threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
    }))


if __name__ == "__main__":
    main()
