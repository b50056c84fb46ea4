"""``probex jungle build``: build the demo jungle offline (deterministic for a seed)."""

from __future__ import annotations

import argparse
import json


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("jungle", help="the built-in demo jungle")
    commands = parser.add_subparsers(dest="jungle_command", metavar="COMMAND", required=True)
    build = commands.add_parser("build", help="build a demo jungle into a folder")
    build.add_argument("--out", required=True, help="the folder to write (a zoo in probex's manifest layout)")
    build.add_argument("--size", choices=("small", "full"), default="full", help="full ships; small is for tests")
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--workers", type=int, default=1, help="2: build the generative tree in a second process")
    build.add_argument("--roots", help="a roots folder of an earlier build (<jungle>/roots): skip pre-training")
    build.set_defaults(func=run_build)


def run_build(args: argparse.Namespace) -> int:
    from probex.jungle.build import build_jungle, read_build_report
    from probex.progress import tqdm_progress

    with tqdm_progress("demo jungle") as progress:
        out = build_jungle(args.out, size=args.size, seed=args.seed, workers=args.workers, roots=args.roots,
                           progress=progress)
    report = read_build_report(out)
    print(f"demo jungle written to {out} in {report['total_seconds']} s")
    print(json.dumps(report, indent=2))
    return 0
