"""Automatic inheritance at a real size: ViT-B-32 (random init) pruned to each target sparsity.

Per target: the gates are trained by the Lagrangian against a stand-in task loss (a random utility of
keeping each gate, as in tests/test_clip_l0.py) from log_alpha 3 for --steps Adam steps; then the
deterministic masks are taken and the model is pruned. Reported: the expected sparsity before pruning,
the counted parameters of the pruned model against the target, the max |masked - pruned| of the
image and text features at 224 px, and the time of one masked forward over one plain forward of the
same (unpruned) model and of the pruned one (side by side, median of --repeats).

    PYTHONPATH=src python benchmarks/clip_prune.py [--targets 0.25 0.5 0.75] [--steps 300]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import open_clip
import torch

from cream.clip.l0 import L0Masks, tower_params


def _timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _one(args: argparse.Namespace, target: float, image: torch.Tensor, text: torch.Tensor) -> dict:
    torch.manual_seed(0)
    model = open_clip.create_model(args.model, pretrained=None).eval()
    l0 = L0Masks(model, target, warmup_steps=args.steps // 2, init_log_alpha=3.0)
    full = sum(tower_params(model, t) for t in l0.towers)
    g = torch.Generator().manual_seed(0)
    utility = l0.per_gate(lambda la: 10 * torch.rand(la.shape, generator=g))
    opt = torch.optim.Adam(l0.param_groups(lr=0.05, lambda_lr=0.05))
    for step in range(args.steps):
        opt.zero_grad()
        scores = l0.scores()
        keep = sum((utility[n][k] * scores[n][k]).mean() for n in scores for k in scores[n])
        (l0.lagrangian(step) - keep).backward()
        opt.step()
    expected = l0.expected_sparsity()[0].item()
    masks = l0.deterministic()

    def masked():
        return l0.call(model, masks, lambda m: (m.encode_image(image), m.encode_text(text)))

    def plain():
        return model.encode_image(image), model.encode_text(text)

    with torch.no_grad():
        masked_s, plain_s = _timed(masked, args.repeats), _timed(plain, args.repeats)
        ref = masked()
        l0.prune(model)
        pruned_s = _timed(plain, args.repeats)
        out = plain()
    kept = sum(tower_params(model, t) for t in l0.towers)
    return {
        "target_sparsity": target, "expected_sparsity": round(expected, 4),
        "counted_params_full": full, "counted_params_pruned": kept,
        "pruned_vs_target_rel": round(kept / ((1 - target) * full) - 1, 4),
        "max_abs_diff_image": float((out[0] - ref[0]).abs().max()),
        "max_abs_diff_text": float((out[1] - ref[1]).abs().max()),
        "masked_over_plain_time": round(masked_s / plain_s, 3),
        "pruned_over_plain_time": round(pruned_s / plain_s, 3),
        "image_hidden": model.visual.transformer.resblocks[0].ln_1.weight.shape[0],
        "text_hidden": model.transformer.resblocks[0].ln_1.weight.shape[0],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="ViT-B-32")
    ap.add_argument("--targets", type=float, nargs="+", default=[0.25, 0.5, 0.75])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(2)
    image = torch.randn(args.batch, 3, 224, 224)
    text = open_clip.get_tokenizer(args.model)(["a photo of a cat"] * args.batch)
    rows = []
    for target in args.targets:
        rows.append(_one(args, target, image, text))
        print(json.dumps(rows[-1]), flush=True)
    print(json.dumps({"model": args.model, "steps": args.steps, "batch": args.batch, "rows": rows}))


if __name__ == "__main__":
    main()
