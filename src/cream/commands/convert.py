"""`cream convert`: import a supernet trained by the original AutoFormer code as a supernet run."""

from __future__ import annotations

import argparse

from cream.commands import add_set_option, print_summary


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="import an original AutoFormer supernet checkpoint",
                       description="Rename the weights of SOURCE (a supernet .pth saved by the original AutoFormer "
                                   "code, e.g. the released supernet-tiny.pth) to cream's layout and write a "
                                   "supernet run directory for `cream search --supernet` and `cream export`. "
                                   "CONFIG (or --set space.preset=...) names the space the "
                                   "checkpoint was trained on; qkv is sliced the original way (legacy_qkv_bias).")
    p.add_argument("source", help="the original checkpoint (.pth)")
    p.add_argument("config", nargs="?", help="YAML config with the space, e.g. configs/autoformer/supernet-tiny.yaml")
    p.add_argument("--out", help="run directory to write (default: runs/convert-<time>)")
    add_set_option(p)
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from cream.config import RunConfig, load_config
    from cream.workflows.convert import convert_autoformer

    cfg = load_config(RunConfig, args.config, args.overrides)
    print_summary(args, *convert_autoformer(cfg, args.source, args.out))
    return 0
