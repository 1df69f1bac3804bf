"""Speed of the AutoFormer supernet (arch set) vs its extracted model vs timm's ViT, CPU.

For two uniform shapes (embed 192 / 384, depth 12, heads 3 / 6, MLP ratio 4, inside the tiny
and small spaces) and the published AutoFormer-T arch (`t`: embed 192, depth 13, heads 3–4, MLP
ratios 3–4, in the tiny space with ratio 3 added), at 224 px, times eval forward and a train step (forward, loss,
backward) of:
* the supernet of the space with the arch set, and the model `extract` returns for it, with
  relative positions on (the published setting);
* the same pair with relative positions off, and (uniform shapes only) timm's
  `VisionTransformer` of the same shape (avg pool, LN eps 1e-5, fused attention), so the three
  compute the same function family.
Models are timed round-robin in one process. The machine is shared, so a step is timed in
process CPU seconds (insensitive to being descheduled) on one thread by default, and the
median over repeats is reported (`--stat min` for the minimum), with ratios. Also measures the analytic cost model's
throughput (archs/s, one core).

    PYTHONPATH=src python benchmarks/bench_vit_elastic.py [--batch 8] [--repeats 7] [--sizes t]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import time
from functools import partial

import torch
from common import eval_step, time_round_robin, train_step
from timm.models.vision_transformer import VisionTransformer
from torch import nn

import cream
from cream.spaces import get_space
from cream.spaces.vit import published_archs


def _uniform(dim: int, heads: int) -> dict:
    return {"embed_dim": dim, "depth": 12, "num_heads": [heads] * 12, "mlp_ratio": [4.0] * 12}


SHAPES = {"tiny": ("autoformer-tiny", _uniform(192, 3)), "small": ("autoformer-small", _uniform(384, 6)),
          "t": ("autoformer-tiny-ext", published_archs()["tiny"])}



def bench_shape(size: str, batch: int, repeats: int, stat) -> dict:
    space_name, arch = SHAPES[size]
    dim, depth = arch["embed_dim"], arch["depth"]
    uniform = len({*arch["num_heads"]}) == len({*arch["mlp_ratio"]}) == 1
    x = torch.randn(batch, 3, 224, 224)
    y = torch.randint(0, 1000, (batch,))
    out = {"arch": f"{json.dumps(arch)} in {space_name}"}
    for rel_pos in (True, False):
        torch.manual_seed(0)
        supernet = cream.supernet(get_space(space_name, rel_pos=rel_pos))
        supernet.set_arch(arch)
        models = {"supernet": supernet, "extracted": supernet.extract(arch)}
        if not rel_pos and uniform:
            models["timm"] = VisionTransformer(
                embed_dim=dim, depth=depth, num_heads=arch["num_heads"][0], mlp_ratio=arch["mlp_ratio"][0],
                global_pool="avg", fc_norm=False, norm_layer=partial(nn.LayerNorm, eps=1e-5))
        tag = "relpos" if rel_pos else "no_relpos"
        for mode in ("eval", "train"):
            for m in models.values():
                m.train(mode == "train")
            step = partial(eval_step, x=x) if mode == "eval" else partial(train_step, x=x, y=y)
            t = time_round_robin({k: partial(step, m) for k, m in models.items()}, repeats, stat=stat)
            res = {f"{k}_s": round(v, 4) for k, v in t.items()}
            res["supernet_vs_extracted"] = round(t["supernet"] / t["extracted"], 3)
            if "timm" in t:
                res["extracted_vs_timm"] = round(t["extracted"] / t["timm"], 3)
            out[f"{tag}_{mode}"] = res
    return out


def cost_throughput(n: int = 100_000) -> dict:
    torch.set_num_threads(1)
    space = get_space("autoformer-small")
    rng = random.Random(0)
    archs = [space.sample(rng) for _ in range(n)]
    t = time.perf_counter()
    for a in archs:
        space.cost(a)
    dt = time.perf_counter() - t
    t = time.perf_counter()
    for a in archs:
        space.cost(space.validate(a))
    dt_validated = time.perf_counter() - t
    return {"archs_per_s": round(n / dt), "archs_per_s_with_validate": round(n / dt_validated)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=25)
    parser.add_argument("--stat", choices=["median", "min"], default="median")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sizes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result = {
        "benchmark": "vit_elastic",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "batch": args.batch,
        "repeats": args.repeats,
        "timing": f"{args.stat} over round-robin repeats of process CPU seconds per step; "
                  "train = forward + cross-entropy + backward",
    }
    for size in args.sizes:
        result[size] = bench_shape(size, args.batch, args.repeats, {"median": statistics.median, "min": min}[args.stat])
    result["analytic_cost"] = cost_throughput()
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
