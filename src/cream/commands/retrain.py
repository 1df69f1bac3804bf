"""`cream retrain`: train one standalone model from a config, then test it."""

from __future__ import annotations

import argparse

from cream.commands import add_run_options, load_run_config, print_summary
from cream.spaces.base import read_arch_file


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("retrain", help="train one standalone model from a config",
                       description="Train one standalone model (any timm name, ours included) from a config, "
                                   "then test it.")
    add_run_options(p)
    p.add_argument("--arch", metavar="ARCH.json",
                   help="train this arch of the config's space (e.g. a search's arch.json, whose space, the one "
                        "the search ran in, then replaces the config's)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from cream.workflows.train_model import train_standalone

    base = arch_base(args.arch) if args.arch else None
    # the arch file's space replaces the config's: merged with it, it could name no space at all
    cfg, run = load_run_config(args, base=base, fields={"space": base["space"]} if base and "space" in base else None)
    summary = train_standalone(cfg, run, resume=bool(args.resume))
    print_summary(args, summary, run.path)
    return 0


def arch_base(path: str) -> dict:
    """Config entries from an arch file: the arch, and the space it names (a search's arch.json does)."""
    arch, doc = read_arch_file(path)
    base: dict = {"arch": arch}
    if isinstance(doc, dict) and isinstance(doc.get("space"), dict):
        base["space"] = doc["space"]
    return base
