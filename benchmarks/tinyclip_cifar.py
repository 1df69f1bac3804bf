"""TinyCLIP at toy scale on the shared CIFAR-10 images (issue 16, acceptance 5): does inheritance help?

Protocol (CPU-sized; every setting is printed in the JSON):
1. Data: the shared CIFAR-10 JPEG archive, `--train-per-class` train and `--test-per-class` test images per
   class at 32 px; each training image is paired with the caption "a photo of a {class}.".
2. Teacher: a small CLIP (ViT image tower, width 64, 4 layers, patch 4; text width 64, 4 layers, context 16;
   4 heads of 16) trained from scratch with the hard CLIP loss and a learned logit scale, `--teacher-epochs`.
3. Students, half the teacher in width and depth (width 32, 2 layers, 2 heads of 16, both towers), each with
   `--seeds` seeds and the same `--student-epochs`, optimizer and data order per seed:
   (a) `scratch`: random init, hard CLIP loss, learned logit scale;
   (b) `manual`: manual inheritance from the teacher (layers 0 and 2, leading slices), then affinity
       mimicking against it with the logit scale fixed at 50 (the paper's setting);
   (b') `manual_own_scale`: as (b) with each model's own logit scale (the teacher's learned one);
   (c) `auto`: automatic inheritance: the teacher under L0 masks for `--prune-epochs` (affinity mimicking +
       Lagrangian, target = the student's parameter count without the token embedding), pruned, then affinity
       mimicking for `--student-epochs`, logit scale 50. It keeps 4 layers (TinyCLIP has no layer gates), so it
       is narrower than (a)/(b) rather than shallower, and it trains `--prune-epochs` more.
4. Score: zero-shot top-1 on the test images (prompt "a photo of a {class}."), mean and per seed.

    PYTHONPATH=src python benchmarks/tinyclip_cifar.py [--train-per-class 500] [--seeds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from common import CIFAR10_ARCHIVE

from cream.clip.config import ClipRunConfig
from cream.clip.l0 import tower_params
from cream.clip.models import build_clip
from cream.clip.prune import towers
from cream.config import load_config
from cream.errors import ConfigError
from cream.run_dir import RunDir
from cream.workflows.clip import check_config, distill_clip


def clip_cfg(width: int, layers: int) -> dict:
    return {"embed_dim": 64, "vision_cfg": {"image_size": 32, "layers": layers, "width": width, "patch_size": 4,
                                            "head_width": 16},
            "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": width, "heads": width // 16,
                         "layers": layers}}


TEACHER, STUDENT = clip_cfg(64, 4), clip_cfg(32, 2)


def base_sets(args: argparse.Namespace, epochs: int, seed: int) -> list[str]:
    return ["data.name=imagefolder", f"data.root={args.archive}", "data.image_size=32", "data.val_fraction=0",
            f"data.train_per_class={args.train_per_class}", f"data.test_per_class={args.test_per_class}",
            f"data.batch_size={args.batch_size}", "data.hflip=0.5", "data.train_crop=pad",
            f"train.epochs={epochs}", f"train.seed={seed}", f"train.threads={args.threads}", "train.log_every=50",
            f"optim.lr={args.lr}", "optim.weight_decay=0.1", "optim.warmup_epochs=1", "optim.min_lr=1e-5"]


def run(sets: list[str], out: Path) -> dict:
    cfg = load_config(ClipRunConfig, None, sets)
    check_config(cfg)
    return distill_clip(cfg, RunDir.create(str(out), "clip"))


def arm_scratch(args, seed: int, teacher: Path, out: Path) -> dict:
    return run([*base_sets(args, args.student_epochs, seed), f"clip.student.cfg={STUDENT}",
                "clip.loss.logit_scale=0"], out)


def arm_manual(args, seed: int, teacher: Path, out: Path) -> dict:
    return run([*base_sets(args, args.student_epochs, seed), f"clip.student.cfg={STUDENT}",
                f"clip.teacher.cfg={TEACHER}", f"clip.teacher.weights={teacher}", "clip.inherit.mode=manual",
                "clip.loss.logit_scale=50"], out)


def arm_manual_own_scale(args, seed: int, teacher: Path, out: Path) -> dict:
    """(b'): as (b), but each model's own logit scale (the teacher's learned one; the student's learned)."""
    return run([*base_sets(args, args.student_epochs, seed), f"clip.student.cfg={STUDENT}",
                f"clip.teacher.cfg={TEACHER}", f"clip.teacher.weights={teacher}", "clip.inherit.mode=manual",
                "clip.loss.logit_scale=0"], out)


def counted(cfg: dict) -> int:
    """Parameters of both towers without the token-embedding table (the size automatic inheritance targets)."""
    model = build_clip(cfg)
    return sum(tower_params(model, t) for t in towers(model))


def arm_auto(args, seed: int, teacher: Path, out: Path) -> dict:
    """(c): the teacher pruned by L0 masks to the student's counted size in one stage: a mask phase of
    --prune-epochs (gates from log_alpha 3 at --auto-lr, multipliers at --auto-lambda-lr, so that they move within
    a few epochs; target warm-up over half of it), then affinity mimicking for --student-epochs, as (b)."""
    steps_per_epoch = max(1, 10 * args.train_per_class // args.batch_size)
    prune_step = args.prune_epochs * steps_per_epoch
    kwargs = {"sparsity": round(1 - counted(STUDENT) / counted(TEACHER), 4), "prune_step": prune_step,
              "warmup_steps": prune_step // 2, "lr": args.auto_lr, "lambda_lr": args.auto_lambda_lr,
              "init_log_alpha": 3.0, "two_sided": args.auto_two_sided}
    return run([*base_sets(args, args.student_epochs, seed), f"clip.teacher.cfg={TEACHER}",
                f"clip.teacher.weights={teacher}", "clip.inherit.mode=auto",
                f"clip.inherit.kwargs={json.dumps(kwargs)}", "clip.loss.logit_scale=50"], out)


ARMS = {"scratch": arm_scratch, "manual": arm_manual, "manual_own_scale": arm_manual_own_scale, "auto": arm_auto}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--archive", default=str(CIFAR10_ARCHIVE))
    p.add_argument("--train-per-class", type=int, default=500)
    p.add_argument("--test-per-class", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--teacher-epochs", type=int, default=15)
    p.add_argument("--student-epochs", type=int, default=8)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--prune-epochs", type=int, default=3, help="auto: mask-phase epochs before pruning")
    p.add_argument("--auto-lr", type=float, default=0.2, help="auto: log_alpha lr (the paper's 0.02 is for 1000s "
                                                                "of steps)")
    p.add_argument("--auto-lambda-lr", type=float, default=1.0, help="auto: the multipliers' ascent lr")
    p.add_argument("--auto-two-sided", action="store_true", help="auto: CoFi's two-sided Lagrangian (pulls an "
                                                                   "overshoot of the target back)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--arms", default="scratch,manual,manual_own_scale,auto")
    p.add_argument("--out", default="", help="keep the runs here (default: a temporary folder)")
    p.add_argument("--teacher", default="", help="a finished teacher run of this script to reuse (same data flags)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    root = Path(args.out or tempfile.mkdtemp(prefix="tinyclip-"))
    start = time.perf_counter()
    teacher_dir = Path(args.teacher) if args.teacher else root / "teacher"
    if args.teacher:
        teacher = json.loads((teacher_dir / "summary.json").read_text())
    else:
        teacher = run([*base_sets(args, args.teacher_epochs, 0), f"clip.student.cfg={TEACHER}",
                       "clip.loss.logit_scale=0"], teacher_dir)
    result: dict = {"settings": {k: v for k, v in vars(args).items() if k != "out"}, "teacher_cfg": TEACHER,
                    "student_cfg": STUDENT, "teacher": {"top1": teacher["test_zero_shot_top1"],
                                                        "params": teacher["student_params"],
                                                        "wall_s": teacher["wall_s"]}}
    for arm in args.arms.split(","):
        scores, walls = [], []
        for seed in range(args.seeds):
            try:
                s = ARMS[arm](args, seed, teacher_dir, root / f"{arm}-{seed}")
            except ConfigError as e:
                result[arm] = {"skipped": str(e)}
                break
            scores.append(s["test_zero_shot_top1"])
            walls.append(s["wall_s"])
            result[arm] = {"params": s["student_params"],
                           **({"counted_params": s["counted_params"]} if "counted_params" in s else {})}
        if scores:
            result[arm].update({"top1_mean": statistics.mean(scores), "top1_std": statistics.pstdev(scores),
                                "top1": scores, "wall_s_mean": statistics.mean(walls)})
        print(json.dumps({arm: result[arm]}), flush=True)
    result["wall_s"] = round(time.perf_counter() - start, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
