"""`cream nse`: NSE's rounds of search-space evolution (train, sample, Pareto front, evolve, repeat)."""

from __future__ import annotations

import argparse

from cream.commands import add_run_options, load_run_config, print_summary


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("nse", help="evolve an NSE search space over rounds (Neural Search-space Evolution)",
                       description="Run NSE on CONFIG's NSE space with strategy 'nse': each round trains a fresh "
                                   "supernet with learnable branch gates, samples archs in a cost band, keeps their "
                                   "Pareto front and evolves the space. Writes round-<r>/ folders, space.json and "
                                   "front.json.")
    add_run_options(p)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from cream.workflows.nse import run_nse

    cfg, run = load_run_config(args)
    print_summary(args, run_nse(cfg, run), run.path)
    return 0
