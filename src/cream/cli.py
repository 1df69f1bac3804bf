"""The `cream` command. Thin: it parses arguments and calls the library.

Each subcommand lives in `cream.commands.<name>`. Every user error (`CreamError`) is printed
as one line on stderr with exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import typing

from cream.commands import COMMANDS, discard_unstarted_runs
from cream.errors import CreamError


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is reported in one line (exit 2), like every other bad input."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from cream import __version__

    parser = _Parser(prog="cream", description="One-shot NAS and efficient vision transformers.")
    parser.add_argument("--version", action="version", version=f"cream {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"cream.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="cream: %(levelname)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CreamError as e:
        discard_unstarted_runs()
        print(f"cream: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cream: interrupted", file=sys.stderr)
        return 130
    finally:
        if "torch.distributed" in sys.modules:  # a command joined torchrun's process group: leave it
            from cream.train.distributed import teardown

            teardown()


if __name__ == "__main__":
    sys.exit(main())
