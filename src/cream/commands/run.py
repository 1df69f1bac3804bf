"""`cream run`: the main job — the whole one-shot pipeline on the embedded default data."""

from __future__ import annotations

import argparse
from pathlib import Path

from cream.commands import add_run_options, load_run_config, print_summary

DEFAULT = Path(__file__).resolve().parents[1] / "presets" / "run.yaml"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="the whole pipeline (supernet → search → retrain → test) on the embedded data",
                       description="Run the main job. Without CONFIG: AutoFormer's pipeline on a tiny ViT space "
                                   f"and the embedded digits data ({DEFAULT.name} in cream/presets). A CONFIG with "
                                   "a `space` runs supernet → search → retrain → test; one without trains and "
                                   "tests `model.name`.")
    add_run_options(p)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from cream.config import read_yaml
    from cream.workflows.pipeline import run_pipeline
    from cream.workflows.train_model import train_standalone

    base = read_yaml(DEFAULT) if not args.config and not args.resume else None
    cfg, run = load_run_config(args, base=base)
    if cfg.space:
        summary = run_pipeline(cfg, run)
    else:
        summary = train_standalone(cfg, run, resume=bool(args.resume))
    print_summary(args, summary, run.path)
    return 0
