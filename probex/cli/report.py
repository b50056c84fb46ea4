"""``probex report``: the paper's analyses on a zoo, written as Markdown, HTML and JSON."""

from __future__ import annotations

import argparse
from pathlib import Path

from probex.cli import checks


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report", help="reproduce the paper's tables on a zoo (Markdown + HTML)",
        description="Measure every analysis of the paper the zoo supports (router, intra- vs inter-tree, "
                    "Table 1 with the MoE column, alignment Tables 2-4, the multi-view and the supplementary's ablations, "
                    "the per-layer Table 5) and write "
                    "report.md, report.html and report.json.")
    parser.add_argument("path", nargs="?", type=checks.existing_folder, help="the zoo's root folder (default: the demo jungle)")
    parser.add_argument("--out", type=checks.report_folder, default=Path("probex-report"),
                        help="the folder to write (default ./probex-report): new, empty, or an earlier report's")
    parser.add_argument("--epochs", type=checks.epochs, help="epochs per expert (default 100, patience 20)")
    parser.add_argument("--sweeps", type=checks.writable_folder, metavar="FOLDER",
                        help="where the layer sweeps are appended and resumed from (default: OUT/sweeps)")
    parser.add_argument("--text-encoder", action="append", type=checks.text_encoder, metavar="SPEC", dest="text_encoders",
                        help="a text encoder for the text-encoder ablation, repeat for several (default: minilm and "
                             "open_clip:ViT-L-14/openai); each is used only where it works without the network, e.g. "
                             "open_clip:ViT-L-14-quickgelu//abs/path/open_clip_model.safetensors")
    parser.set_defaults(func=run_report)


def run_report(args: argparse.Namespace) -> int:
    from probex.cli import open_zoo
    from probex.progress import tqdm_progress
    from probex.experiments.report import build_report, claim_report_folder, write_report

    zoo = open_zoo(args.path)
    claim_report_folder(args.out)  # before the sweeps write into it
    with tqdm_progress("measuring", unit="step") as progress:
        report = build_report(zoo, params={"epochs": args.epochs} if args.epochs else None,
                              results_dir=Path(args.sweeps) if args.sweeps else args.out / "sweeps",
                              progress=progress, text_encoders=args.text_encoders)
    markdown, page = write_report(report, args.out)
    print(markdown.read_text())
    print(f"written: {markdown}, {page}")
    return 0
