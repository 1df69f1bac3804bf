"""`cream run`: the main job on the embedded default data."""

from __future__ import annotations

import argparse

from cream.commands import add_run_options, load_run_config, print_summary


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="the main job on the embedded default data (or a config)",
                       description="Run the main job: train and test a model on the embedded digits data "
                                   "(or the data and model of CONFIG), and print a summary.")
    add_run_options(p)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from cream.pipeline import train_standalone

    cfg, run = load_run_config(args)
    summary = train_standalone(cfg, run, resume=bool(args.resume))
    print_summary(args, summary, run.path)
    return 0
