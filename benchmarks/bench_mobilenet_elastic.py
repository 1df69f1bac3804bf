"""MobileNet choice-block supernet vs its extracted model, and BN-recalibrated candidate scoring.

Prints one JSON object: for each space, eval-forward and train-step times of the supernet (path
set) and of the extracted timm model for the same arch, measured interleaved in this process
(best of N calls, alternating; ratio = supernet / extracted, goal <= 1.05), and how many
candidates per minute can be scored with inherited weights (BN recalibration on `calib_images`,
then top-1 on `eval_images`), with the overhead over the same forwards without recalibration.

    PYTHONPATH=src python benchmarks/bench_mobilenet_elastic.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import time

import torch

from cream.nn.batchnorm import bn_recalibrated
from cream.spaces import get_space
from cream.supernets import build_supernet

CASES = {
    # name: (space spec, batch size)
    "cifar-8layer@32": ("configs/spos/cifar-8layer.yaml", 32),
    "cream[0,600]@128": ({"preset": "cream", "flops_max": 600, "input_size": 128}, 8),
}


def _time(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _step_fn(model, x, y, opt):
    def step():
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return step


def bench_paths(spec, batch: int, reps: int) -> dict:
    space = get_space(spec)
    size = space.config.input_size
    torch.manual_seed(0)
    net = build_supernet(space)
    arch = space.sample(random.Random(0))
    net.set_arch(arch)
    child = net.extract(arch)
    x = torch.randn(batch, 3, size, size)
    y = torch.randint(0, space.config.num_classes, (batch,))
    models = {"supernet": net, "extracted": child}
    steps = {k: _step_fn(m, x, y, torch.optim.SGD(m.parameters(), lr=1e-4)) for k, m in models.items()}
    times: dict[str, dict[str, list[float]]] = {kind: {k: [] for k in models} for kind in ("eval", "train")}
    order = list(models.items())
    for _ in range(reps):  # alternate call by call (and who goes first), so load changes hit both alike
        order.reverse()
        for name, m in order:
            m.eval()
            with torch.no_grad():
                times["eval"][name].append(_time(lambda m=m: m(x)))
            m.train()
            times["train"][name].append(_time(steps[name]))
    out = {"batch": batch, "input_size": size, "arch": arch, "cost": space.cost(arch)}
    for kind, d in times.items():
        sup, ext = min(d["supernet"][1:]), min(d["extracted"][1:])  # first call: warm-up
        out[kind] = {"supernet_ms": round(sup * 1e3, 2), "extracted_ms": round(ext * 1e3, 2),
                     "ratio": round(sup / ext, 3)}
    return out


def bench_recal(candidates: int, calib_images: int, eval_images: int, batch: int) -> dict:
    """Score candidates with inherited weights; `plain` = the same forwards without recalibration."""
    space = get_space("configs/spos/cifar-8layer.yaml")
    torch.manual_seed(0)
    net = build_supernet(space)
    g = torch.Generator().manual_seed(0)
    calib = [torch.randn(batch, 3, 32, 32, generator=g) for _ in range(-(-calib_images // batch))]
    val = [(torch.randn(batch, 3, 32, 32, generator=g), torch.randint(0, 10, (batch,), generator=g))
           for _ in range(-(-eval_images // batch))]
    rng = random.Random(0)
    archs = [space.sample(rng) for _ in range(candidates + 1)]

    def accuracy() -> float:
        net.eval()
        return sum((net(x).argmax(1) == y).sum().item() for x, y in val) / (len(val) * batch)

    def score(arch) -> float:
        with bn_recalibrated(net, calib, calib_images, arch=arch), torch.no_grad():
            return accuracy()

    @torch.no_grad()
    def plain(arch) -> float:
        net.set_arch(arch)
        for x in calib:
            net(x)
        return accuracy()

    score(archs[0])  # warm-up
    t_score = t_plain = 0.0
    for a in archs[1:]:
        t_score += _time(lambda a=a: score(a))
        t_plain += _time(lambda a=a: plain(a))
    return {"space": "cifar-8layer@32", "candidates": candidates, "calib_images": calib_images,
            "eval_images": eval_images, "batch": batch, "seconds": round(t_score, 2),
            "candidates_per_minute": round(60 * candidates / t_score, 1),
            "overhead_vs_plain_forwards": round(t_score / t_plain - 1, 3)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke run)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (1 default: timings on a shared machine are far steadier)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    reps, cands = (4, 3) if args.quick else (15, 20)
    result = {
        "benchmark": "mobilenet_elastic",
        "machine": f"{platform.machine()} CPU, torch {torch.__version__}, {torch.get_num_threads()} threads",
        "paths": {name: bench_paths(spec, batch, reps) for name, (spec, batch) in CASES.items()},
        "bn_recal_eval": bench_recal(cands, calib_images=128, eval_images=256, batch=64),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
