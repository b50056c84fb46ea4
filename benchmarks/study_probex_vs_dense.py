"""Single-view ProbeX against Dense on the shipped jungle: fewer models, added noise, other settings.

    python benchmarks/study_probex_vs_dense.py                       # every part: 160 s on one thread
    python benchmarks/study_probex_vs_dense.py --parts fractions --trees mixer-supervised

A study for issue 20, acceptance 2 (single-view ProbeX >= Dense + 0.02 with >= 10x fewer parameters on a
classifier tree's recommended hidden layer). Three questions, each answered over expert seeds 0, 1, 2 at every
classifier tree's recommended layer (``recommended_layers.json``), with the sweep's settings (epochs, patience),
trained on ``train``, chosen on ``val`` and scored on ``test`` (mean binary accuracy; chance 0.5):

- ``fractions``: does ProbeX need fewer models than Dense? Both on the same seeded random part of ``train``.
- ``noise``: does nuisance that a flat linear read-out must average away hurt Dense more? Gaussian noise of
  0, 1 and 3 times the standard deviation of the training models' deviation from their mean is added to every
  model of every split (the models are merged to dense matrices first; on the LoRA mixer tree ProbeX otherwise
  reads the factors, so its noise-0 row differs from its all-models row by float rounding carried through
  training: 0.871 vs 0.863 in the last run).
- ``settings``: other ProbeX settings on the one tree where Dense is not saturated (``mixer-supervised``):
  the linear ProbeX, probes on the other side of the layer (``views="xtu"``), larger and smaller sizes,
  smaller batches, more epochs at a lower learning rate.

Nothing is written into the jungle; the figures go to ``--out`` (default: study_probex_vs_dense.json beside
this script). One CPU thread unless PROBEX_THREADS says otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from probex.experiments.sweep import SWEEP_DEFAULTS
from probex.experts.classifier import DenseExpert, ProbeXClassifier
from probex.experts.labels import TargetEncoding
from probex.experts.training import set_threads
from probex.jungle import SHIPPED
from probex.zoo import ModelZoo
from probex.zoo.extras import recommended_layers
from probex.zoo.records import ALIGNED

SEEDS = (0, 1, 2)
FRACTIONS = (0.1, 0.25, 0.5, 1.0)
NOISE = (0.0, 1.0, 3.0)
#: ProbeX settings tried on the mixer tree (label -> ProbeXClassifier arguments).
SETTINGS = {
    "ProbeX (default)": {},
    "linear ProbeX": {"activation": "none"},
    "probes on the output side (xtu)": {"views": "xtu"},
    "r_U 128, r_V 64, r_T 128": {"n_probes": 128, "proj_dim": 64, "rep_dim": 128},
    "r_U 16, r_V 16, r_T 16": {"n_probes": 16, "proj_dim": 16, "rep_dim": 16},
    "batch 16": {"batch_size": 16},
    "lr 3e-4, 300 epochs, patience 50": {"lr": 3e-4, "epochs": 300, "patience": 50},
}
SETTINGS_TREE = "mixer-supervised"
PARTS = ("fractions", "noise", "settings")


def _fit(kind: str, train, y, val, seed: int, classes: list, training: dict, **params):
    """One expert (train, chosen on val) with the ``training`` settings (epochs, patience) and ``params``."""
    cls = ProbeXClassifier if kind == "probex" else DenseExpert
    return cls(**{**training, "device": "cpu", "seed": seed, "classes": classes, **params}).fit(train, y, val=val)


def _summary(scores: list[float]) -> dict:
    return {"mean": float(np.mean(scores)), "seeds": [round(float(score), 4) for score in scores]}


def _compared(row: dict, scores: dict[str, list[float]], label: str) -> dict:
    """``row`` with both experts' scores over the seeds and the margin (ProbeX minus Dense), printed on one line."""
    row = {**row, "probex": _summary(scores["probex"]), "dense": _summary(scores["dense"])}
    row["margin"] = row["probex"]["mean"] - row["dense"]["mean"]
    print(f"{row['tree']:18s} {row['layer']:20s} {label}  ProbeX {row['probex']['mean']:.3f}  "
          f"Dense {row['dense']['mean']:.3f}  margin {row['margin']:+.3f}", flush=True)
    return row


def fractions(zoo, tree: str, layer: str, training: dict) -> list[dict]:
    """ProbeX and Dense on seeded random parts of the tree's training models."""
    tree_zoo = zoo.select(tree=tree)
    train, val, test = (tree_zoo.bank(layer, split=split) for split in ("train", "val", "test"))
    classes = list(TargetEncoding.from_labels(train.labels).classes)
    rows = []
    for fraction in FRACTIONS:
        n = max(2, round(fraction * len(train)))
        scores: dict[str, list[float]] = {"probex": [], "dense": []}
        sizes = {}
        for seed in SEEDS:
            chosen = np.sort(np.random.default_rng(seed).permutation(len(train))[:n]).tolist()
            for kind in scores:
                expert = _fit(kind, train[chosen], None, (val, None), seed, classes, training)
                scores[kind].append(expert.score(test))
                sizes[kind] = int(expert.n_parameters_)
        rows.append(_compared({"tree": tree, "layer": layer, "training_models": n, "of": len(train),
                               "probex_parameters": sizes["probex"], "dense_parameters": sizes["dense"]},
                              scores, f"{n:4d} of {len(train)}"))
    return rows


