"""Aligned experts on the demo jungle's generative tree: in-distribution, zero-shot, kNN, OCC, retrieval, search.

    python benchmarks/bench_alignment.py --zoo /tmp/gfinal/generative
    python benchmarks/bench_alignment.py --zoo DIR --epochs 150 --only probex-mid.q
    python benchmarks/bench_alignment.py --only probex-mid.q linear-mid.q --seeds 1 2   # adds rows NAME@seedS

Every configuration is an aligned expert (text encoder "minilm", prompt "a photo of a {}")
trained on the ``train`` split (48 in-distribution concepts), its epoch chosen by zero-shot
top-1 on ``val_holdout`` (8 of the 16 held-out concepts' models; the held-out concepts are
the same in val_holdout and test_holdout, the models differ). Figures, all on models never
seen in training:

- in_dist: top-1 over the 48 training concepts on ``test`` (chance 1/48 = 0.021);
- zero_shot: top-1 over the 16 held-out concepts on ``test_holdout`` (chance 1/16 = 0.0625);
- zero_shot_64: the same models, candidates all 64 concept names (chance 0.016);
- knn: 1-NN (cosine) of ``test`` embeddings against ``train`` embeddings (chance 0.021);
- occ_knn / occ_lw: one-class mean ROC-AUC over the 48 classes (train -> test; chance 0.5);
- retrieval: held-out models (val_holdout + test_holdout), does the nearest other one share
  its concept (precision@1; chance about 1/16);
- search: for each held-out concept, the prompt's text embedding ranks all held-out models;
  hit rate of the top-1 model having that concept (and precision@5).

Writes ``bench_alignment.json`` beside this script. Runs with one CPU thread by default (the
machines are shared); fit times are wall-clock seconds.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from probex.experts.aligner import DenseAligner, ProbeXAligner, StatNNAligner, names_of
from probex.experiments.metrics import cosine_similarity, knn_accuracy, one_class_auc, retrieval_precision_at_k
from probex.zoo import ModelZoo

SHORT = {
    "down.q": "unet.down.attn.to_q",
    "mid.q": "unet.mid.attn.to_q",
    "up.q": "unet.up.attn.to_q",
    "down.k": "unet.down.attn.to_k",
    "mid.k": "unet.mid.attn.to_k",
}

# name -> (expert class, constructor overrides, layers)
CONFIGS = {
    "probex-mid.q": (ProbeXAligner, {}, ["mid.q"]),
    "linear-mid.q": (ProbeXAligner, {"activation": "none"}, ["mid.q"]),
    "probex-down.q": (ProbeXAligner, {}, ["down.q"]),
    "probex-down.q+mid.q": (ProbeXAligner, {}, ["down.q", "mid.q"]),
    "linear-down.q+mid.q": (ProbeXAligner, {"activation": "none"}, ["down.q", "mid.q"]),
    "probex-mid.k": (ProbeXAligner, {}, ["mid.k"]),
    "probex-down.k": (ProbeXAligner, {}, ["down.k"]),
    "probex-up.q": (ProbeXAligner, {}, ["up.q"]),
    "linear-down.q": (ProbeXAligner, {"activation": "none"}, ["down.q"]),
    "dense-mid.q": (DenseAligner, {}, ["mid.q"]),
    "statnn-linear-all": (StatNNAligner, {"model": "linear"}, list(SHORT)),
    "statnn-mlp-all": (StatNNAligner, {"model": "mlp"}, list(SHORT)),
}


def load_banks(zoo: ModelZoo, layers: list[str]) -> dict[str, dict[str, object]]:
    splits = ("train", "val_holdout", "test", "test_holdout")
    return {short: {split: zoo.bank(SHORT[short], split=split) for split in splits} for short in layers}


def evaluate(expert, banks: dict, layers: list[str], held_out: list[str], all_names: list[str]) -> dict:
    def X(split: str) -> list:
        return [banks[layer][split] for layer in layers]

    first = banks[layers[0]]
    names = {split: names_of(first[split].labels) for split in first}
    train_embeddings = expert.encode(X("train"))
    test_embeddings = expert.encode(X("test"))
    held_embeddings = np.concatenate([expert.encode(X("val_holdout")), expert.encode(X("test_holdout"))])
    held_names = np.asarray(names["val_holdout"] + names["test_holdout"])
    prompt_scores = cosine_similarity(expert.encode_text(held_out), held_embeddings)  # [16, N_held]
    ranked = np.argsort(-prompt_scores, axis=1, kind="stable")
    hits_top1 = [held_names[row[0]] == concept for concept, row in zip(held_out, ranked)]
    precision5 = [float(np.mean(held_names[row[:5]] == concept)) for concept, row in zip(held_out, ranked)]
    return {
        "in_dist": expert.score(X("test"), names["test"]),
        "zero_shot": expert.score(X("test_holdout"), names["test_holdout"], candidates=held_out),
        "zero_shot_64": expert.score(X("test_holdout"), names["test_holdout"], candidates=all_names),
        "knn": knn_accuracy(train_embeddings, names["train"], test_embeddings, names["test"], k=1),
        "occ_knn": one_class_auc(train_embeddings, names["train"], test_embeddings, names["test"], method="knn", k=1),
        "occ_lw": one_class_auc(train_embeddings, names["train"], test_embeddings, names["test"], method="ledoit_wolf"),
        "retrieval": retrieval_precision_at_k(held_embeddings, held_names, k=1),
        "search_top1": float(np.mean(hits_top1)),
        "search_p5": float(np.mean(precision5)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", type=Path, default=Path("/tmp/gfinal/generative"))
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="one run per seed; rows of seeds other than 0 are named NAME@seedS")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", nargs="*", default=None, help="configuration names (default: all)")
    parser.add_argument("--json", type=Path, default=Path(__file__).with_suffix(".json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    zoo = ModelZoo.open(args.zoo)
    configs = {name: CONFIGS[name] for name in (args.only or CONFIGS)}
    layers = sorted({layer for _, _, used in configs.values() for layer in used})
    banks = load_banks(zoo, layers)
    first = banks[layers[0]]
    train_names = sorted(set(names_of(first["train"].labels)))
    held_out = sorted(set(names_of(first["test_holdout"].labels)))
    all_names = sorted(set(train_names) | set(held_out))
    print(f"{args.zoo}: {len(train_names)} training concepts, {len(held_out)} held-out; "
          f"models train {len(first['train'])}, test {len(first['test'])}, val_holdout {len(first['val_holdout'])}, "
          f"test_holdout {len(first['test_holdout'])}")

    def write(results: dict) -> None:
        report = {
            "zoo": str(args.zoo),
            "epochs": args.epochs,
            "threads": args.threads,
            "machine": platform.platform(),
            "chance": {"in_dist": 1 / len(train_names), "zero_shot": 1 / len(held_out), "zero_shot_64": 1 / len(all_names),
                       "knn": 1 / len(train_names), "occ": 0.5, "retrieval": 1 / len(held_out), "search_top1": 1 / len(held_out)},
            "results": {**previous, **results},  # a partial run (--only) updates its own rows
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")

    previous = json.loads(args.json.read_text()).get("results", {}) if args.only and args.json.is_file() else {}
    results = {}
    header = f"{'configuration':24s} {'in_dist':>7s} {'zero':>6s} {'zero64':>6s} {'knn':>6s} {'occ_knn':>7s} {'occ_lw':>6s} {'retr':>6s} {'srch1':>6s} {'srch5':>6s} {'epoch':>5s} {'params':>8s} {'fit_s':>6s}"
    print(header)
    runs = [(name if seed == 0 else f"{name}@seed{seed}", seed, config) for name, config in configs.items() for seed in args.seeds]
    for name, seed, (cls, overrides, used) in runs:
        expert = cls(epochs=args.epochs, seed=seed, device="cpu", **overrides)
        started = time.perf_counter()
        expert.fit([banks[layer]["train"] for layer in used], val=([banks[layer]["val_holdout"] for layer in used], None))
        fit_seconds = time.perf_counter() - started
        figures = evaluate(expert, banks, used, held_out, all_names)
        figures.update(
            layers=[SHORT[layer] for layer in used],
            best_epoch=expert.best_epoch_,
            n_parameters=expert.n_parameters_,
            fit_seconds=round(fit_seconds, 1),
            temperature=round(expert.temperature_, 4),
            params={k: v for k, v in expert.get_params().items() if k in overrides or k in ("epochs", "seed")},
        )
        results[name] = figures
        write(results)  # after every configuration: a long run keeps what it measured
        print(f"{name:24s} {figures['in_dist']:7.3f} {figures['zero_shot']:6.3f} {figures['zero_shot_64']:6.3f} "
              f"{figures['knn']:6.3f} {figures['occ_knn']:7.3f} {figures['occ_lw']:6.3f} {figures['retrieval']:6.3f} "
              f"{figures['search_top1']:6.3f} {figures['search_p5']:6.3f} {expert.best_epoch_:5d} {expert.n_parameters_:8d} {fit_seconds:6.1f}",
              flush=True)

    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
