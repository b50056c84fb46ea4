"""``probex jungle build | validate | check``: build the demo jungle offline, sweep it, measure it."""

from __future__ import annotations

import argparse
import json

from probex.cli import checks


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("jungle", help="the built-in demo jungle")
    commands = parser.add_subparsers(dest="jungle_command", metavar="COMMAND", required=True)
    build = commands.add_parser("build", help="build a demo jungle into a folder")
    build.add_argument("--out", required=True, type=checks.writable_folder,
                       help="the folder to write (a zoo in probex's manifest layout): new, empty, or an earlier build")
    build.add_argument("--size", choices=("small", "full"), default="full", help="full ships; small is for tests")
    build.add_argument("--seed", type=checks.non_negative_int, default=0)
    build.add_argument("--workers", type=checks.int_in(1, 2), default=1,
                       help="2: two processes sharing the work: the second pre-trains the generative tree's root "
                            "(unless --generative keeps the tree), then both take classifier trees and LoRA models")
    build.add_argument("--roots", type=checks.existing_folder, help="a roots folder of an earlier build (<jungle>/roots): skip pre-training")
    build.add_argument("--generative", type=checks.existing_folder,
                       help="the generative folder of an earlier build (<jungle>/generative): keep its LoRA models "
                            "byte for byte instead of training them again")
    build.add_argument("--resume", action="store_true",
                       help="continue an interrupted build in --out: keep the classifier trees already written in full")
    build.add_argument("--no-validate", dest="validate", action="store_false",
                       help="skip the validation sweep (recommended layers and pre-trained experts)")
    build.set_defaults(func=run_build)
    validate = commands.add_parser("validate", help="sweep every layer of every tree; write the recommended "
                                                    "layers and the pre-trained experts into the jungle")
    validate.add_argument("path", nargs="?", type=checks.existing_folder, help="a built jungle (default: the shipped one)")
    validate.add_argument("--epochs", type=checks.epochs, help="training epochs per layer (default 100, patience 20)")
    validate.set_defaults(func=run_validate)
    check = commands.add_parser("check", help="measure and print the jungle's acceptance figures "
                                              "(router, experts, forest, alignment)")
    check.add_argument("path", nargs="?", type=checks.existing_folder, help="a built jungle (default: the shipped one)")
    check.set_defaults(func=run_check)


def _jungle_path(args: argparse.Namespace):
    from probex.jungle import SHIPPED, load

    path = args.path or SHIPPED
    load(path)  # a clear message when there is no jungle there
    return path


def run_validate(args: argparse.Namespace) -> int:
    from probex.jungle.validation import validate_jungle
    from probex.progress import tqdm_progress

    path = _jungle_path(args)
    with tqdm_progress("validation sweep", unit="tree") as progress:
        summary = validate_jungle(path, params={"epochs": args.epochs} if args.epochs else None, progress=progress)
    for tree, value in summary["trees"].items():
        shipped = value["shipped"]
        print(f"{tree}: best layer {value['best']}; shipped expert on {' + '.join(shipped['layers'])} "
              f"(val {shipped['val']:.3f}, test {shipped['test']:.3f})")
    return 0


def run_check(args: argparse.Namespace) -> int:
    from probex.jungle.check import check_jungle, format_report
    from probex.progress import tqdm_progress

    path = _jungle_path(args)
    with tqdm_progress("measuring", unit="step") as progress:
        report = check_jungle(path, progress=progress)
    print(format_report(report))
    return 0


def run_build(args: argparse.Namespace) -> int:
    from probex.jungle.build import build_jungle, read_build_report
    from probex.progress import tqdm_progress

    with tqdm_progress("demo jungle") as progress:
        out = build_jungle(args.out, size=args.size, seed=args.seed, workers=args.workers, roots=args.roots,
                           progress=progress, validate=args.validate, generative=args.generative,
                           resume=args.resume)
    report = read_build_report(out)
    print(f"demo jungle written to {out} in {report['total_seconds']} s")
    print(json.dumps(report, indent=2))
    return 0
