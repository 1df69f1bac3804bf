"""`cream search`: search a trained supernet's space with inherited weights."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from cream.commands import add_run_options, new_run_dir, print_summary, resumed_config
from cream.errors import CreamError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("search", help="search a supernet's space with inherited weights",
                       description="Search the space of a `cream supernet` run under parameter / multiply-add "
                                   "limits, scoring each arch with inherited weights on the held-out validation "
                                   "split. Space and data come from the supernet run; CONFIG and --set override "
                                   "them (typically the `search` section). Writes arch.json, search.json, "
                                   "search.png; --resume continues a search.")
    add_run_options(p)
    p.add_argument("--supernet", metavar="RUN", help="the `cream supernet` run directory (optional when CONFIG's "
                   "space is a timm model, space.from_timm: the search then scores its converted supernet as is)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from cream.config import RunConfig, load_config, read_yaml, to_dict
    from cream.run_dir import RunDir
    from cream.workflows.search import search_supernet, search_timm
    from cream.workflows.supernet import TIMM_KEY

    if args.resume:
        run = RunDir.create(args.resume, "search", resume=True)
        cfg = resumed_config(run, args.overrides)
        supernet = Path(cfg.init)
    elif not args.supernet:  # a timm model converted as it is: the search run holds its own supernet
        cfg = load_config(RunConfig, args.config, args.overrides)
        if TIMM_KEY not in cfg.space:
            raise CreamError("cream search needs --supernet RUN (a `cream supernet` run directory), or a CONFIG "
                             f"whose space is a timm model (space.{TIMM_KEY}: NAME)")
        run = new_run_dir(args.out, "search", to_dict(cfg))
        cfg = dataclasses.replace(cfg, init=str(run.path))
        run.write_yaml("config.yaml", to_dict(cfg))  # a resumed search finds its supernet in `init`
        supernet = run.path
    else:
        supernet = Path(args.supernet)
        if not (supernet / "config.yaml").is_file():
            raise CreamError(f"'{supernet}' is not a run directory (no config.yaml)")
        base = read_yaml(supernet / "config.yaml")
        base["init"] = str(supernet)
        cfg = load_config(RunConfig, args.config, args.overrides, base=base)
        run = new_run_dir(args.out, "search", to_dict(cfg))
    if supernet.resolve() == run.path.resolve():
        summary = search_timm(cfg, run, resume=bool(args.resume))
    else:
        summary = search_supernet(cfg, supernet, run, resume=bool(args.resume))
    print_summary(args, summary, run.path)
    return 0