def noise(zoo, tree: str, layer: str, training: dict) -> list[dict]:
    """ProbeX and Dense with Gaussian noise added to every model's (merged) layer."""
    tree_zoo = zoo.select(tree=tree)
    banks = [tree_zoo.bank(layer, split=split) for split in ("train", "val", "test")]
    classes = list(TargetEncoding.from_labels(banks[0].labels).classes)
    data = [(bank.X.float(), bank.label_matrix(classes)[0].numpy()) for bank in banks]
    spread = float((data[0][0] - data[0][0].mean(dim=0)).std())
    rows = []
    for level in NOISE:
        generator = torch.Generator().manual_seed(123)
        noisy = [(X + level * spread * torch.randn(X.shape, generator=generator), y) for X, y in data]
        scores: dict[str, list[float]] = {"probex": [], "dense": []}
        for seed in SEEDS:
            for kind in scores:
                expert = _fit(kind, noisy[0][0], noisy[0][1], noisy[1], seed, classes, training)
                scores[kind].append(expert.score(*noisy[2]))
        rows.append(_compared({"tree": tree, "layer": layer, "noise": level, "deviation_sd": spread}, scores,
                              f"noise {level:g} x sd"))
    return rows


def settings(zoo, tree: str, layer: str, training: dict) -> list[dict]:
    """Other ProbeX settings against the default Dense on one tree's layer."""
    tree_zoo = zoo.select(tree=tree)
    train, val, test = (tree_zoo.bank(layer, split=split) for split in ("train", "val", "test"))
    classes = list(TargetEncoding.from_labels(train.labels).classes)
    dense = [_fit("dense", train, None, (val, None), seed, classes, training) for seed in SEEDS]
    baseline = _summary([expert.score(test) for expert in dense])
    print(f"{tree:18s} {layer:20s} Dense {baseline['mean']:.3f}  ({dense[0].n_parameters_:,} parameters)", flush=True)
    rows = []
    for label, params in SETTINGS.items():
        experts = [_fit("probex", train, None, (val, None), seed, classes, {**training, **params}) for seed in SEEDS]
        row = {"tree": tree, "layer": layer, "setting": label, "params": params,
               "probex": _summary([expert.score(test) for expert in experts]),
               "probex_parameters": int(experts[0].n_parameters_), "dense": baseline,
               "dense_parameters": int(dense[0].n_parameters_)}
        row["margin"] = row["probex"]["mean"] - baseline["mean"]
        print(f"{'':18s} {label:36s} ProbeX {row['probex']['mean']:.3f}  margin {row['margin']:+.3f}  "
              f"({row['probex_parameters']:,} parameters)", flush=True)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jungle", type=Path, default=Path(SHIPPED))
    parser.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS)
    parser.add_argument("--trees", nargs="+", default=None, help="classifier trees of the fractions part (default: all)")
    parser.add_argument("--epochs", type=int, default=SWEEP_DEFAULTS["epochs"],
                        help=f"epochs per expert (default {SWEEP_DEFAULTS['epochs']}, patience {SWEEP_DEFAULTS['patience']})")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("study_probex_vs_dense.json"))
    args = parser.parse_args()
    set_threads(int(os.environ.get("PROBEX_THREADS", "1")))
    zoo = ModelZoo.open(args.jungle)
    layers = {tree: layer for tree, layer in recommended_layers(args.jungle).items()
              if tree in zoo.trees and zoo.role(tree) is not None and zoo.role(tree).role != ALIGNED}
    unknown = sorted(set(args.trees or []) - set(layers))
    if unknown or (set(args.parts) & {"noise", "settings"} and SETTINGS_TREE not in layers):
        print(f"error: {args.jungle}: no recommended layer for the classifier tree(s) "
              f"{', '.join(unknown or [SETTINGS_TREE])} (known: {', '.join(sorted(layers)) or 'none'})", file=sys.stderr)
        sys.exit(2)
    started = time.perf_counter()
    training = {**SWEEP_DEFAULTS, "epochs": args.epochs}
    figures: dict = {"jungle": str(args.jungle), "seeds": list(SEEDS), "params": training, "layers": layers}
    if "fractions" in args.parts:
        figures["fractions"] = [row for tree in (args.trees or sorted(layers)) for row in fractions(zoo, tree, layers[tree], training)]
    if "noise" in args.parts:
        figures["noise"] = noise(zoo, SETTINGS_TREE, layers[SETTINGS_TREE], training)
    if "settings" in args.parts:
        figures["settings"] = settings(zoo, SETTINGS_TREE, layers[SETTINGS_TREE], training)
    figures.update(seconds=round(time.perf_counter() - started, 1), torch=torch.__version__,
                   machine=platform.machine(), threads=torch.get_num_threads())
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"written: {args.out} ({figures['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
