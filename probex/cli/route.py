"""``probex route``: find the Model Trees of a zoo, print them, and draw the dendrogram."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from probex.cli import checks
from probex.trees.dendrogram import LINKAGE_METHODS


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "route", help="find the Model Trees of a zoo (hierarchical clustering) and draw the dendrogram",
        description="Cluster the models of a zoo into Model Trees, print each tree (size, the model nearest "
                    "its centre, its true tree when the zoo knows it) and the routing accuracy, and write "
                    "the dendrogram as HTML or PNG.")
    parser.add_argument("path", type=checks.existing_folder, help="the zoo's root folder")
    parser.add_argument("--layer", type=checks.text, help="layer to cluster on (default: each architecture's largest layer)")
    parser.add_argument("--threshold", type=checks.non_negative_float, metavar="H",
                        help="cut the dendrogram at merge height H (default: the largest gap rule)")
    parser.add_argument("--n-trees", type=checks.positive_int, metavar="K", help="cut into K trees per architecture")
    parser.add_argument("--method", default="ward", choices=LINKAGE_METHODS, help="scipy linkage method (default ward)")
    parser.add_argument("--metric", choices=("l2", "l1"), default="l2", help="routing distance (default l2)")
    parser.add_argument("--fit-split", action="append", type=checks.text, metavar="SPLIT",
                        help="find the trees on this split only (repeat for several) and report the routing "
                             "accuracy on the other models")
    parser.add_argument("--html", type=checks.output_file(".html", ".htm"), metavar="FILE",
                        help="write the dendrogram as an HTML page")
    parser.add_argument("--png", type=checks.output_file(".png"), metavar="FILE",
                        help="write the dendrogram as a PNG (needs kaleido)")
    parser.set_defaults(func=run_route)


def run_route(args: argparse.Namespace) -> int:
    from probex.progress import tqdm_progress
    from probex.trees.router import TreeRouter
    from probex.zoo import ModelZoo

    with tqdm_progress("reading headers", unit="model") as progress:
        zoo = ModelZoo.open(args.path, progress=progress)
    fit_zoo = zoo.select(split=args.fit_split) if args.fit_split else zoo
    router = TreeRouter(layer=args.layer, method=args.method, metric=args.metric, threshold=args.threshold,
                        n_trees=args.n_trees)
    with tqdm_progress("finding trees") as progress:
        router.fit(fit_zoo, progress=progress)

    print(f"zoo: {zoo.name} ({len(fit_zoo)} models clustered, {len(router.architectures_)} architectures)")
    for architecture in router.architectures_:
        print(f"  {architecture.name}: layer {architecture.layer} {architecture.shape[0]} x {architecture.shape[1]}, "
              f"cut at {architecture.cut_height:.4g} ({architecture.strategy} distances)")
    print(f"trees found: {router.n_trees_}")
    table = router.tree_table()
    width = max(len(row["nearest_model"]) for row in table)
    print(f"  {'tree':<10} {'models':>6}  {'nearest the centre':<{width}}  true tree")
    for row in table:
        print(f"  {row['tree']:<10} {row['size']:>6}  {row['nearest_model']:<{width}}  {row['true_tree'] or '-'}")
    _print_accuracy(router, zoo, fit_zoo, args.fit_split)

    if args.html or args.png:
        _write_figure(router, args.html, args.png, title=f"Model Trees of {zoo.name}")
    return 0


def _print_accuracy(router, zoo, fit_zoo, fit_split) -> None:
    if not router.tree_truth_:
        print("routing accuracy: - (the zoo does not say which tree each model belongs to)")
        return
    if fit_split:
        held_out = zoo.select(ids=[i for i in zoo.ids if i not in set(fit_zoo.ids)])
        if len(held_out) and any(record.tree for record in held_out.records):
            print(f"routing accuracy on the {len(held_out)} other models: {router.score(held_out):.3f}")
            return
    print(f"routing accuracy on the {len(fit_zoo)} clustered models: {router.score(fit_zoo):.3f}")


def _write_figure(router, html: Path | None, png: Path | None, title: str) -> None:
    from probex.figures import dendrogram_figure
    from probex.storage import atomic_path, check_output_file, mark_output_file

    figure = dendrogram_figure(router, title=title)
    if png is not None:
        try:
            import kaleido  # noqa: F401  (plotly's static image engine)
        except ImportError:
            html = html or check_output_file(png.with_suffix(".html"))
            print(f"PNG needs the kaleido package (pip install kaleido); writing the dendrogram as HTML to {html} "
                  "instead", file=sys.stderr)
        else:
            with atomic_path(png) as tmp:
                figure.write_image(str(tmp), format="png", width=1200, height=520)
                mark_output_file(tmp, ".png")
            print(f"dendrogram: {png}")
    if html is not None:
        with atomic_path(html) as tmp:
            figure.write_html(str(tmp), include_plotlyjs=True)
            mark_output_file(tmp, ".html")
        print(f"dendrogram: {html}")
