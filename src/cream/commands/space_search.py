"""`cream space-search`: evolve the search space (AutoFormerV2/S3), then search archs in the evolved space."""

from __future__ import annotations

import argparse

from cream.commands import add_run_options, load_run_config, print_summary


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("space-search", help="evolve the search space (S3), then search archs in it",
                       description="For space_search.steps steps: train the supernet of the current space, "
                                   "measure E (random archs) and T (top archs of a short evolution) with inherited "
                                   "weights, fit each dimension's trend and move its range. Then train the evolved "
                                   "space's supernet and search it under search.limits. Writes steps/<k>/ "
                                   "(space.json, et.json, trend plots) and final/; --resume continues a killed run.")
    add_run_options(p)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from cream.workflows.space_search import check_space_search, space_search

    cfg, run = load_run_config(args, check=check_space_search)
    print_summary(args, space_search(cfg, run), run.path)
    return 0
