"""MiniViT vs the network it multiplexes, CPU: params, MACs and a train step's time, plus the cost of
relation distillation (spec efficient_vit.md §3).

Pairs: Mini-Swin-T vs timm's Swin-T, Mini-DeiT-Ti vs timm's DeiT-Ti (class token, fused attention),
224 px, 1,000 classes. A train step is forward + cross-entropy + backward; steps are timed in process
CPU seconds on one thread, round-robin over the models (the machine is shared), median of `--repeats`.
The distillation rows time one Mini-Swin-T step against a Swin-T teacher: soft logits only, and soft
logits + attention and hidden relations at Mini-Swin-T's six layer pairs (hooks, relation matrices).

    PYTHONPATH=src python benchmarks/bench_minivit.py [--batch 2] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import timm
import torch

import cream
from cream.teachers.intermediates import record
from cream.teachers.losses import attention_relation_loss, hidden_relation_loss, soft_target_loss

PAIRS = [("mini_swin_tiny_patch4_window7_224", "swin_tiny_patch4_window7_224"),
         ("mini_deit_tiny_patch16_224", "deit_tiny_patch16_224")]
LAYERS = [11, 9, 7, 5, 3, 1]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    x, y = torch.randn(args.batch, 3, 224, 224), torch.randint(0, 1000, (args.batch,))
    models = {name: timm.create_model(name).train() for pair in PAIRS for name in pair}
    teacher = models["swin_tiny_patch4_window7_224"]

    def train(model: torch.nn.Module) -> None:
        model.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()

    def distill(student: torch.nn.Module, relations: bool) -> None:
        student.zero_grad(set_to_none=True)
        if not relations:
            with torch.no_grad():
                t = teacher(x)
            soft_target_loss(student(x), t, 1.0).backward()
            return
        with record(student, LAYERS) as s:
            out = student(x)
        with torch.no_grad(), record(teacher, LAYERS) as r:
            t = teacher(x)
        loss = soft_target_loss(out, t, 1.0) + attention_relation_loss(s.qkv, r.qkv) \
            + 0.1 * hidden_relation_loss(s.hidden, r.hidden)
        loss.backward()

    mini_swin = models[PAIRS[0][0]]
    steps = {name: (lambda m=m: train(m)) for name, m in models.items()}
    steps["distill: soft logits"] = lambda: distill(mini_swin, False)
    steps["distill: soft + relations"] = lambda: distill(mini_swin, True)
    times: dict[str, list[float]] = {name: [] for name in steps}
    for step in steps.values():  # warm-up
        step()
    for _ in range(args.repeats):
        for name, step in steps.items():
            start = time.process_time()
            step()
            times[name].append(time.process_time() - start)
    med = {name: statistics.median(t) for name, t in times.items()}
    rows = []
    for name, model in models.items():
        prof = cream.profile(model.eval(), input_size=(3, 224, 224))
        rows.append({"model": name, "params": prof["params"], "macs": prof["macs"],
                     "train_step_s": round(med[name], 3)})
    out = {"batch": args.batch, "repeats": args.repeats, "threads": 1,
           "cpu": platform.processor() or platform.machine(), "models": rows,
           "ratios": {mini: round(med[mini] / med[ref], 3) for mini, ref in PAIRS},
           "distill_step_s": {k: round(med[k], 3) for k in ("distill: soft logits", "distill: soft + relations")}}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
