"""Speed of the Swin (S3) supernet with an arch set vs its extracted `SwinTransformer` vs timm's own model, CPU.

Shapes, 224 px: `s3t`, the released S3-T arch in `autoformerv2-tiny` (its widths are the supernet's,
only depth and windows are cut), compared with `timm.create_model("swin_s3_tiny_224")`; `narrow`,
an arch of the same space with every width sliced (embed 64/128/320/640, heads 2/4/10/20, MLP
ratio 3.5, windows 14/7/7/7), compared with timm's `SwinTransformer` built with the same arguments
by timm's own constructor. Eval forward and a train step (forward, cross-entropy, backward; no
optimizer) are timed round-robin in one process in process CPU seconds (the machine is shared),
median over repeats, one thread by default. Goals: supernet / extracted ≤ 1.05 eval and ≤ 1.08
train; extracted / timm ≤ 1.02.

    PYTHONPATH=src python benchmarks/swin_supernet.py [--batch 8] [--repeats 7] [--shapes s3t narrow] [--modes eval]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
from functools import partial

import timm
import torch
from common import eval_step, time_round_robin, train_step
from timm.models.swin_transformer import SwinTransformer

from cream.models.swin import swin_kwargs
from cream.spaces import get_space
from cream.spaces.swin import released_archs
from cream.supernets import build_supernet

NARROW = {"depth": [2, 2, 6, 2], "embed_dim": [64, 128, 320, 640], "num_heads": [2, 4, 10, 20],
          "mlp_ratio": [3.5] * 4, "window_size": [14, 7, 7, 7]}
SHAPES = {"s3t": released_archs()["tiny"], "narrow": NARROW}



def bench_shape(shape: str, batch: int, repeats: int, stat, modes: list[str]) -> dict:
    space, arch = get_space("autoformerv2-tiny"), SHAPES[shape]
    torch.manual_seed(0)
    supernet = build_supernet(space)
    supernet.set_arch(arch)
    timm_model = (timm.create_model("swin_s3_tiny_224") if shape == "s3t"
                  else SwinTransformer(**swin_kwargs(space, space.validate(arch)), drop_path_rate=0.0))
    timm_model.drop_path_rate = 0.0
    models = {"supernet": supernet, "extracted": supernet.extract(arch), "timm": timm_model}
    for m in models.values():  # no stochastic depth anywhere (timm's swin_s3 default is 0.1)
        for mod in m.modules():
            if isinstance(mod, timm.layers.DropPath):
                mod.drop_prob = 0.0
    x, y = torch.randn(batch, 3, 224, 224), torch.randint(0, 1000, (batch,))
    out = {"arch": json.dumps(arch)}
    for mode in modes:
        for m in models.values():
            m.train(mode == "train")
        step = partial(eval_step, x=x) if mode == "eval" else partial(train_step, x=x, y=y)
        t = time_round_robin({k: partial(step, m) for k, m in models.items()}, repeats, stat=stat)
        out[mode] = {**{f"{k}_s": round(v, 4) for k, v in t.items()},
                     "supernet_vs_extracted": round(t["supernet"] / t["extracted"], 3),
                     "extracted_vs_timm": round(t["extracted"] / t["timm"], 3)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--stat", choices=["median", "min"], default="median")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--modes", nargs="+", default=["eval", "train"], choices=["eval", "train"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result = {"benchmark": "swin_supernet", "torch": torch.__version__, "timm": timm.__version__,
              "threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
              "batch": args.batch, "repeats": args.repeats,
              "timing": f"{args.stat} over round-robin repeats of process CPU seconds per step; "
                        "train = forward + cross-entropy + backward"}
    stat = {"median": statistics.median, "min": min}[args.stat]
    for shape in args.shapes:
        result[shape] = bench_shape(shape, args.batch, args.repeats, stat, args.modes)
        print(json.dumps({shape: result[shape]}), flush=True)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
