"""The ``probex`` command line: a thin front end over the library.

Each command group lives in its own module of this package and exposes
``add_commands(subparsers)``; the command functions take the parsed arguments, call the
library and print. Errors raised on purpose by probex (``ProbeXError``) end the command with
a one-paragraph message and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Sequence

from probex.errors import ProbeXError


def open_zoo(path: str | None):
    """The ModelZoo a command was given, or the shipped demo jungle when no path was."""
    from probex import jungle
    from probex.zoo import ModelZoo

    return jungle.load() if path is None else ModelZoo.open(path)

# One module per command group; each defines add_commands(subparsers).
COMMAND_MODULES = (
    "probex.cli.info",
    "probex.cli.download",
    "probex.cli.zoo",
    "probex.cli.jungle",
    "probex.cli.route",
    "probex.cli.search",
    "probex.cli.sweep",
    "probex.cli.report",
    "probex.cli.cache",
)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, with every command group registered."""
    from probex import __version__

    parser = argparse.ArgumentParser(
        prog="probex",
        description="ProbeX: learn from model weights with tree experts.",
    )
    parser.add_argument("--version", action="version", version=f"probex {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    parser.add_argument("--threads", type=int, metavar="N",
                        help="torch CPU threads (default: $PROBEX_THREADS, else the cores that other processes "
                             "leave idle, at least 1)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_commands(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``probex`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    from probex.experts.training import set_threads

    try:
        set_threads(args.threads)  # --threads, else $PROBEX_THREADS, else the cores the load leaves idle
    except ValueError as error:
        print(f"probex: {error}", file=sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except ProbeXError as error:
        print(f"probex {args.command}: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"probex {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
