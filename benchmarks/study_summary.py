"""The recipe studies at a glance: ProbeX against Dense on every tree variant measured (issue 20, point 2).

    python benchmarks/study_summary.py                       # every study_recipes*.json beside this script
    python benchmarks/study_summary.py --out docs/studies.md
    python benchmarks/study_summary.py /tmp/my_study.json

Reads the figure files that ``study_recipes.py`` writes and prints, in Markdown, one headline row per
study (the layer where single-view ProbeX comes closest to Dense, and the best multi-view read-out)
and then each study's layers: means over the expert seeds of the test mean binary accuracy, ProbeX
minus Dense, and how many times ProbeX's parameters Dense has. A layer "meets point 2" when ProbeX's
mean is at least Dense's + 0.02 with at least 10x fewer parameters; the multi-view columns name the
best view set the study ran and count the layers where some view set would meet those margins (the
views are a ProbeX option, counted apart). Nothing is trained; ``--out`` is written
only when given, and replaces only a file this script wrote (one that starts with its title).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from probex.storage import atomic_path

#: Point 2 of issue 20: ProbeX >= Dense + MARGIN with >= RATIO times fewer parameters.
MARGIN, RATIO = 0.02, 10.0
TITLE = "# ProbeX against Dense on the recipe studies"


def _mean(runs: list[dict]) -> float:
    return float(np.mean([run["test"] for run in runs]))


def layer_rows(figures: dict) -> list[dict]:
    """One dict per layer: means of ProbeX, linear ProbeX, Dense and the best multi-view set, gaps and ratios."""
    rows = []
    for layer, row in figures["layers"].items():
        probex, dense = row.get("probex"), row.get("dense")
        if probex is None or dense is None:
            continue
        views = {key.removeprefix("multi-view "): runs for key, runs in row.items() if key.startswith("multi-view ")}
        best = max(views, key=lambda name: _mean(views[name]), default=None)
        entry = {"layer": layer, "shape": "x".join(map(str, row["shape"])), "probex": _mean(probex),
                 "linear": _mean(row["linear probex"]) if "linear probex" in row else None, "dense": _mean(dense),
                 "ratio": dense[0]["parameters"] / probex[0]["parameters"], "views": best,
                 "views_score": _mean(views[best]) if best else None,
                 "views_ratio": dense[0]["parameters"] / views[best][0]["parameters"] if best else None}
        entry["gap"] = entry["probex"] - entry["dense"]
        entry["meets"] = entry["gap"] >= MARGIN - 1e-9 and entry["ratio"] >= RATIO
        entry["views_meets"] = any(_mean(runs) - entry["dense"] >= MARGIN - 1e-9
                                   and dense[0]["parameters"] / runs[0]["parameters"] >= RATIO for runs in views.values())
        rows.append(entry)
    return rows


def describe(figures: dict) -> str:
    recipe = figures["recipe"]
    parts = [recipe["tree"], recipe.get("architecture") or "architecture not recorded", f"head {recipe['head']}",
             f"{recipe['steps']:g}x steps", f"{recipe['models']} models"]
    if recipe.get("lora_rank"):
        parts.append(f"LoRA rank {recipe['lora_rank']}")
    return ", ".join(parts) + f"; expert seeds {', '.join(map(str, figures['seeds']))}"


def _cell(value: float | None, signed: bool = False) -> str:
    return "" if value is None else (f"{value:+.3f}" if signed else f"{value:.3f}")


def summary(studies: dict[str, dict]) -> str:
    """The Markdown summary of ``studies`` ({file name: its figures})."""
    lines = [TITLE, "",
             f"Written by `benchmarks/study_summary.py` from the figure files of `benchmarks/study_recipes.py`. "
             f"Test mean binary accuracy, means over the expert seeds; chance is 0.5. A layer meets point 2 of "
             f"issue 20 when single-view ProbeX >= Dense + {MARGIN} with >= {RATIO:g}x fewer parameters. "
             f"\"Multi-view\" is the best view set a study ran (the ProbeX expert's `views` option), counted apart.", "",
             "| study | variant | layers | closest ProbeX - Dense (layer) | layers meeting point 2 | Dense's best layer | "
             "best multi-view - Dense on its layer (layer, views, params Dense / multi-view) | layers where some view set "
             "would meet it |",
             "|---|---|---|---|---|---|---|---|"]
    details = []
    for name, figures in studies.items():
        rows = layer_rows(figures)
        if not rows:
            continue
        closest = max(rows, key=lambda row: row["gap"])
        dense_best = max(rows, key=lambda row: row["dense"])
        with_views = [row for row in rows if row["views"]]
        best_views = max(with_views, key=lambda row: row["views_score"] - row["dense"], default=None)
        views_cell = "" if best_views is None else (
            f"{best_views['views_score'] - best_views['dense']:+.3f} ({best_views['layer']}, {best_views['views']}, "
            f"{best_views['views_ratio']:.1f}x)")
        lines.append(f"| `{name}` | {describe(figures)} | {len(rows)} | {closest['gap']:+.3f} ({closest['layer']}) | "
                     f"{sum(row['meets'] for row in rows)} | {dense_best['dense']:.3f} ({dense_best['layer']}) | {views_cell} | "
                     f"{sum(row['views_meets'] for row in rows) if with_views else ''} |")
        details += ["", f"## `{name}`", "", describe(figures) + f"; majority rule {figures['majority']:.3f}", "",
                    "| layer | shape | ProbeX | linear ProbeX | Dense | ProbeX - Dense | Dense/ProbeX params | multi-view (views) |",
                    "|---|---|---|---|---|---|---|---|"]
        for row in rows:
            views = "" if row["views"] is None else f"{row['views_score']:.3f} ({row['views']})"
            details.append(f"| {row['layer']} | {row['shape']} | {_cell(row['probex'])} | {_cell(row['linear'])} | "
                           f"{_cell(row['dense'])} | {_cell(row['gap'], signed=True)} | {row['ratio']:.1f}x | {views} |")
    return "\n".join(lines + details) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", type=Path,
                        help="figure files of study_recipes.py (default: study_recipes*.json beside this script)")
    parser.add_argument("--out", type=Path, default=None, help="also write the Markdown here")
    args = parser.parse_args()
    if args.out is not None and args.out.exists():  # checked before any work: only our own output is replaced
        if not args.out.is_file() or not args.out.read_text(errors="replace").startswith(TITLE):
            print(f"error: --out {args.out} exists and is not a summary this script wrote; name another file",
                  file=sys.stderr)
            sys.exit(2)
    files = args.files or sorted(Path(__file__).parent.glob("study_recipes*.json"))
    studies = {}
    for path in files:
        try:
            figures = json.loads(path.read_text())
            figures["recipe"], figures["layers"], figures["seeds"], figures["majority"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            print(f"error: {path} is not a figure file of study_recipes.py ({type(error).__name__})", file=sys.stderr)
            sys.exit(2)
        studies[path.name] = figures
    text = summary(studies)
    print(text, end="")
    if args.out is not None:
        with atomic_path(args.out) as tmp:
            tmp.write_text(text)


if __name__ == "__main__":
    main()
