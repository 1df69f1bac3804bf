"""`cream distill-store --out OUT` (deprecated): `cream distill save-logits` with distill.store=OUT."""

from __future__ import annotations

import argparse
from pathlib import Path

from cream.commands import add_set_option, print_summary


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("distill-store", help="deprecated: use `cream distill save-logits`",
                       description="Run CONFIG's online teacher (distill.teacher: timm or supernet) over every "
                                   "sample key (image, augmentation seed) of train.epochs epochs of CONFIG's "
                                   "training stream, and write its top distill.top_k probabilities to --out. "
                                   "Rerun to resume. Deprecated: `cream distill save-logits CONFIG --set "
                                   "distill.store=OUT` does the same; then retrain with --set distill.store=OUT.")
    p.add_argument("config", nargs="?", help="YAML config file (the one the retrain will use)")
    p.add_argument("--out", required=True, help="the store folder (created, or resumed)")
    add_set_option(p)
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from cream.config import RunConfig, load_config
    from cream.workflows.distill import deprecated_store_command

    cfg = load_config(RunConfig, args.config, args.overrides)
    print_summary(args, deprecated_store_command(cfg, Path(args.out)))
    return 0
