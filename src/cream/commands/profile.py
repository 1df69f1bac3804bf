"""`cream profile`: parameters and multiply-adds of a model."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("profile", help="parameters and multiply-adds of a model",
                       description="Count parameters and multiply-adds (MACs, via torch.utils.flop_counter: "
                                   "matmul-like ops only) of a timm model name.")
    p.add_argument("--model", required=True, help="a timm model name, e.g. resnet18 or autoformer_tiny")
    p.add_argument("--input-size", nargs=3, type=int, metavar=("C", "H", "W"),
                   help="input size (default: the model's own)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from cream.errors import ConfigError
    from cream.profiling import profile

    if args.input_size and min(args.input_size) < 1:
        raise ConfigError(f"--input-size {' '.join(map(str, args.input_size))}: C, H and W must all be >= 1")
    size = tuple(args.input_size) if args.input_size else None
    try:
        result = {"model": args.model, **profile(args.model, input_size=size)}
    except (RuntimeError, AssertionError, ValueError) as e:  # the model's own forward refuses this size
        if size is None:
            raise
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ConfigError(f"--input-size {' '.join(map(str, size))} does not fit model '{args.model}': {reason}"
                          ) from None
    if args.json:
        print(json.dumps(result))
    else:
        reported = "".join(f", {v / 1e6:.1f}M {k}" for k, v in result.items() if k.startswith("macs_"))
        print(f"{args.model}: {result['params'] / 1e6:.3f}M parameters, {result['macs'] / 1e6:.1f}M multiply-adds"
              f"{reported}")
    return 0
