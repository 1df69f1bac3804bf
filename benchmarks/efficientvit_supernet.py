"""EfficientViT-MSRA space: the published M0-M5 counted, and the supernet's cost of running an arch, CPU.

Counts: for each `configs/efficientvit/mN.json`, the analytic params and MACs of the space, what timm's
`efficientvit_mN` measures (params, `torch.utils.flop_counter` MACs) and the README's figures.
Speed: the `efficientvit-msra` supernet with an arch set vs its extracted `EfficientVitMsra` vs timm's own
`efficientvit_mN`, eval forward and a train step (forward, cross-entropy, backward), timed round-robin in
one process in process CPU seconds (the machine is shared), median over repeats, one thread. M0 and M4
use slices of almost every super tensor (`efficientvit-msra` is wider and deeper); the supernet's extra
time is the per-module work of the elastic ops (a few hundred small modules), which weighs most on the
smallest model.

    PYTHONPATH=src python benchmarks/efficientvit_supernet.py [--batch 8] [--repeats 5] [--archs m0 m4] [--size 224]
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

from cream.cost import count_params, measure_macs
from cream.spaces import get_space
from cream.spaces.efficientvit import PUBLISHED, PUBLISHED_COSTS
from cream.supernets import build_supernet


def counts() -> dict:
    space = get_space("efficientvit-msra")
    out = {}
    for key, arch in PUBLISHED.items():
        model = timm.create_model(f"efficientvit_{key}")
        params, macs = PUBLISHED_COSTS[key]
        out[key] = {"analytic": space.cost(arch), "timm_params": count_params(model),
                    "timm_macs": measure_macs(model, (3, 224, 224)), "published_params_m": params,
                    "published_macs_m": macs}
    return out


def speed(key: str, size: int, batch: int, repeats: int, modes: list[str]) -> dict:
    space = get_space("efficientvit-msra", img_size=size)
    torch.manual_seed(0)
    supernet = build_supernet(space)
    supernet.set_arch(PUBLISHED[key])
    models = {"supernet": supernet, "extracted": supernet.extract(PUBLISHED[key]),
              "timm": timm.create_model(f"efficientvit_{key}", img_size=size)}
    x, y = torch.randn(batch, 3, size, size), torch.randint(0, 1000, (batch,))
    out = {}
    for mode in modes:
        for m in models.values():
            m.train(mode == "train")
        step = partial(eval_step, x=x) if mode == "eval" else partial(train_step, x=x, y=y)
        t = time_round_robin({k: partial(step, m) for k, m in models.items()}, repeats, stat=statistics.median)
        out[mode] = {**{f"{k}_s": round(v, 4) for k, v in t.items()},
                     "supernet_vs_extracted": round(t["supernet"] / t["extracted"], 3),
                     "extracted_vs_timm": round(t["extracted"] / t["timm"], 3)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--archs", nargs="+", default=["m0", "m4"], choices=sorted(PUBLISHED))
    parser.add_argument("--modes", nargs="+", default=["eval", "train"], choices=["eval", "train"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    result = {"benchmark": "efficientvit_supernet", "torch": torch.__version__, "timm": timm.__version__,
              "machine": platform.processor() or platform.machine(), "batch": args.batch, "size": args.size,
              "repeats": args.repeats, "timing": "median over round-robin repeats of process CPU seconds per step",
              "counts": counts()}
    print(json.dumps({"counts": result["counts"]}), flush=True)
    for key in args.archs:
        result[key] = speed(key, args.size, args.batch, args.repeats, args.modes)
        print(json.dumps({key: result[key]}), flush=True)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
