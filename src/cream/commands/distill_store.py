"""`cream distill-store`: run a teacher once and store its outputs for a distillation run to replay."""

from __future__ import annotations

import argparse
from pathlib import Path

from cream.commands import add_set_option, print_summary


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("distill-store", help="write a teacher's sparse logits for a retrain to replay",
                       description="Run CONFIG's online teacher (distill.teacher: timm or supernet) over every "
                                   "sample key (image, augmentation seed) of train.epochs epochs of CONFIG's "
                                   "training stream, and write its top distill.top_k probabilities to --out. "
                                   "Rerun to resume. Then retrain with --set distill.teacher.kind=store "
                                   "--set distill.teacher.path=OUT.")
    p.add_argument("config", nargs="?", help="YAML config file (the one the retrain will use)")
    p.add_argument("--out", required=True, help="the store folder (created, or resumed)")
    add_set_option(p)
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from cream.config import RunConfig, load_config
    from cream.workflows.distill import write_logit_store

    cfg = load_config(RunConfig, args.config, args.overrides)
    print_summary(args, write_logit_store(cfg, Path(args.out)))
    return 0
