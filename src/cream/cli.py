"""The `cream` command. Thin: it parses arguments and calls the library.

Every user error (`CreamError`) is printed as one line on stderr with exit code 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cream.errors import CreamError

Handler = Callable[[argparse.Namespace], int]


def _common(p: argparse.ArgumentParser, config: bool = True) -> None:
    if config:
        p.add_argument("config", nargs="?", help="YAML config file (default: the embedded defaults)")
    p.add_argument("--out", help="run directory (default: runs/<command>-<time>)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value by dotted key, e.g. --set optim.lr=0.001 (repeatable)")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its last checkpoint")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cream", description="One-shot NAS and efficient vision transformers.")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="the main job on the embedded default data (or a config)",
                       description="Run the main job: train and test a model on the embedded digits data "
                                   "(or the data and model of CONFIG), and print a summary.")
    _common(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("retrain", help="train one standalone model from a config",
                       description="Train one standalone model (a timm name or ours) from a config, then test it.")
    _common(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("test", help="evaluate saved weights on the test split",
                       description="Evaluate a finished run (RUN directory) or a weights file (--weights, "
                                   "with a config) on the test split of its data.")
    p.add_argument("target", nargs="?", help="a run directory (uses its config.yaml and model.safetensors)")
    p.add_argument("--config", help="YAML config (when testing a weights file)")
    p.add_argument("--weights", help="a .safetensors or .pt weights file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_test)

    p = sub.add_parser("profile", help="parameters and multiply-adds of a model",
                       description="Count parameters and multiply-adds (MACs, via torch.utils.flop_counter: "
                                   "matmul-like ops only) of a timm model name.")
    p.add_argument("--model", required=True, help="a timm model name, e.g. resnet18 or autoformer_tiny")
    p.add_argument("--input-size", nargs=3, type=int, metavar=("C", "H", "W"),
                   help="input size (default: the model's own)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_profile)
    return parser


def _version() -> str:
    from cream import __version__

    return f"cream {__version__}"


# ---------------------------------------------------------------------------------------------


def load_run_config(args: argparse.Namespace) -> tuple[Any, Any]:
    """(config, run dir) of a training command: a new run, or the run in --resume."""
    from cream.config import RunConfig, load_config
    from cream.run_dir import RunDir

    if args.resume:
        if args.config:
            raise CreamError("give either a CONFIG or --resume DIR (a resumed run uses the config it saved)")
        run = RunDir.create(args.resume, args.command, resume=True)
        cfg = load_config(RunConfig, run.file("config.yaml"), args.overrides)
        return cfg, run
    cfg = load_config(RunConfig, args.config, args.overrides)
    run = RunDir.create(args.out, args.command)
    return cfg, run


def cmd_run(args: argparse.Namespace) -> int:
    from cream.pipeline import train_standalone

    cfg, run = load_run_config(args)
    summary = train_standalone(cfg, run, resume=bool(args.resume))
    _print_summary(args, summary, run.path)
    return 0


def cmd_test(args: argparse.Namespace) -> int:
    from cream.config import RunConfig, load_config
    from cream.pipeline import test_weights

    if args.target:
        run = Path(args.target)
        if not (run / "config.yaml").is_file():
            raise CreamError(f"'{run}' is not a run directory (no config.yaml); use --config and --weights")
        cfg = load_config(RunConfig, args.config or run / "config.yaml", args.overrides)
        weights = Path(args.weights) if args.weights else run / "model.safetensors"
    else:
        if not args.weights:
            raise CreamError("give a run directory, or --weights FILE (with --config)")
        cfg = load_config(RunConfig, args.config, args.overrides)
        weights = Path(args.weights)
    result = test_weights(cfg, weights)
    _print_summary(args, result, None)
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    from cream.profiling import profile

    size = tuple(args.input_size) if args.input_size else None
    result = {"model": args.model, **profile(args.model, input_size=size)}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.model}: {result['params'] / 1e6:.3f}M parameters, {result['macs'] / 1e6:.1f}M multiply-adds")
    return 0


def _print_summary(args: argparse.Namespace, summary: dict[str, Any], run_path: Path | None) -> None:
    from cream.report.summary import summary_table

    if getattr(args, "json", False):
        print(json.dumps(summary))
        return
    print(summary_table(summary))
    if run_path is not None:
        print(f"run directory: {run_path}")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="cream: %(levelname)s: %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except CreamError as e:
        print(f"cream: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cream: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
