"""``probex zoo``: look into a model zoo on disk (``info``) and pre-build a layer bank (``bank``)."""

from __future__ import annotations

import argparse
from collections import Counter

from probex.cli import checks


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    zoo = subparsers.add_parser("zoo", help="inspect a model zoo on disk")
    commands = zoo.add_subparsers(dest="zoo_command", metavar="COMMAND", required=True)

    info = commands.add_parser("info", help="layout, counts per split and tree, labels, layer catalog, skipped files")
    info.add_argument("path", type=checks.existing_folder, help="the zoo's root folder")
    info.add_argument("--layers", type=checks.non_negative_int, default=8, metavar="N", help="layers to list per architecture (default 8; 0 for all)")
    info.set_defaults(func=run_info)

    bank = commands.add_parser("bank", help="build (or reuse) the cached layer bank of one layer")
    bank.add_argument("path", type=checks.existing_folder, help="the zoo's root folder")
    bank.add_argument("layer", type=checks.text, help="layer name, as `probex zoo info` lists it")
    bank.add_argument("--split", action="append", type=checks.text, help="only this split (repeat for several)")
    bank.add_argument("--dtype", choices=("file", "float32", "float16"), default="file",
                      help="stored dtype (default: the files' own; float16 files stay float16)")
    bank.add_argument("--cache-dir", type=checks.writable_folder, help="cache folder (default $PROBEX_CACHE/banks or ~/.cache/probex/banks)")
    bank.set_defaults(func=run_bank)


def run_info(args: argparse.Namespace) -> int:
    from probex.progress import tqdm_progress
    from probex.zoo import ModelZoo

    with tqdm_progress("reading headers", unit="model") as progress:
        zoo = ModelZoo.open(args.path, progress=progress)
    print(f"zoo: {zoo.name} ({zoo.layout}) at {zoo.root}")
    if zoo.description:
        print(f"  {zoo.description}")
    print(f"models: {len(zoo)} readable, {len(zoo.skipped)} skipped")
    _print_counts(zoo)
    labels = zoo.label_names
    sample = ", ".join(labels[:12]) + (", ..." if len(labels) > 12 else "")
    print(f"labels: {len(labels)} classes" + (f": {sample}" if labels else ""))
    if len(zoo):
        architectures = zoo.architectures()
        print(f"architectures: {len(architectures)}")
        for name, group in architectures.items():
            catalog = group.catalog()
            print(f"  {name}: {len(group)} models, trees {_tree_list(group.trees)}")
            shown = catalog if args.layers <= 0 else catalog[: args.layers]
            width = max(len(layer.name) for layer in shown) if shown else 0
            for layer in shown:
                print(f"    {layer.name:<{width}}  {layer.shape[0]} x {layer.shape[1]}  {layer.kind}")
            if len(shown) < len(catalog):
                print(f"    ... {len(catalog) - len(shown)} more (--layers 0 lists all)")
    if zoo.skipped:
        print(f"skipped: {len(zoo.skipped)}")
        for path, reason in zoo.skipped:
            print(f"  {path}: {reason}")
    return 0


# Above this many single-model trees (a forest of independently initialised models) the
# table folds them into one row instead of printing hundreds.
FOLD_SINGLETONS = 10


def _tree_list(trees: list[str]) -> str:
    if len(trees) > 2 * FOLD_SINGLETONS:
        return f"{', '.join(trees[:FOLD_SINGLETONS])}, ... ({len(trees)} in all)"
    return ", ".join(trees) or "-"


def _print_counts(zoo) -> None:
    """A small table: models per tree (rows) and split (columns); many one-model trees share a row."""
    splits = zoo.splits or [None]
    trees = zoo.trees or [None]
    counts = Counter((record.tree, record.split) for record in zoo.records)
    sizes = Counter(record.tree for record in zoo.records)
    singletons = [tree for tree in trees if sizes[tree] == 1]
    if len(singletons) > FOLD_SINGLETONS:
        folded = f"({len(singletons)} one-model trees: {singletons[0]} ... {singletons[-1]})"
        for tree in singletons:
            for split in splits:
                counts[(folded, split)] += counts[(tree, split)]
        trees = [tree for tree in trees if sizes[tree] != 1] + [folded]
    names = [str(tree) if tree is not None else "(no tree)" for tree in trees]
    columns = [split if split is not None else "(no split)" for split in splits]
    first = max([len("tree")] + [len(name) for name in names])
    print("  " + "tree".ljust(first) + "".join(f"  {column:>10}" for column in columns) + f"  {'total':>7}")
    for tree, name in zip(trees, names):
        row = [counts[(tree, split)] for split in splits]
        print("  " + name.ljust(first) + "".join(f"  {value:>10}" for value in row) + f"  {sum(row):>7}")


def run_bank(args: argparse.Namespace) -> int:
    import torch

    from probex.progress import tqdm_progress
    from probex.zoo import ModelZoo

    with tqdm_progress("reading headers", unit="model") as progress:
        zoo = ModelZoo.open(args.path, progress=progress)
    dtype = {"file": None, "float16": torch.float16, "float32": torch.float32}[args.dtype]
    with tqdm_progress(f"layer {args.layer}", unit="model") as progress:
        bank = zoo.bank(args.layer, split=args.split, dtype=dtype, progress=progress, cache=args.cache_dir or True)
    form = f", stored as LoRA factors of rank {bank.rank}" if bank.is_factored else ""
    print(f"{bank.layer}: {len(bank)} models x {bank.shape[0]} x {bank.shape[1]} ({str(bank.dtype).replace('torch.', '')}){form}")
    for model_id, reason in bank.skipped:
        print(f"  left out {model_id}: {reason}")
    return 0
