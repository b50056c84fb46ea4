"""The ``probex`` command line: a thin front end over the library.

Each command group lives in its own module of this package and exposes
``add_commands(subparsers)``; the command functions take the parsed arguments, call the
library and print. Arguments are checked when they are parsed (:mod:`probex.cli.checks`:
ranges, NaN, regular expressions, shards, output paths), before any work starts.

Whatever a user can get wrong ends the command with one line on stderr and exit status 2,
never a traceback: a bad argument, a ``ProbeXError`` from the library, a file or folder that
cannot be read or written (``OSError``), a model too large for memory. A closed pipe
(``probex zoo info | head``) ends the command quietly. Everything printed passes through
:func:`probex.errors.printable`, so names from files (layer names, ids, trees) cannot send
escape sequences to the terminal.
"""

from __future__ import annotations

import argparse
import importlib
import io
import logging
import os
import sys
from typing import NoReturn, Sequence, TextIO

from probex.errors import ProbeXError, printable

#: Exit status of every user error.
USER_ERROR = 2


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
    "probex.cli.layers",
    "probex.cli.jungle",
    "probex.cli.route",
    "probex.cli.search",
    "probex.cli.sweep",
    "probex.cli.report",
    "probex.cli.cache",
)


class UsageError(Exception):
    """A bad command line, raised by the parser instead of printing the usage and exiting."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors end in one line (``probex sweep: argument --shard: ...``), exit 2."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}; see `{self.prog} --help`")


class _PrintableStream(io.TextIOBase):
    """A text stream that passes what is written through :func:`printable` (stdout of the CLI)."""

    def __init__(self, stream: TextIO):
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(printable(text))
        return len(text)

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return self._stream.isatty()

    def fileno(self) -> int:
        return self._stream.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._stream, "encoding", "utf-8")


class _PrintableFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return printable(super().format(record), one_line=True)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, with every command group registered."""
    from probex import __version__
    from probex.cli.checks import positive_int

    parser = Parser(
        prog="probex",
        description="ProbeX: learn from model weights with tree experts.",
    )
    parser.add_argument("--version", action="version", version=f"probex {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    parser.add_argument("--threads", type=positive_int, metavar="N",
                        help="torch CPU threads (default: $PROBEX_THREADS, else the cores that other processes "
                             "leave idle, at least 1)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_commands(subparsers)
    return parser


def _fail(command: str | None, message: object) -> int:
    """Print one line ``probex COMMAND: message`` on stderr; the user-error exit status."""
    prefix = f"probex {command}: " if command else "probex: "
    text = printable(message, one_line=True)
    print(text if text.startswith("probex") else prefix + text, file=sys.stderr)
    return USER_ERROR


def _os_error(error: OSError) -> str:
    where = error.filename if error.filename is not None else ""
    reason = error.strerror or str(error)
    return f"{where}: {reason}" if where else reason


def _quiet_stdout() -> None:
    """After a closed pipe: point stdout at /dev/null so the interpreter's final flush stays silent."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.__stdout__.fileno())
    except (OSError, AttributeError, ValueError):
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``probex`` console script."""
    stdout = sys.stdout
    sys.stdout = _PrintableStream(stdout)
    handler = logging.StreamHandler()
    handler.setFormatter(_PrintableFormatter("%(levelname)s %(name)s: %(message)s"))
    command = None
    try:
        try:
            args = build_parser().parse_args(argv)
        except UsageError as error:
            return _fail(None, error)
        command = args.command
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(logging.INFO if args.verbose else logging.WARNING)
        if not getattr(args, "func", None):
            build_parser().print_help()
            return 1
        from probex.experts.training import set_threads

        set_threads(args.threads)  # --threads, else $PROBEX_THREADS, else the cores the load leaves idle
        return int(args.func(args) or 0)
    except UsageError as error:  # a check that needs the zoo, raised as a usage error
        return _fail(None, error)
    except ProbeXError as error:
        return _fail(command, error)
    except BrokenPipeError:
        _quiet_stdout()
        return 0
    except OSError as error:
        return _fail(command, _os_error(error))
    except MemoryError:
        return _fail(command, "out of memory: the input is larger than this machine can hold; see README "
                              "'Security and limits' (PROBEX_MAX_LAYER_BYTES) or use a smaller selection")
    except KeyboardInterrupt:
        _fail(command, "interrupted")
        return 130
    finally:
        logging.getLogger().removeHandler(handler)
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            _quiet_stdout()
        sys.stdout = stdout


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
