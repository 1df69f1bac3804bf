"""`cream clip distill` and `cream clip zero-shot`: TinyCLIP on open_clip models (docs/tinyclip.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

from cream.commands import add_run_options, add_set_option, load_run_config, print_summary
from cream.errors import CreamError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("clip", help="TinyCLIP: distil a CLIP by affinity mimicking; zero-shot top-1",
                       description="CLIP distillation by affinity mimicking with weight inheritance (TinyCLIP), "
                                   "and zero-shot evaluation, on open_clip models.")
    clip = p.add_subparsers(dest="clip_command", required=True, metavar="SUBCOMMAND")
    d = clip.add_parser("distill", help="train a student CLIP from a teacher (or from scratch without one)",
                        description="Train the student of the config's clip section from its teacher by affinity "
                                    "mimicking (optionally inheriting the teacher's weights, optionally in stages), "
                                    "then report its zero-shot top-1 on the test split.")
    add_run_options(d)
    d.set_defaults(func=distill)
    z = clip.add_parser("zero-shot", help="zero-shot top-1 of a CLIP on a labelled image set",
                        description="Zero-shot top-1 of a finished `cream clip distill` run (RUN), or of an "
                                    "open_clip model (--model, with --weights), on the test split of the data "
                                    "the config names.")
    z.add_argument("target", nargs="?", help="a `cream clip distill` run directory")
    z.add_argument("--model", help="an open_clip model name, e.g. TinyCLIP-ViT-8M-16-Text-3M")
    z.add_argument("--weights", help="a .safetensors or torch weights file for --model")
    z.add_argument("--config", help="YAML config (its data section names the labelled set)")
    add_set_option(z)
    z.add_argument("--json", action="store_true", help="print one JSON object")
    z.set_defaults(func=zero_shot)


def distill(args: argparse.Namespace) -> int:
    from cream.clip.config import ClipRunConfig
    from cream.workflows.clip import check_config, distill_clip

    cfg, run = load_run_config(args, check=check_config, cls=ClipRunConfig)
    summary = distill_clip(cfg, run, resume=bool(args.resume))
    print_summary(args, summary, run.path)
    return 0


def zero_shot(args: argparse.Namespace) -> int:
    import dataclasses

    from cream.clip.config import ClipModelConfig, ClipRunConfig
    from cream.config import load_config
    from cream.workflows.clip import stage_models, zero_shot

    if bool(args.target) == bool(args.model):
        raise CreamError("give either a run directory or --model NAME (with --weights), not both or neither")
    if args.target:
        run = Path(args.target)
        if not (run / "config.yaml").is_file() or not (run / "model.safetensors").is_file():
            raise CreamError(f"'{run}' is not a finished `cream clip distill` run (no config.yaml and "
                             "model.safetensors)")
        cfg = load_config(ClipRunConfig, args.config or run / "config.yaml", args.overrides)
        model = dataclasses.replace(stage_models(cfg.clip)[-1], weights=str(run / "model.safetensors"))
    else:
        cfg = load_config(ClipRunConfig, args.config, args.overrides)
        model = ClipModelConfig(name=args.model, weights=args.weights or "")
    print_summary(args, zero_shot(cfg, model))
    return 0
