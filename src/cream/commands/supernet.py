"""`cream supernet`: train a weight-sharing supernet."""

from __future__ import annotations

import argparse

from cream.commands import add_run_options, load_run_config, print_summary


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("supernet", help="train a weight-sharing supernet of a search space",
                       description="Train the supernet of CONFIG's space with its strategy (uniform single-path "
                                   "sampling, Cream's prioritized paths, first-order DARTS, ...). "
                                   "Writes supernet.safetensors.")
    add_run_options(p)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from cream.workflows.supernet import train_supernet

    cfg, run = load_run_config(args)
    print_summary(args, train_supernet(cfg, run, resume=bool(args.resume)), run.path)
    return 0
