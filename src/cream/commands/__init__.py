"""One module per `cream` subcommand: each has `register(subparsers)` and a handler.

Shared argument helpers live here so that every command reads the same way.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

#: (folder, existed before) of each run folder this process created for a new run; see `discard_unstarted_runs`.
_NEW_RUNS: list[tuple[Path, bool]] = []

COMMANDS = ["run", "supernet", "search", "retrain", "distill_store", "test", "export", "convert", "profile", "bench",
            "rank", "space_search", "nse", "latency", "clip"]


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


# The --set keys a resumed run accepts: they change how fast it runs or what it logs, never its results
# (weights, scores, chosen arch). The run records them in its config.yaml; any other key is refused.
RESUME_SAFE_KEYS = ("train.threads", "data.workers", "data.cache_dir", "train.log_every", "train.tensorboard",
                    "train.keep_checkpoints", "train.ckpt_every_steps", "train.ckpt_every_epochs")


def load_run_config(args: argparse.Namespace, base: dict | None = None,
                    fields: dict | None = None, check: Any = None, cls: Any = None) -> tuple[Any, Any]:
    """(config, run dir) of a training command: a new run (its config.yaml written first; `fields` replace
    whole config sections after merging; `check(cfg)` may refuse the config before the folder exists), or the
    run named by --resume. `cls` is the config's class (default `RunConfig`)."""
    import dataclasses

    from cream.config import RunConfig, load_config, to_dict, with_overrides
    from cream.errors import ConfigError, CreamError
    from cream.run_dir import RunDir

    if args.resume:
        if args.config:
            raise CreamError("give either a CONFIG or --resume DIR (a resumed run uses the config it saved)")
        run = RunDir.create(args.resume, args.command, resume=True)
        return resumed_config(run, args.overrides, cls), run
    cfg = dataclasses.replace(load_config(cls or RunConfig, args.config, args.overrides, base=base), **(fields or {}))
    if cfg.retrain:  # `cream run`'s retrain stage: check its overrides now, not after the supernet and search
        try:
            with_overrides(cfg, cfg.retrain, retrain={})
        except ConfigError as e:
            raise ConfigError(f"in config section 'retrain': {e}") from None
    if check is not None:
        check(cfg)
    return cfg, new_run_dir(args.out, args.command, to_dict(cfg))


def resumed_config(run: Any, overrides: list[str], cls: Any = None) -> Any:
    """The config a run saved, with --set overrides of `RESUME_SAFE_KEYS` only (a resumed run must give the
    results the uninterrupted one would); the workflow records them in its config.yaml."""
    from cream.config import RunConfig, load_config, parse_override
    from cream.errors import ConfigError

    for item in overrides:
        key = parse_override(item)[0]
        if key not in RESUME_SAFE_KEYS:
            raise ConfigError(f"--set {key} is refused with --resume: it would change the run's results; "
                              f"a resumed run accepts only {', '.join(RESUME_SAFE_KEYS)}")
    return load_config(cls or RunConfig, run.file("config.yaml"), overrides)


def new_run_dir(out: str | None, command: str, config: dict) -> Any:
    """`RunDir.create` for a new run (its config.yaml written first), remembered so that a command failing
    before it saved anything else does not leave a folder that can be neither rerun nor resumed."""
    from cream.run_dir import RunDir

    existed = out is not None and Path(out).exists()
    run = RunDir.create(out, command, config=config)
    if run.write:
        _NEW_RUNS.append((run.path, existed))
    return run


def discard_unstarted_runs() -> None:
    """Remove the new run folders of this process that hold nothing yet but the config.yaml written at
    start-up (an empty folder given as --out stays, empty), so that once the input is fixed the same --out
    can be used again. A folder holding anything else (metrics, checkpoints, weights, search state) stays."""
    import shutil

    while _NEW_RUNS:
        path, existed = _NEW_RUNS.pop()
        if not path.is_dir() or any(f.is_file() and f.name != "config.yaml" for f in path.rglob("*")):
            continue
        shutil.rmtree(path, ignore_errors=True)
        if existed:
            path.mkdir(parents=True, exist_ok=True)


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
    """--table, else the shared NAS-Bench-201 table (see `shared_data_file`)."""
    return shared_data_file(given, "nb201/nb201.csv", "NAS-Bench-201 table", "--table PATH")


def shared_data_file(given: str | None, relative: str, what: str, option: str) -> Path:
    """`given`, else `$CREAM_SHARED_DATA/<relative>`, else `../shared/data/<relative>` from the cwd: the first
    that is a file; none is a one-line error naming the places looked at and the option to pass."""
    import os

    from cream.errors import CreamError

    if given:
        return Path(given)
    candidates = [Path("..") / "shared" / "data" / relative]
    if os.environ.get("CREAM_SHARED_DATA"):
        candidates.insert(0, Path(os.environ["CREAM_SHARED_DATA"]) / relative)
    found = next((p for p in candidates if p.is_file()), None)
    if found is None:
        raise CreamError(f"no {what} at {' or '.join(map(str, candidates))}; pass {option}")
    return found
