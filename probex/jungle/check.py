"""The demo jungle's acceptance figures, measured on a built (or the shipped) jungle.

``check_jungle(path)`` measures, on models never seen in training:

- router: the trees found on the ``train`` split without being told their number, and the
  routing accuracy of every other model (the forest is left out: its models are one-model trees);
- per discriminative tree, at its recommended layer: the shipped ProbeX expert, a Dense expert
  and StatNN (all layers) on ``test`` (mean binary accuracy, chance 0.5) with parameter counts;
  the forest: ProbeX at its best layer by validation;
- the generative tree: the shipped aligner (in-distribution top-1 over the training concepts,
  zero-shot top-1 over the held-out concepts, kNN, one-class ROC-AUC, prompt search, retrieval),
  the best single layer, the linear ProbeX (``activation="none"``) on that layer, and retrieval
  on the raw weights.

Every figure comes with its chance level. ``probex jungle check`` prints them and writes
``check.json`` into the jungle.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from probex.errors import ProbeXError
from probex.progress import Progress

logger = logging.getLogger(__name__)

FOREST_PREFIX = "forest-"


def alignment_figures(expert, banks: dict[str, list], held_out: Sequence[str]) -> dict:
    """The uses of an aligned expert's space on a zoo with held-out classes.

    Args:
        expert: a fitted aligner.
        banks: split -> list of LayerBanks (the expert's layers) for "train", "test",
            "val_holdout", "test_holdout".
        held_out: the held-out class names.
    """
    from probex.experts.aligner import names_of
    from probex.experiments.metrics import cosine_similarity, knn_accuracy, one_class_auc, retrieval_precision_at_k

    names = {split: names_of(layers[0].labels) for split, layers in banks.items()}
    train_embeddings = expert.encode(banks["train"])
    test_embeddings = expert.encode(banks["test"])
    held_embeddings = np.concatenate([expert.encode(banks["val_holdout"]), expert.encode(banks["test_holdout"])])
    held_names = np.asarray(names["val_holdout"] + names["test_holdout"])
    prompt_scores = cosine_similarity(expert.encode_text(list(held_out)), held_embeddings)
    ranked = np.argsort(-prompt_scores, axis=1, kind="stable")
    training_names = sorted(set(names["train"]))
    return {
        "in_distribution": expert.score(banks["test"], names["test"], candidates=training_names),
        "zero_shot": expert.score(banks["test_holdout"], names["test_holdout"], candidates=list(held_out)),
        "knn": knn_accuracy(train_embeddings, names["train"], test_embeddings, names["test"], k=1),
        "occ_knn": _unless_undefined(one_class_auc, train_embeddings, names["train"], test_embeddings, names["test"], method="knn", k=1),
        "occ_ledoit_wolf": _unless_undefined(one_class_auc, train_embeddings, names["train"], test_embeddings, names["test"],
                                             method="ledoit_wolf"),
        "retrieval": retrieval_precision_at_k(held_embeddings, held_names, k=1),
        "search_top1": float(np.mean([held_names[row[0]] == concept for concept, row in zip(held_out, ranked)])),
    }


def _unless_undefined(metric, *args, **kwargs) -> Optional[float]:
    """The metric, or None where the population is too small for it (e.g. a one-class AUC with one model per class)."""
    try:
        return metric(*args, **kwargs)
    except ValueError as error:
        logger.warning("%s: not measurable here (%s)", metric.__name__, error)
        return None


def _figure(value: Optional[float]) -> str:
    return f"{'n/a':>9s}" if value is None else f"{value:9.3f}"


def _raw_retrieval(banks: dict[str, list]) -> float:
    from probex.experts.aligner import names_of
    from probex.experiments.metrics import retrieval_precision_at_k

    held = [np.concatenate([bank.X.float().reshape(len(bank), -1).numpy() for bank in banks[split]], axis=1)
            for split in ("val_holdout", "test_holdout")]
    labels = names_of(banks["val_holdout"][0].labels) + names_of(banks["test_holdout"][0].labels)
    return retrieval_precision_at_k(np.concatenate(held), np.asarray(labels), k=1)


def check_router(zoo) -> dict:
    from probex.trees.router import TreeRouter

    trees = [tree for tree in zoo.trees if not tree.startswith(FOREST_PREFIX)]
    population = zoo.select(tree=trees)
    started = time.perf_counter()
    router = TreeRouter().fit(population.select(split="train"))
    held = population.select(split=[split for split in population.splits if split != "train"])
    return {"true_trees": len(trees), "trees_found": router.n_trees_, "held_out_models": len(held),
            "held_out_accuracy": router.score(held), "seconds": round(time.perf_counter() - started, 1)}


def check_discriminative(zoo, tree: str, layer: str, expert_dir: Optional[Path], params: dict) -> dict:
    from probex.experts.classifier import DenseExpert
    from probex.experts.base import load_expert
    from probex.experts.statnn import StatNNClassifier
    from probex.experiments.sweep import matrix_layers

    tree_zoo = zoo.select(tree=tree)
    train, val, test = (tree_zoo.bank(layer, split=split) for split in ("train", "val", "test"))
    if expert_dir is not None:
        probex_expert = load_expert(expert_dir)
        source = "shipped"
    else:
        from probex.experts.classifier import ProbeXClassifier

        probex_expert = ProbeXClassifier(**params).fit(train, val=(val, None))
        source = "trained now"
    dense = DenseExpert(**params).fit(train, val=(val, None))
    every = [info.name for info in tree_zoo.catalog()]
    statnn = StatNNClassifier().fit([tree_zoo.bank(name, split="train") for name in every])
    return {
        "layer": layer,
        "probex": probex_expert.score(test), "probex_parameters": probex_expert.n_parameters_, "probex_source": source,
        "dense": dense.score(test), "dense_parameters": dense.n_parameters_,
        "statnn": statnn.score([tree_zoo.bank(name, split="test") for name in every]),
        "chance": 0.5, "test_models": len(test),
        "layers_swept": len(matrix_layers(tree_zoo)),
    }


def check_forest(zoo, params: dict) -> dict:
    from probex.experiments.sweep import sweep_layers

    forest = zoo.select(tree=[tree for tree in zoo.trees if tree.startswith(FOREST_PREFIX)])
    result = sweep_layers(forest, "classes", params=params)
    best = result.best
    return {"models": len(forest), "layer": best.layer, "probex": best.test, "val": best.val, "chance": 0.5}


def check_generative(zoo, tree: str, expert_dir: Optional[Path], recommended: Optional[str], params: dict) -> dict:
    from probex.experts.aligner import ProbeXAligner, names_of
    from probex.experts.base import load_expert

    tree_zoo = zoo.select(tree=tree)
    splits = ("train", "test", "val_holdout", "test_holdout")

    def banks_for(layers: list[str]) -> dict[str, list]:
        return {split: [tree_zoo.bank(layer, split=split) for layer in layers] for split in splits}

    if expert_dir is not None:
        shipped = load_expert(expert_dir)
    else:
        layers = [recommended] if recommended else None
        if layers is None:
            raise ProbeXError(f"{tree}: neither a shipped aligner nor a recommended layer to train one on")
        banks = banks_for(layers)
        shipped = ProbeXAligner(**params).fit(banks["train"], val=(banks["val_holdout"], None))
        shipped.layers_ = layers
    layers = list(shipped.layers_)
    banks = banks_for(layers)
    held_out = sorted(set(names_of(banks["test_holdout"][0].labels)))
    training = sorted(set(names_of(banks["train"][0].labels)))
    result = {"shipped": {"layers": layers, **alignment_figures(shipped, banks, held_out),
                          "n_parameters": shipped.n_parameters_}}
    single = recommended or layers[0]
    single_banks = banks_for([single])
    figures = {}
    for name, activation in (("relu", "relu"), ("linear", "none")):
        expert = ProbeXAligner(**{**params, "activation": activation}).fit(single_banks["train"], val=(single_banks["val_holdout"], None))
        figures[name] = alignment_figures(expert, single_banks, held_out)
    result["single_layer"] = {"layer": single, **figures["relu"]}
    result["linear_single_layer"] = {"layer": single, **figures["linear"]}
    result["raw_weights_retrieval"] = _raw_retrieval(single_banks)
    result["chance"] = {"in_distribution": 1 / len(training), "zero_shot": 1 / len(held_out), "knn": 1 / len(training),
                        "occ": 0.5, "retrieval": 1 / len(held_out), "search_top1": 1 / len(held_out)}
    result["concepts"] = {"training": len(training), "held_out": len(held_out)}
    return result


def check_jungle(path: str | Path, params: Optional[dict] = None, progress: Optional[Progress] = None) -> dict:
    """Every acceptance figure of the jungle at ``path`` (see the module docstring); also written to check.json."""
    from probex.jungle.validation import GENERATIVE_TREE, expert_dirs, read_recommended, trees_to_validate
    from probex.storage import atomic_write_json
    from probex.experiments.sweep import SWEEP_DEFAULTS
    from probex.zoo import ModelZoo

    path = Path(path)
    zoo = ModelZoo.open(path)
    params = {**SWEEP_DEFAULTS, "device": "auto", **(params or {})}
    recommended = read_recommended(path)
    experts = expert_dirs(path)
    trees = trees_to_validate(zoo)
    steps = ["router"] + trees + (["forest"] if any(t.startswith(FOREST_PREFIX) for t in zoo.trees) else [])
    report: dict = {"jungle": str(path), "models": len(zoo), "params": params, "discriminative": {}}
    started = time.perf_counter()
    for done, step in enumerate(steps):
        if progress is not None:
            progress(done, len(steps), step)
        if step == "router":
            report["router"] = check_router(zoo)
        elif step == "forest":
            report["forest"] = check_forest(zoo, params)
        elif step == GENERATIVE_TREE:
            report["generative"] = check_generative(zoo, step, experts.get(step), recommended.get(step), params)
        else:
            layer = recommended.get(step)
            if layer is None:
                raise ProbeXError(f"{path}: no recommended layer for {step}; run `probex jungle validate {path}` first")
            report["discriminative"][step] = check_discriminative(zoo, step, layer, experts.get(step), params)
    if progress is not None:
        progress(len(steps), len(steps), "done")
    report["seconds"] = round(time.perf_counter() - started, 1)
    atomic_write_json(path / "check.json", report)
    return report


def format_report(report: dict) -> str:
    """The figures as a short plain-text table, each with its chance level."""
    lines = [f"demo jungle: {report['jungle']} ({report['models']} models)"]
    router = report.get("router")
    if router:
        lines.append(f"router: {router['trees_found']} trees found ({router['true_trees']} true), "
                     f"held-out routing accuracy {router['held_out_accuracy']:.3f} on {router['held_out_models']} models")
    if report["discriminative"]:
        lines.append("training-class prediction, test split, mean binary accuracy (chance 0.5):")
        lines.append(f"  {'tree':18s} {'layer':28s} {'ProbeX':>7s} {'params':>8s} {'Dense':>7s} {'params':>8s} {'StatNN':>7s}")
        for tree, row in report["discriminative"].items():
            lines.append(f"  {tree:18s} {row['layer']:28s} {row['probex']:7.3f} {row['probex_parameters']:8d} "
                         f"{row['dense']:7.3f} {row['dense_parameters']:8d} {row['statnn']:7.3f}")
    forest = report.get("forest")
    if forest:
        lines.append(f"  {'forest':18s} {forest['layer']:28s} {forest['probex']:7.3f}   (best layer by validation, {forest['models']} models)")
    generative = report.get("generative")
    if generative:
        chance = generative["chance"]
        lines.append(f"alignment with MiniLM ({generative['concepts']['training']} training concepts, "
                     f"{generative['concepts']['held_out']} held out):")
        keys = ("in_distribution", "zero_shot", "knn", "occ_knn", "occ_ledoit_wolf", "retrieval", "search_top1")
        lines.append(f"  {'expert':34s} " + " ".join(f"{key[:9]:>9s}" for key in keys))
        lines.append(f"  {'chance':34s} " + " ".join(f"{chance.get(key, chance['occ'] if key.startswith('occ') else 0):9.3f}" for key in keys))
        for name in ("shipped", "single_layer", "linear_single_layer"):
            row = generative[name]
            label = {"shipped": "shipped: ", "single_layer": "ReLU: ", "linear_single_layer": "linear: "}[name]
            label += "+".join(layer.replace("unet.", "").replace(".attn.to_", ".") for layer in (row["layers"] if "layers" in row else [row["layer"]]))
            lines.append(f"  {label:34s} " + " ".join(_figure(row[key]) for key in keys))
        lines.append(f"  raw-weight retrieval (same layer): {generative['raw_weights_retrieval']:.3f}")
    lines.append(f"measured in {report['seconds']} s")
    return "\n".join(lines)
