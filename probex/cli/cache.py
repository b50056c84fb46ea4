"""``probex cache``: what probex keeps in its cache folder (``info``), and clearing it (``clear``)."""

from __future__ import annotations

import argparse

from probex.cache import KINDS
from probex.cli import checks


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    cache = subparsers.add_parser("cache", help="show or clear probex's cache (banks, atlas, text, sweeps)")
    commands = cache.add_subparsers(dest="cache_command", metavar="COMMAND", required=True)

    info = commands.add_parser("info", help="entries, size and oldest entry per kind, and the size cap")
    info.set_defaults(func=run_info)

    clear = commands.add_parser("clear", help="remove cache entries: all, or by kind and age")
    clear.add_argument("--kind", action="append", choices=KINDS, help="only this kind (repeat for several)")
    clear.add_argument("--older-than", type=checks.non_negative_float, metavar="DAYS",
                       help="only entries neither read nor written for more than DAYS days")
    clear.set_defaults(func=run_clear)


def _size(n_bytes: float) -> str:
    if n_bytes < 1000:
        return f"{n_bytes:.0f} B"
    for unit in ("kB", "MB", "GB"):
        n_bytes /= 1000
        if n_bytes < 1000 or unit == "GB":
            return f"{n_bytes:.1f} {unit}"


def run_info(args: argparse.Namespace) -> int:
    from probex.cache import cache_limit_bytes, cache_usage, describe_limit

    usage = cache_usage()
    print(f"{'kind':8s} {'entries':>8s} {'size':>10s} {'oldest':>8s}  folder")
    for kind, row in usage.items():
        oldest = "" if row["oldest_days"] is None else f"{row['oldest_days']:.1f} d"
        print(f"{kind:8s} {row['entries']:8d} {_size(row['bytes']):>10s} {oldest:>8s}  {row['folder']}")
    total = sum(row["bytes"] for row in usage.values())
    limit = cache_limit_bytes()  # a nonsense $PROBEX_CACHE_MAX_GB: ProbeXError, one line
    of_cap = f" of {_size(limit)}" if limit is not None else ""
    print(f"total {_size(total)}{of_cap}: {describe_limit()}")
    print("`probex cache clear [--kind KIND] [--older-than DAYS]` removes entries")
    return 0


def run_clear(args: argparse.Namespace) -> int:
    from probex.cache import clear_cache

    removed = clear_cache(args.kind, args.older_than)
    freed = sum(entry.size for entry in removed)
    kinds = ", ".join(args.kind) if args.kind else "all kinds"
    age = f", unused for more than {args.older_than:g} days" if args.older_than is not None else ""
    print(f"removed {len(removed)} entries ({_size(freed)}) of {kinds}{age}")
    return 0
