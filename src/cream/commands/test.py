"""`cream test`: evaluate saved weights on the test split."""

from __future__ import annotations

import argparse
from pathlib import Path

from cream.commands import add_set_option, print_summary
from cream.errors import CreamError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("test", help="evaluate saved weights on the test split",
                       description="Evaluate a finished run (RUN directory) or a weights file (--weights, "
                                   "with a config) on the test split of its data.")
    p.add_argument("target", nargs="?", help="a run directory (uses its config.yaml and model.safetensors)")
    p.add_argument("--config", help="YAML config (when testing a weights file)")
    p.add_argument("--weights", help="a .safetensors or .pt weights file")
    add_set_option(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from cream.config import RunConfig, load_config
    from cream.workflows.train_model import test_weights

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
    print_summary(args, test_weights(cfg, weights))
    return 0
