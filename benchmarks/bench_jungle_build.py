"""How long the demo jungle takes to build, and how big it is (issue 4, point 5: <= 20 minutes).

Runs ``build_jungle`` into a temporary folder (or ``--out``), then prints and writes
``bench_jungle_build.json`` beside this script: wall-clock time per part and in all, the load
average before and after (the figures only mean something on a quiet machine), models, files
and bytes written.

    python benchmarks/bench_jungle_build.py [--size full|small] [--workers 2] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import torch

from probex.jungle.build import build_jungle, read_build_report


def folder_size(folder: Path) -> tuple[int, int]:
    files = [path for path in folder.rglob("*") if path.is_file()]
    return len(files), sum(path.stat().st_size for path in files)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=("small", "full"), default="full")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="keep the jungle here (default: a temporary folder, removed afterwards)")
    args = parser.parse_args()

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
            "torch": torch.__version__,
            "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d %H:%M"),
        },
    }
    if not args.out:
        shutil.rmtree(out, ignore_errors=True)
    print(f"demo jungle ({args.size}, {args.workers} workers): {seconds:.0f} s wall clock "
          f"({'within' if result['within_20_minutes'] else 'OVER'} 20 minutes), "
          f"{n_files} files, {result['megabytes']} MB")
    for name, part in result["parts"].items():
        print(f"  {name}: {json.dumps(part)}")
    print(f"  load average before {result['conditions']['load_average_before']}, after {result['conditions']['load_average_after']}")
    target = Path(__file__).with_suffix(".json")
    target.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written: {target}")


if __name__ == "__main__":
    main()
