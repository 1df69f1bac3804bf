"""`cream retrain`: train one standalone model from a config, then test it."""

from __future__ import annotations

import argparse

from cream.commands import add_run_options, load_run_config, print_summary


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("retrain", help="train one standalone model from a config",
                       description="Train one standalone model (any timm name, ours included) from a config, "
                                   "then test it.")
    add_run_options(p)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from cream.pipeline import train_standalone

    cfg, run = load_run_config(args)
    summary = train_standalone(cfg, run, resume=bool(args.resume))
    print_summary(args, summary, run.path)
    return 0
