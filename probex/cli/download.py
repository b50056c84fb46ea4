"""``probex download``: fetch Model-J subsets or a list of Hub model repos onto disk.

Both end with a summary (downloaded, skipped with the reason, failed with the reason). When any
model is missing the command prints the summary, then one line on stderr, and exits with 2;
running it again fetches only what is missing.
"""

from __future__ import annotations

import argparse
import sys

from probex.cli import checks


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    from probex.zoo.hub.catalogue import DISCRIMINATIVE_SUBSETS, GENERATIVE_SUBSETS

    parser = subparsers.add_parser(
        "download",
        help="download Model-J subsets or Hub model repos (needs the network)",
        description="Download model zoos from the Hugging Face Hub. Pickle files (*.bin) are never "
        "fetched; rate limits are waited out (Retry-After); a rerun fetches only what is missing and asks "
        "the Hub nothing it already answered. Ends with a summary; exits 2 when any model is missing. "
        "Honours HF_ENDPOINT, HF_HUB_OFFLINE and HF_TOKEN.",
    )
    commands = parser.add_subparsers(dest="download_command", metavar="WHAT", required=True)

    modelj = commands.add_parser("modelj", help="a subset of the paper's Model-J dataset")
    modelj.add_argument("subset", metavar="SUBSET", choices=DISCRIMINATIVE_SUBSETS + GENERATIVE_SUBSETS,
                        help=f"one of {', '.join(DISCRIMINATIVE_SUBSETS + GENERATIVE_SUBSETS)}")
    modelj.add_argument("--splits", nargs="+", type=checks.text, metavar="SPLIT", help="splits to fetch (default: all)")
    modelj.add_argument("--images", action="store_true", help="also fetch training images (SD subsets)")
    modelj.add_argument("--layers", nargs="+", type=checks.text, metavar="LAYER",
                        help="fetch only these layers, by byte-range reads: names, module prefixes or the paper's "
                             "layer numbers (`probex layers` lists them), e.g. --layers 46")
    modelj.add_argument("--out", type=checks.writable_folder, default="Model-J", help="output folder (default: ./Model-J)")
    modelj.set_defaults(func=run_download_modelj)

    repos = commands.add_parser("repos", help="your own list of Hub model repos")
    repos.add_argument("repo_ids", nargs="+", type=checks.repo_id, metavar="ID", help="Hub model repo ids, e.g. owner/name")
    repos.add_argument("--layers", nargs="+", type=checks.text, metavar="LAYER", help="fetch only these layers, by byte-range reads")
    repos.add_argument("--out", type=checks.writable_folder, default="hub-models", help="output folder (default: ./hub-models)")
    repos.set_defaults(func=run_download_repos)


def run_download_modelj(args: argparse.Namespace) -> int:
    from probex.zoo.hub import download_modelj

    return _run(lambda progress: download_modelj(args.subset, args.out, splits=args.splits, images=args.images,
                                                 layers=args.layers, progress=progress),
                f"Model-J {args.subset}")


def run_download_repos(args: argparse.Namespace) -> int:
    from probex.zoo.hub import download_repos

    return _run(lambda progress: download_repos(args.repo_ids, args.out, layers=args.layers, progress=progress), "repos")


def _run(download, description: str) -> int:
    """Run a download with a progress bar; print its summary; exit 2 (one line on stderr) when models are missing."""
    from probex.progress import tqdm_progress
    from probex.zoo.hub import DownloadIncompleteError

    try:
        with tqdm_progress(description, unit="model") as progress:
            report = download(progress)
    except DownloadIncompleteError as error:
        print(error.report.summary())
        print(f"probex download: {error}", file=sys.stderr)
        return 2
    print(report.summary())
    print(f"open it with `probex zoo info {report.root}` or ModelZoo.open({str(report.root)!r})")
    return 0
