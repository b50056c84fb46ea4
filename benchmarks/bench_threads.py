"""Threads on a busy machine: training a jungle expert with probex's default threads vs one thread vs torch's default.

With one other busy process on the machine (a Python loop that keeps one core busy, started
here), each run trains a ProbeX classifier of the demo jungle (a tree's layer, its train split,
validation on val) in a fresh process, under three settings:

- ``default``: no ``--threads`` and no ``$PROBEX_THREADS``: :func:`probex.experts.training.set_threads`
  chooses (the cores the load leaves idle);
- ``one``: ``--threads 1``;
- ``torch``: torch's own default, one thread per core (what probex used before it chose).

The settings alternate within each repeat, so a change of load hits all three; each figure is
the median of ``--repeats`` runs, and only the training (``fit``) is timed. Target (issue 16):
``default`` at most 1.5x the time of ``one``.

    python benchmarks/bench_threads.py [--trees cnn-supervised,mini-sd] [--epochs 20] [--repeats 3]

Prints the figures and writes bench_threads.json beside itself.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SETTINGS = ("default", "one", "torch")


def train_once(args: argparse.Namespace) -> None:
    """One training run in this (fresh) process; prints {"threads", "seconds"} as JSON."""
    import torch

    from probex import jungle
    from probex.experts.classifier import ProbeXClassifier
    from probex.experts.training import set_threads

    if args.setting == "default":
        threads = set_threads()  # $PROBEX_THREADS is unset by the parent
    elif args.setting == "one":
        threads = set_threads(1)
    else:
        threads = os.cpu_count() or 1
        torch.set_num_threads(threads)
    zoo = jungle.load().select(tree=args.tree)
    layer = jungle.recommended_layers()[args.tree]
    train, val = zoo.bank(layer, split="train"), zoo.bank(layer, split="val")
    expert = ProbeXClassifier(epochs=args.epochs, device="cpu")
    started = time.perf_counter()
    expert.fit(train, val=(val, None))
    print(json.dumps({"threads": threads, "seconds": time.perf_counter() - started, "layer": layer,
                      "shape": list(train.shape), "models": len(train)}))


def run(setting: str, tree: str, epochs: int) -> dict:
    env = {key: value for key, value in os.environ.items() if key != "PROBEX_THREADS"}
    env.setdefault("PYTHONPATH", str(HERE.parent))
    result = subprocess.run([sys.executable, str(Path(__file__).resolve()), "_train", "--setting", setting, "--tree", tree,
                             "--epochs", str(epochs)], capture_output=True, text=True, env=env, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trees", default="cnn-supervised,mini-sd", help="jungle trees (their recommended layers)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--busy", type=int, default=1, help="other busy processes to start (default 1)")
    parser.add_argument("--out", type=Path, default=HERE / "bench_threads.json")
    args = parser.parse_args()

    # one cached bank per tree before anything is timed
    for tree in args.trees.split(","):
        run("one", tree, 1)
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
    load_before = round(os.getloadavg()[0], 2)
    results = {}
    try:
        time.sleep(1.0)
        for tree in args.trees.split(","):
            runs = {setting: [] for setting in SETTINGS}
            for _ in range(args.repeats):
                for setting in SETTINGS:
                    runs[setting].append(run(setting, tree, args.epochs))
            first = runs["one"][0]
            row = {"layer": first["layer"], "shape": first["shape"], "train_models": first["models"], "epochs": args.epochs}
            for setting in SETTINGS:
                seconds = [r["seconds"] for r in runs[setting]]
                row[setting] = {"threads": [r["threads"] for r in runs[setting]], "median_s": round(statistics.median(seconds), 3),
                                "seconds": [round(s, 3) for s in seconds]}
            row["default_over_one"] = round(row["default"]["median_s"] / row["one"]["median_s"], 2)
            row["torch_over_one"] = round(row["torch"]["median_s"] / row["one"]["median_s"], 2)
            results[tree] = row
            print(f"{tree} / {row['layer']} {tuple(row['shape'])}, {row['train_models']} models, {args.epochs} epochs, "
                  f"{args.busy} other busy process(es):")
            for setting in SETTINGS:
                print(f"  {setting:8s} threads {row[setting]['threads']}  median {row[setting]['median_s']:.3f} s  "
                      f"(runs {', '.join(f'{s:.3f}' for s in row[setting]['seconds'])})")
            print(f"  default / one = {row['default_over_one']}x (target <= 1.5), torch's default / one = {row['torch_over_one']}x")
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()
    machine = {"cpus": os.cpu_count(), "python": platform.python_version(), "busy_processes_started": args.busy,
               "load_average_before": load_before, "load_average_after": round(os.getloadavg()[0], 2)}
    args.out.write_text(json.dumps({"machine": machine, "trees": results}, indent=2) + "\n")
    print(f"load average {machine['load_average_before']} -> {machine['load_average_after']}; wrote {args.out.name}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_train":
        inner = argparse.ArgumentParser()
        inner.add_argument("_train")
        inner.add_argument("--setting", choices=SETTINGS, required=True)
        inner.add_argument("--tree", required=True)
        inner.add_argument("--epochs", type=int, required=True)
        train_once(inner.parse_args())
    else:
        main()
