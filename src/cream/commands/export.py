"""`cream export`: write one arch as a standalone model (safetensors + arch JSON)."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export an arch as a standalone model",
                       description="Extract ARCH from a supernet run (inherited weights) or take a retrained "
                                   "run's weights, and write OUT (.safetensors, with the arch and space in its "
                                   "metadata) plus OUT's .json sidecar; --onnx also writes an ONNX file.")
    p.add_argument("source", help="a `cream supernet` run, or a `cream retrain` run (of an arch or a timm model)")
    p.add_argument("--arch", help="arch JSON file (default: the source run's own arch)")
    p.add_argument("--out", required=True, help="output .safetensors file")
    p.add_argument("--onnx", action="store_true", help="also write OUT with suffix .onnx")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from cream.workflows.export import export

    print(json.dumps(export(args.source, args.arch, args.out, onnx=args.onnx)))
    return 0
