"""Multi-view probes against single-view ProbeX on a jungle's trees, side by side (issue 20, acceptance 1).

    python benchmarks/bench_multiview.py                       # the shipped jungle, recommended layers
    python benchmarks/bench_multiview.py --hidden --seeds 0 1  # also each classifier tree's hidden layers
    python benchmarks/bench_multiview.py --views xu all first second

For every classifier tree: ProbeXClassifier with each ``--views`` on the tree's recommended layer
(and with ``--hidden`` on every other matrix layer but the head), trained on ``train``, its epoch
chosen on ``val``, scored on ``test`` (mean binary accuracy, chance 0.5). For every aligned tree:
ProbeXAligner on its recommended layer, its epoch chosen by zero-shot top-1 on the held-out
validation split, scored zero-shot on the held-out test split (chance 1 / held-out concepts) and
in-distribution on ``test``. Same seed, data and training settings for every view set; the only
difference is ``views``. Writes ``bench_multiview.json`` beside this script; runs on one CPU
thread unless PROBEX_THREADS says otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

from probex.experiments.harness import aligned_splits, banks_for, evaluated_trees
from probex.experiments.sweep import matrix_layers
from probex.experts.aligner import ProbeXAligner, names_of
from probex.experts.classifier import ProbeXClassifier
from probex.experts.training import set_threads
from probex.experts.views import views_name
from probex.jungle import SHIPPED
from probex.zoo import ALIGNED, ModelZoo
from probex.zoo.extras import recommended_layers


def _classifier_rows(tree_zoo, layer: str, views: list[str], params: dict, seed: int) -> dict:
    train, val, test = (tree_zoo.bank(layer, split=split) for split in ("train", "val", "test"))
    rows = {}
    for spec in views:
        started = time.perf_counter()
        expert = ProbeXClassifier(views=spec, seed=seed, **params).fit(train, val=(val, None))
        rows[views_name(spec)] = {"test": expert.score(test), "val": max((log.val_score for log in expert.history_ if log.val_score is not None), default=None),
                                  "parameters": expert.n_parameters_, "best_epoch": expert.best_epoch_,
                                  "seconds": round(time.perf_counter() - started, 1)}
    return rows


def _aligned_rows(tree_zoo, layer: str, views: list[str], params: dict, seed: int) -> dict:
    splits = aligned_splits(tree_zoo)
    banks = banks_for(tree_zoo, [layer], splits)
    held_out = sorted(set(names_of(banks[splits[3]][0].labels)))
    training = sorted(set(names_of(banks["train"][0].labels)))
    rows = {}
    for spec in views:
        started = time.perf_counter()
        expert = ProbeXAligner(views=spec, seed=seed, **params).fit(banks["train"], val=(banks[splits[2]], None))
        rows[views_name(spec)] = {"zero_shot": expert.score(banks[splits[3]], candidates=held_out),
                                  "in_distribution": expert.score(banks["test"], candidates=training),
                                  "parameters": expert.n_parameters_, "best_epoch": expert.best_epoch_,
                                  "seconds": round(time.perf_counter() - started, 1)}
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", default=str(SHIPPED), help="a built jungle (default: the shipped one)")
    parser.add_argument("--views", nargs="+", default=["xu", "all"], help="view sets to compare (first is the reference)")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--patience", type=int, default=20)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--hidden", action="store_true", help="also every hidden matrix layer of the classifier trees")
    parser.add_argument("--trees", nargs="*", help="only these trees")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_suffix(".json"), help="the JSON to write")
    args = parser.parse_args()
    set_threads()  # $PROBEX_THREADS (the library keeps torch's default otherwise)

    zoo = ModelZoo.open(args.zoo)
    recommended = recommended_layers(Path(args.zoo))
    params = {"epochs": args.epochs, "patience": args.patience, "device": "cpu"}
    results: dict = {"zoo": str(args.zoo), "params": params, "views": [views_name(v) for v in args.views],
                     "threads": os.environ.get("PROBEX_THREADS"), "machine": platform.processor() or platform.machine(),
                     "classifiers": {}, "aligned": {}}
    out = args.out
    for tree in evaluated_trees(zoo):
        if args.trees and tree not in args.trees:
            continue
        tree_zoo = zoo.select(tree=tree)
        aligned = zoo.role(tree).role == ALIGNED
        layers = [recommended[tree]]
        if args.hidden and not aligned:
            layers += [info.name for info in matrix_layers(tree_zoo) if info.name != recommended[tree]
                       and not info.name.startswith("head")]
        for layer in layers:
            for seed in args.seeds:
                rows = (_aligned_rows if aligned else _classifier_rows)(tree_zoo, layer, args.views, params, seed)
                group = results["aligned" if aligned else "classifiers"].setdefault(tree, {}).setdefault(layer, {})
                group[f"seed{seed}"] = rows
                metric = "zero_shot" if aligned else "test"
                print(f"{tree:18s} {layer:28s} seed {seed}: " +
                      "  ".join(f"{name} {row[metric]:.3f} ({row['parameters']:,} p, {row['seconds']} s)"
                                for name, row in rows.items()), flush=True)
                out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
