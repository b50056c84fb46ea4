"""``probex sweep``: train an expert on every layer of a tree, pick the best by validation, print the table."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from probex.cli import checks


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sweep", help="train an expert per layer of a tree and keep the best by validation",
        description="Train one expert per candidate layer of a tree (training classes, or alignment with "
                    "text for trees with held-out classes), score it on validation and test, and print the "
                    "table with the best layer marked. Every finished layer is appended to the results file, "
                    "so a killed sweep started again skips what is done; --shard i/n splits the layers for "
                    "job arrays and a later run without --shard gathers the shards.")
    parser.add_argument("path", nargs="?", type=checks.existing_folder, help="the zoo's root folder (default: the demo jungle)")
    parser.add_argument("--tree", type=checks.text, help="the tree to sweep ('all': every tree with at least 20 models); "
                                       "needed when the zoo has several")
    parser.add_argument("--task", choices=("auto", "classes", "align"), default="auto",
                        help="classes: predict training classes; align: map into MiniLM's text space "
                             "(auto: align where the zoo has held-out classes, else classes)")
    parser.add_argument("--layers", type=checks.regex, metavar="PATTERN", help="a regex over layer names (default: every matrix layer)")
    parser.add_argument("--layer", action="append", type=checks.text, dest="layer_list", metavar="NAME",
                        help="one layer to sweep (repeat for several)")
    parser.add_argument("--epochs", type=checks.epochs, help="epochs per layer (default 100, patience 20)")
    parser.add_argument("--views", type=checks.views, help=checks.VIEWS_HELP + " (default: the views the zoo names for "
                        "the tree, else xu)")
    parser.add_argument("--results", type=checks.results_file, metavar="FILE",
                        help="the JSON-lines results file (default: $PROBEX_CACHE/sweeps/<zoo>-<tree>-<task>.jsonl)")
    parser.add_argument("--shard", type=checks.shard, metavar="I/N", help="sweep every N-th layer from the I-th (0-based), e.g. "
                                                       "--shard $SLURM_ARRAY_TASK_ID/8")
    parser.add_argument("--backend", choices=("local", "ray"), default="local",
                        help="ray: spread the layers over a Ray cluster (pip install ray)")
    parser.add_argument("--address", type=checks.text, help="the Ray cluster to join (default: start a local one)")
    parser.add_argument("--workers", type=checks.positive_int, help="CPUs of the local Ray instance (default: all)")
    parser.add_argument("--html", type=checks.output_file(".html", ".htm"), metavar="FILE",
                        help="write the score-per-layer chart as HTML")
    parser.add_argument("--json", action="store_true", help="print the table as JSON")
    parser.set_defaults(func=run_sweep)


def _default_results(zoo, tree: str, task: str, views: str = "xu") -> Path:
    from probex.storage import cache_dir, safe_name

    suffix = "" if views == "xu" else f"-{safe_name(views)}"
    return cache_dir("sweeps") / f"{safe_name(zoo.name)}-{safe_name(tree)}-{task}{suffix}.jsonl"


def _per_tree(path: Path | None, tree: str | None, trees: list) -> Path | None:
    """``path`` itself for one tree; ``<stem>-<tree><suffix>`` beside it when several trees are swept
    (the tree's name made safe for a path: a name from the zoo never leaves the folder)."""
    from probex.storage import safe_name

    if path is None or len(trees) == 1:
        return path
    return path.with_name(f"{path.stem}-{safe_name(str(tree))}{path.suffix}")


def _trees(zoo, tree: str | None) -> list[str]:
    from probex.errors import ZooError
    from probex.experiments.harness import evaluated_trees as trees_to_validate

    known = sorted({record.tree for record in zoo.records if record.tree is not None})
    if tree == "all":
        return trees_to_validate(zoo)
    if tree is not None:
        if tree not in known:
            raise ZooError(f"{zoo.root}: no tree {tree!r}; its trees: {', '.join(known[:12])}")
        return [tree]
    if len(known) <= 1:
        return known or [None]
    sweepable = trees_to_validate(zoo)
    raise ZooError(f"{zoo.root} holds {len(known)} trees: choose one with --tree "
                   f"({', '.join(sweepable[:12])}), or --tree all")


def run_sweep(args: argparse.Namespace) -> int:
    from probex.figures import layer_sweep_figure
    from probex.cli import open_zoo
    from probex.progress import tqdm_progress
    from probex.experiments.harness import tree_views
    from probex.experiments.sweep import check_results_file, default_task, sweep_layers
    from probex.storage import atomic_path, check_output_file, mark_output_file

    zoo = open_zoo(args.path)
    shard = args.shard
    trees = _trees(zoo, args.tree)
    tables = {}
    for tree in trees:
        tree_zoo = zoo.select(tree=tree) if tree is not None else zoo
        task = args.task if args.task != "auto" else default_task(tree_zoo)
        views = args.views or (tree_views(zoo, tree) if tree is not None else None) or "xu"
        params = {**({"epochs": args.epochs} if args.epochs else {}), **({"views": views} if views != "xu" else {})}
        results = _per_tree(args.results, tree, trees) or _default_results(zoo, tree or "zoo", task, views)
        check_results_file(results)
        layers = args.layer_list or args.layers
        with tqdm_progress(f"sweeping {tree or zoo.name}", unit="layer") as progress:
            result = sweep_layers(tree_zoo, task=task, layers=layers, params=params or None, results=results,
                                  progress=progress, shard=shard, backend=args.backend, address=args.address,
                                  workers=args.workers)
        tables[tree] = (result, views)
        if not args.json:
            _print_table(tree or zoo.name, task, result, results, views)
        if args.html:
            html = check_output_file(_per_tree(args.html, tree, trees))
            with atomic_path(html) as tmp:
                layer_sweep_figure(result.scores, title=f"Layer sweep of {tree or zoo.name} ({task})").write_html(tmp)
                mark_output_file(tmp, ".html")
            print(f"chart written to {html}")
    if args.json:
        print(json.dumps({tree: {"task": result.task, "best": result.best.layer, "views": views,
                                 "layers": [vars(score) for score in result.scores]}
                          for tree, (result, views) in tables.items()}, indent=2, default=str))
    return 0


def _print_table(tree: str, task: str, result, results: Path, views: str = "xu") -> None:
    zero_shot = any(score.zero_shot_test is not None for score in result.scores)
    best = result.best.layer
    width = max(len(score.layer) for score in result.scores)
    test_name = "test top-1" if task == "align" else "test"
    header = f"  {'layer':<{width}} {'shape':>9} {'val':>6} {test_name:>10}" + (f" {'zero-shot':>9}" if zero_shot else "")
    print(f"{tree} ({task}{'' if views == 'xu' else f', views {views}'}): {len(result.scores)} layers, "
          f"best by validation: {best}")
    print(header + f" {'params':>9} {'seconds':>8}")
    for score in result.scores:
        shape = f"{score.shape[0]}x{score.shape[1]}"
        test = f"{score.test:.3f}" if score.test is not None else "-"
        line = f"{'*' if score.layer == best else ' '} {score.layer:<{width}} {shape:>9} {score.val:6.3f} {test:>10}"
        if zero_shot:
            line += f" {score.zero_shot_test:9.3f}" if score.zero_shot_test is not None else f" {'-':>9}"
        print(line + f" {score.n_parameters:9d} {score.seconds:8.1f}" + ("  read-out" if score.readout else ""))
    if any(score.readout for score in result.scores):
        print("read-out: the classification head, whose rows are the class slots; reading the training classes "
              "off it is trivial, so it is measured but never chosen")
    print(f"results: {results}")
