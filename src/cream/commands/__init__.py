"""One module per `cream` subcommand: each has `register(subparsers)` and a handler.

Shared argument helpers live here so that every command reads the same way.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

COMMANDS = ["run", "supernet", "search", "retrain", "distill_store", "test", "export", "convert", "profile", "bench",
            "rank"]


def add_run_options(p: argparse.ArgumentParser, config: bool = True) -> None:
    """CONFIG, --out, --set, --resume and --json: the options every training command shares."""
    if config:
        p.add_argument("config", nargs="?", help="YAML config file (default: the embedded defaults)")
    p.add_argument("--out", help="run directory (default: runs/<command>-<time>)")
    add_set_option(p)
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its last checkpoint")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")


def add_set_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value by dotted key, e.g. --set optim.lr=0.001 (repeatable)")


def load_run_config(args: argparse.Namespace, base: dict | None = None) -> tuple[Any, Any]:
    """(config, run dir) of a training command: a new run, or the run named by --resume."""
    from cream.config import RunConfig, load_config
    from cream.errors import CreamError
    from cream.run_dir import RunDir

    if args.resume:
        if args.config:
            raise CreamError("give either a CONFIG or --resume DIR (a resumed run uses the config it saved)")
        run = RunDir.create(args.resume, args.command, resume=True)
        return load_config(RunConfig, run.file("config.yaml"), args.overrides), run
    cfg = load_config(RunConfig, args.config, args.overrides, base=base)
    return cfg, RunDir.create(args.out, args.command)


def is_main_process() -> bool:
    """Rank 0 of torchrun's processes, or the only process: the one that prints."""
    import os

    return int(os.environ.get("RANK", "0")) == 0


def print_summary(args: argparse.Namespace, summary: dict[str, Any], run_path: Path | None = None) -> None:
    """Print the summary (once: under torchrun only rank 0 prints)."""
    from cream.report.summary import summary_table

    if not is_main_process():
        return
    if getattr(args, "json", False):
        print(json.dumps(summary))
        return
    print(summary_table(summary))
    if run_path is not None:
        print(f"run directory: {run_path}")


def nb201_table_path(given: str | None) -> Path:
    """--table, else `$CREAM_SHARED_DATA/nb201/nb201.csv`, else `../shared/data/nb201/nb201.csv` from the cwd."""
    import os

    from cream.errors import CreamError

    if given:
        return Path(given)
    candidates = [Path("..") / "shared" / "data" / "nb201" / "nb201.csv"]
    if os.environ.get("CREAM_SHARED_DATA"):
        candidates.insert(0, Path(os.environ["CREAM_SHARED_DATA"]) / "nb201" / "nb201.csv")
    found = next((p for p in candidates if p.is_file()), None)
    if found is None:
        raise CreamError(f"no NAS-Bench-201 table at {' or '.join(map(str, candidates))}; pass --table PATH")
    return found
