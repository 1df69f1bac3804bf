"""MobileNet choice-block supernet vs its extracted model, and BN-recalibrated candidate scoring.

Prints one JSON object: for each space, eval-forward and train-step times of the supernet (path
set) and of the extracted timm model for the same arch, measured interleaved in this process
(ratio = supernet / extracted, goal <= 1.05), and how many candidates per minute can be scored
with inherited weights (BN recalibration on `calib` images, then top-1 on `eval` images).

    PYTHONPATH=src python benchmarks/bench_mobilenet_elastic.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import time

import torch

from cream.registry import build_supernet, get_space
from cream.search.bn_recal import bn_recalibrated

CASES = {
    # name: (space spec, batch size)
    "cifar-8layer@32": ("configs/spos/cifar-8layer.yaml", 32),
    "cream[0,600]@128": ({"preset": "cream", "flops_max": 600, "input_size": 128}, 8),
}


def _time(fn, reps: int) -> float:
    """Best of `reps` runs (like timeit): the least disturbed by other load on the machine."""
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def _step_fn(model, x, y, opt):
    def step():
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return step


def bench_paths(spec, batch: int, reps: int, rounds: int) -> dict:
    space = get_space(spec)
    size = space.config.input_size
    torch.manual_seed(0)
    net = build_supernet(space)
    arch = space.sample(random.Random(0))
    net.set_arch(arch)
    child = net.extract(arch)
    x = torch.randn(batch, 3, size, size)
    y = torch.randint(0, space.config.num_classes, (batch,))
    res = {"eval": {"supernet": [], "extracted": []}, "train": {"supernet": [], "extracted": []}}
    steps = {name: _step_fn(m, x, y, torch.optim.SGD(m.parameters(), lr=1e-4))
             for name, m in (("supernet", net), ("extracted", child))}
    for _ in range(rounds):  # interleave so load changes hit both alike
        for name, m in (("supernet", net), ("extracted", child)):
            m.eval()
            with torch.no_grad():
                m(x)
                res["eval"][name].append(_time(lambda m=m: m(x), reps))
            m.train()
            steps[name]()
            res["train"][name].append(_time(steps[name], reps))
    out = {"batch": batch, "input_size": size, "arch": arch, "cost": space.cost(arch)}
    for kind, d in res.items():
        sup, ext = min(d["supernet"]), min(d["extracted"])
        out[kind] = {"supernet_ms": round(sup * 1e3, 2), "extracted_ms": round(ext * 1e3, 2),
                     "ratio": round(sup / ext, 3)}
    return out


def bench_recal(candidates: int, calib_images: int, eval_images: int, batch: int) -> dict:
    space = get_space("configs/spos/cifar-8layer.yaml")
    torch.manual_seed(0)
    net = build_supernet(space)
    g = torch.Generator().manual_seed(0)
    calib = [torch.randn(batch, 3, 32, 32, generator=g) for _ in range(-(-calib_images // batch))]
    val = [(torch.randn(batch, 3, 32, 32, generator=g), torch.randint(0, 10, (batch,), generator=g))
           for _ in range(-(-eval_images // batch))]
    rng = random.Random(0)
    archs = [space.sample(rng) for _ in range(candidates + 1)]

    def score(arch) -> float:
        with bn_recalibrated(net, calib, calib_images, arch=arch), torch.no_grad():
            net.eval()
            correct = sum((net(x).argmax(1) == y).sum().item() for x, y in val)
        return correct / (len(val) * batch)

    score(archs[0])  # warm-up
    t = time.perf_counter()
    for a in archs[1:]:
        score(a)
    elapsed = time.perf_counter() - t
    return {"space": "cifar-8layer@32", "candidates": candidates, "calib_images": calib_images,
            "eval_images": eval_images, "batch": batch, "seconds": round(elapsed, 2),
            "candidates_per_minute": round(60 * candidates / elapsed, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke run)")
    args = p.parse_args()
    reps, rounds, cands = (2, 2, 3) if args.quick else (5, 3, 10)
    result = {
        "benchmark": "mobilenet_elastic",
        "machine": f"{platform.machine()} CPU, torch {torch.__version__}, {torch.get_num_threads()} threads",
        "paths": {name: bench_paths(spec, batch, reps, rounds) for name, (spec, batch) in CASES.items()},
        "bn_recal_eval": bench_recal(cands, calib_images=256, eval_images=512, batch=64),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
