"""`cream distill save-logits | check`: TinyViT's fast distillation, a teacher run once and replayed."""

from __future__ import annotations

import argparse

from cream.commands import add_set_option, print_summary
from cream.errors import CreamError


def epoch_range(text: str) -> tuple[int, int]:
    """'A:B' -> (A, B): the epochs A..B-1."""
    lo, sep, hi = text.partition(":")
    if not sep or not lo.isdigit() or not hi.isdigit() or int(lo) >= int(hi):
        raise argparse.ArgumentTypeError(f"--epochs {text!r} is not A:B with 0 <= A < B (e.g. 0:30)")
    return int(lo), int(hi)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("distill", help="write or check a logit store (TinyViT fast distillation)",
                       description="save-logits runs CONFIG's online teacher (distill.teacher) once over seeded, "
                                   "replayable views of every (image, epoch) and writes its top distill.top_k "
                                   "probabilities to distill.store (TinyViT's byte format; rerun to resume; under "
                                   "torchrun each rank writes its own files). check recomputes the teacher on "
                                   "stored records. `cream retrain CONFIG` then trains from the store.")
    actions = p.add_subparsers(dest="action", required=True, metavar="{save-logits,check}")
    for name, text in (("save-logits", "run the teacher and write the store"),
                       ("check", "recompute the teacher on stored records; report value error and index mismatch")):
        a = actions.add_parser(name, help=text, description=text)
        a.add_argument("config", nargs="?", help="YAML config file (the one the retrain will use)")
        a.add_argument("--epochs", type=epoch_range, metavar="A:B",
                       help="only epochs A..B-1 (split a pass across machines); default: all train.epochs")
        if name == "check":
            a.add_argument("--samples", type=int, default=0, metavar="N",
                           help="check the first N samples of each epoch (default 0: all)")
        add_set_option(a)
        a.add_argument("--json", action="store_true", help="print the summary as one JSON object")
        a.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from cream.config import RunConfig, load_config
    from cream.workflows.distill import check_logits, save_logits

    cfg = load_config(RunConfig, args.config, args.overrides)
    if args.action == "save-logits":
        print_summary(args, save_logits(cfg, args.epochs))
        return 0
    if args.samples < 0:
        raise CreamError(f"--samples {args.samples} is negative; give 0 (all) or a count")
    print_summary(args, check_logits(cfg, args.epochs, args.samples))
    return 0
