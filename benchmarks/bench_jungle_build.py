"""How long the demo jungle takes to build, and how big it is (issue 4, point 5: <= 20 minutes).

Runs ``build_jungle`` into a temporary folder (or ``--out``), then prints and writes
``bench_jungle_build.json`` beside this script (or ``--json``): wall-clock time per part and in all,
the load average before and after (the figures only mean something on a quiet machine), the CPU and
the kernels torch picked for it, models, files and bytes written. After the timed build:

- ``--compare JUNGLE`` compares every file of the build with the same file of another jungle
  (e.g. ``assets/jungle``, the shipped one), byte for byte, and counts the equal and the different
  files per folder and kind: the build is repeatable on one machine, and this says what another
  machine's CPU changes;
- ``--check`` runs ``probex jungle check`` on what was built (one torch thread) and keeps its
  acceptance figures: whether the paper's effects hold on this build, not only on the shipped one.

    python benchmarks/bench_jungle_build.py [--size full|small] [--workers 2] [--out DIR]
        [--compare assets/jungle] [--check] [--json FILE]
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from probex.jungle.build import build_jungle, read_build_report


def folder_size(folder: Path) -> tuple[int, int]:
    files = [path for path in folder.rglob("*") if path.is_file()]
    return len(files), sum(path.stat().st_size for path in files)


def compare_files(built: Path, reference: Path) -> dict:
    """Per folder and kind (the top folder, the tree folder below it, the file suffix): how many files of
    ``built`` are byte for byte equal to the same file under ``reference``, how many differ, how many it lacks."""
    groups: dict[str, dict[str, int]] = {}
    for path in sorted(built.rglob("*")):
        if not path.is_file():
            continue
        relative = path.relative_to(built)
        folder = "/".join(relative.parts[:-1][:2]) or "."  # at most two folder levels; "." for top-level files
        group = groups.setdefault(f"{folder} *{path.suffix or path.name}", {"equal": 0, "different": 0, "missing": 0})
        other = reference / relative
        if not other.is_file():
            group["missing"] += 1
        elif filecmp.cmp(path, other, shallow=False):
            group["equal"] += 1
        else:
            group["different"] += 1
    return groups


def check_figures(report: dict) -> dict:
    """The acceptance figures of a ``check_jungle`` report, in a few lines."""
    router = report.get("router") or {}
    figures: dict = {"router": {key: router.get(key) for key in ("true_trees", "trees_found", "held_out_accuracy")},
                     "forest": (report.get("forest") or {}).get("probex"), "classifiers": {}, "aligned": {}}
    for tree, row in report.get("classifiers", {}).items():
        comparison = row.get("views_comparison") or {}
        figures["classifiers"][tree] = {
            "layer": row["layer"], "probex": row["probex"], "dense": row["dense"], "multiview": row.get("multiview"),
            "multiview_views": row.get("multiview_views"), "probex_parameters": row["probex_parameters"],
            "multiview_parameters": row.get("multiview_parameters"), "dense_parameters": row["dense_parameters"],
            "views_gap_of_means": comparison.get("gap"), "views_gap_sd": comparison.get("gap_sd")}
    for tree, aligned in report.get("aligned", {}).items():
        figures["aligned"][tree] = {name: aligned[name]["zero_shot"] for name in
                                    ("expert", "single_layer", "linear_single_layer", "multiview_single_layer")
                                    if isinstance(aligned.get(name), dict) and "zero_shot" in aligned[name]}
    return figures


def cpu_name() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), or the platform's word for it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=("small", "full"), default="full")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="keep the jungle here (default: a temporary folder, removed afterwards)")
    parser.add_argument("--compare", type=Path, default=None, metavar="JUNGLE",
                        help="after the build, compare its files byte for byte with this jungle's (e.g. assets/jungle)")
    parser.add_argument("--check", action="store_true", help="after the build, run `probex jungle check` on it")
    parser.add_argument("--json", type=Path, default=Path(__file__).with_suffix(".json"),
                        help="where the figures go (default: bench_jungle_build.json beside this script)")
    args = parser.parse_args()
    if args.compare is not None and not (args.compare / "probex_zoo.json").is_file():
        print(f"error: --compare {args.compare}: not a built jungle (no probex_zoo.json)", file=sys.stderr)
        sys.exit(2)

    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="jungle-bench-"))
    load_before = os.getloadavg()
    started = time.perf_counter()
    build_jungle(out, size=args.size, seed=args.seed, workers=args.workers)
    seconds = time.perf_counter() - started
    load_after = os.getloadavg()
    report = read_build_report(out)
    n_files, n_bytes = folder_size(out)
    result = {
        "size": args.size,
        "workers": args.workers,
        "wall_seconds": round(seconds, 1),
        "within_20_minutes": seconds <= 20 * 60,
        "parts": {name: value for name, value in report.items() if isinstance(value, dict)},
        "files": n_files,
        "megabytes": round(n_bytes / 1e6, 1),
        "conditions": {
            "cpu_count": os.cpu_count(),
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in load_after],
            "cpu": cpu_name(),
            "torch_cpu_kernels": torch.backends.cpu.get_cpu_capability(),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d %H:%M"),
        },
    }
    if args.compare is not None:
        result["compared_with"] = {"jungle": str(args.compare), "files": compare_files(out, args.compare)}
    if args.check:
        from probex.experts.training import set_threads
        from probex.jungle.check import check_jungle

        set_threads(1)  # the check's figures repeat on one thread
        checked = time.perf_counter()
        result["check"] = {**check_figures(check_jungle(out)), "seconds": round(time.perf_counter() - checked, 1)}
    if not args.out:
        shutil.rmtree(out, ignore_errors=True)
    print(f"demo jungle ({args.size}, {args.workers} workers): {seconds:.0f} s wall clock "
          f"({'within' if result['within_20_minutes'] else 'OVER'} 20 minutes), "
          f"{n_files} files, {result['megabytes']} MB")
    for name, part in result["parts"].items():
        print(f"  {name}: {json.dumps(part)}")
    print(f"  load average before {result['conditions']['load_average_before']}, after {result['conditions']['load_average_after']}"
          f" ({result['conditions']['cpu']}, torch kernels {result['conditions']['torch_cpu_kernels']})")
    if "compared_with" in result:
        print(f"compared with {args.compare}, byte for byte (equal / different / missing there):")
        for group, counts in result["compared_with"]["files"].items():
            print(f"  {group:48s} {counts['equal']:6d} {counts['different']:6d} {counts['missing']:6d}")
    if "check" in result:
        print(f"check of this build: {json.dumps(result['check'])}")
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written: {args.json}")


if __name__ == "__main__":
    main()
