"""The evaluation harness: the paper's figures on any zoo whose trees say what they are for.

One set of functions measures what ``probex report``, ``probex jungle check``, ``probex align``
and the notebooks print; each figure comes with its chance level. Which trees are measured how
comes from their roles (:class:`~probex.zoo.TreeRole`): classifier trees predict their
training classes, aligned trees map weights into a text space and hold concepts out, a forest
is the inter-tree control::

    figures = evaluate_zoo(zoo, layers={"tree-a": "conv3.weight", "sd": "...attn2.to_q"})
    figures["router"], figures["classifiers"]["tree-a"], figures["aligned"]["sd"], figures["forest"]

Every function takes the zoo and names trees as the zoo does; none knows any zoo's tree names.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from probex.errors import ProbeXError
from probex.progress import Progress
from probex.zoo.records import ALIGNED, CLASSIFIER, FOREST

logger = logging.getLogger(__name__)

#: Trees with fewer models than this get no expert (too few to train and validate one).
MIN_MODELS = 20
#: The views of the multi-view column beside ProbeX (:mod:`probex.experts.views`).
MULTIVIEW = "all"
#: The seeds over which multi-view and single-view ProbeX are compared (the papers report means of 5 seeds).
COMPARISON_SEEDS = (0, 1, 2)
#: The view subsets of the multi-view ablation, in the order they are printed (the paper's ablation).
VIEW_SUBSETS = ("xu", "xtu", "xxtu", "xtxu", "first", "second", "all")
#: The keys of an aligned expert's figures, in the order they are printed.
ALIGNMENT_KEYS = ("in_distribution", "zero_shot", "knn", "occ_knn", "occ_ledoit_wolf", "retrieval", "search_top1")


def evaluated_trees(zoo) -> list[str]:
    """The trees an expert is trained for: classifier trees, then aligned trees, each with enough models."""
    counts: dict[str, int] = {}
    for record in zoo.records:
        if record.tree is not None:
            counts[record.tree] = counts.get(record.tree, 0) + 1
    big = {tree for tree, count in counts.items() if count >= MIN_MODELS}
    return [tree for tree in zoo.trees_with_role(CLASSIFIER) if tree in big] + \
           [tree for tree in zoo.trees_with_role(ALIGNED) if tree in big]


def task_of(zoo, tree: str) -> str:
    """The sweep task of a tree: ``"align"`` for an aligned tree, else ``"classes"``."""
    role = zoo.role(tree)
    return "align" if role is not None and role.role == ALIGNED else "classes"


def banks_for(tree_zoo, layers: Sequence[str], splits: Sequence[str]) -> dict[str, list]:
    """split -> one LayerBank per layer (the form every multi-layer expert takes)."""
    return {split: [tree_zoo.bank(layer, split=split) for layer in layers] for split in splits}


def measurable(metric: Callable[..., float], *args: Any, **kwargs: Any) -> Optional[float]:
    """The metric, or None where the population is too small for it (e.g. a one-class AUC with one model per class)."""
    try:
        return metric(*args, **kwargs)
    except ValueError as error:
        logger.warning("%s: not measurable here (%s)", metric.__name__, error)
        return None


def chance_levels(n_training: int, n_held_out: int) -> dict[str, float]:
    """The chance level of each alignment figure (:data:`ALIGNMENT_KEYS`) for these numbers of concepts."""
    return {"in_distribution": 1 / n_training, "zero_shot": 1 / n_held_out, "knn": 1 / n_training,
            "occ_knn": 0.5, "occ_ledoit_wolf": 0.5, "retrieval": 1 / n_held_out, "search_top1": 1 / n_held_out}


def aligned_splits(tree_zoo) -> tuple[str, str, str, str]:
    """(train, test, held-out validation, held-out test) of an aligned tree (ProbeXError if it holds none out)."""
    held_out = tree_zoo.held_out_splits()
    if len(held_out) < 2:
        raise ProbeXError(f"{tree_zoo.root}: measuring an aligned expert needs two held-out splits (validation and "
                          f"test, e.g. val_holdout and test_holdout); this zoo has {tree_zoo.splits}")
    return ("train", "test", held_out[0], held_out[1])


def alignment_figures(expert, banks: Mapping[str, list], held_out: Sequence[str],
                      held_out_splits: Sequence[str] = ("val_holdout", "test_holdout")) -> dict:
    """The uses of an aligned expert's space on a tree with held-out concepts (keys: :data:`ALIGNMENT_KEYS`).

    Args:
        expert: a fitted aligner.
        banks: split -> list of LayerBanks (the expert's layers) for ``train``, ``test`` and the
            two held-out splits.
        held_out: the held-out concept names.
        held_out_splits: the (validation, test) held-out splits.
    """
    from probex.experiments.metrics import cosine_similarity, knn_accuracy, one_class_auc, retrieval_precision_at_k
    from probex.experts.aligner import names_of

    held_val, held_test = held_out_splits
    names = {split: names_of(layers[0].labels) for split, layers in banks.items()}
    train_embeddings = expert.encode(banks["train"])
    test_embeddings = expert.encode(banks["test"])
    held_embeddings = np.concatenate([expert.encode(banks[held_val]), expert.encode(banks[held_test])])
    held_names = np.asarray(names[held_val] + names[held_test])
    prompt_scores = cosine_similarity(expert.encode_text(list(held_out)), held_embeddings)
    ranked = np.argsort(-prompt_scores, axis=1, kind="stable")
    training_names = sorted(set(names["train"]))
    return {
        "in_distribution": expert.score(banks["test"], names["test"], candidates=training_names),
        "zero_shot": expert.score(banks[held_test], names[held_test], candidates=list(held_out)),
        "knn": knn_accuracy(train_embeddings, names["train"], test_embeddings, names["test"], k=1),
        "occ_knn": measurable(one_class_auc, train_embeddings, names["train"], test_embeddings, names["test"],
                              method="knn", k=1),
        "occ_ledoit_wolf": measurable(one_class_auc, train_embeddings, names["train"], test_embeddings, names["test"],
                                      method="ledoit_wolf"),
        "retrieval": retrieval_precision_at_k(held_embeddings, held_names, k=1),
        "search_top1": float(np.mean([held_names[row[0]] == concept for concept, row in zip(held_out, ranked)])),
    }


def raw_weight_retrieval(banks: Mapping[str, list], held_out_splits: Sequence[str]) -> float:
    """Retrieval of held-out models on their raw (flattened) weights: the baseline an expert's space must beat."""
    from probex.experiments.metrics import retrieval_precision_at_k
    from probex.experts.aligner import names_of

    held = [np.concatenate([bank.X.float().reshape(len(bank), -1).numpy() for bank in banks[split]], axis=1)
            for split in held_out_splits]
    labels = [name for split in held_out_splits for name in names_of(banks[split][0].labels)]
    return retrieval_precision_at_k(np.concatenate(held), np.asarray(labels), k=1)


# -- per role -----------------------------------------------------------------------------------

def router_figures(zoo) -> dict:
    """Trees found on the train split without being told their number, and the held-out routing accuracy.

    The forest is left out: its models share no root, so they are not a tree to find.
    """
    from probex.trees.router import TreeRouter

    forest = set(zoo.trees_with_role(FOREST))
    trees = [tree for tree in zoo.trees if tree not in forest]
    population = zoo.select(tree=trees)
    started = time.perf_counter()
    router = TreeRouter().fit(population.select(split="train"))
    held = population.select(split=[split for split in population.splits if split != "train"])
    return {"true_trees": len(trees), "trees_found": router.n_trees_, "held_out_models": len(held),
            "held_out_accuracy": router.score(held), "seconds": round(time.perf_counter() - started, 1)}


def tree_views(zoo, tree: str) -> Optional[str]:
    """The probe views the zoo asks for on ``tree`` (its role's ``views``), or None for ProbeX's own view."""
    role = zoo.role(tree)
    return None if role is None or role.views in (None, "xu") else role.views


def tree_params(zoo, tree: str, params: dict) -> dict:
    """``params`` with the tree's own probe views (:func:`tree_views`), where the zoo names any."""
    views = tree_views(zoo, tree)
    return {**params, "views": views} if views is not None else dict(params)


def classifier_figures(zoo, tree: str, layer: str, expert_dir: Optional[Path], params: dict) -> dict:
    """Table 1's row of a classifier tree: ProbeX (shipped or trained now), Dense and StatNN on ``test``.

    ``layer`` is a hidden layer (the sweep's choice); the tree's classification head, whose rows
    are the class slots, is measured apart under ``"readout"`` (ProbeX and Dense trained now on
    it): a trivial read-out, shown beside the table, never in it. ``"probex"`` is always
    single-view ProbeX; a shipped expert with other views (a tree whose role names them) fills
    the multi-view column instead (``"multiview"``, ``"multiview_source": "shipped"``), and
    ProbeX is then trained now.
    """
    from probex.experiments.sweep import matrix_layers, readout_layers
    from probex.experts.base import load_expert
    from probex.experts.statnn import StatNNClassifier
    from probex.experts.views import SINGLE_VIEW, parse_views, views_name

    tree_zoo = zoo.select(tree=tree)
    test = tree_zoo.bank(layer, split="test")
    params = {key: value for key, value in params.items() if key != "views"}
    shipped = load_expert(expert_dir) if expert_dir is not None else None
    multiview: dict = {}
    if shipped is not None and parse_views(getattr(shipped, "views", "xu")) != SINGLE_VIEW:
        multiview = {"multiview": shipped.score(test), "multiview_parameters": shipped.n_parameters_,
                     "multiview_views": views_name(shipped.views), "multiview_source": "shipped"}
        shipped = None
    if shipped is not None:
        probex_expert, source = shipped, "shipped"
        dense = _fit_probex_and_dense(tree_zoo, layer, params, probex=False)[1]
    else:
        (probex_expert, dense), source = _fit_probex_and_dense(tree_zoo, layer, params), "trained now"
    every = [info.name for info in tree_zoo.catalog()]
    statnn = StatNNClassifier().fit([tree_zoo.bank(name, split="train") for name in every])
    row = {
        "layer": layer,
        "probex": probex_expert.score(test), "probex_parameters": probex_expert.n_parameters_, "probex_source": source,
        "dense": dense.score(test), "dense_parameters": dense.n_parameters_,
        "statnn": statnn.score([tree_zoo.bank(name, split="test") for name in every]),
        "chance": 0.5, "test_models": len(test),
        "layers_swept": len(matrix_layers(tree_zoo)),
        **multiview,
    }
    heads = sorted(readout_layers(tree_zoo) - {layer})
    if heads:
        probex_head, dense_head = _fit_probex_and_dense(tree_zoo, heads[0], params)
        head_test = tree_zoo.bank(heads[0], split="test")
        row["readout"] = {"layer": heads[0], "probex": probex_head.score(head_test),
                          "probex_parameters": probex_head.n_parameters_, "dense": dense_head.score(head_test),
                          "dense_parameters": dense_head.n_parameters_}
    return row


def _fit_probex_and_dense(tree_zoo, layer: str, params: dict, probex: bool = True) -> tuple:
    """ProbeX (unless ``probex`` is False: None) and Dense fitted on ``train`` of one layer, chosen on ``val``."""
    from probex.experts.classifier import DenseExpert, ProbeXClassifier

    train, val = (tree_zoo.bank(layer, split=split) for split in ("train", "val"))
    probex_expert = ProbeXClassifier(**params).fit(train, val=(val, None)) if probex else None
    return probex_expert, DenseExpert(**params).fit(train, val=(val, None))


def multiview_classifier_figures(tree_zoo, layer: str, params: dict, views: str = MULTIVIEW) -> dict:
    """The multi-view column of Table 1: a multi-view ProbeX trained now on ``layer`` (train, chosen on val), on test."""
    from probex.experts.classifier import ProbeXClassifier
    from probex.experts.views import views_name

    train, val, test = (tree_zoo.bank(layer, split=split) for split in ("train", "val", "test"))
    expert = ProbeXClassifier(**{**params, "views": views}).fit(train, val=(val, None))
    return {"multiview": expert.score(test), "multiview_parameters": expert.n_parameters_,
            "multiview_views": views_name(views), "multiview_source": "trained now"}


def multiview_columns(zoo, tree: str, row: dict, params: dict) -> dict:
    """The multi-view columns of a Table 1 row (:func:`classifier_figures`): multi-view ProbeX with the tree's own
    views (its role's), else all four, trained now on the row's layer unless a shipped expert filled them, and
    :func:`views_comparison` over seeds."""
    tree_zoo = zoo.select(tree=tree)
    views = tree_views(zoo, tree) or MULTIVIEW
    columns = {} if "multiview" in row else multiview_classifier_figures(tree_zoo, row["layer"], params, views)
    return {**columns, "views_comparison": views_comparison(tree_zoo, row["layer"], params, views)}


def views_comparison(tree_zoo, layer: str, params: dict, views: str = MULTIVIEW,
                     seeds: Sequence[int] = COMPARISON_SEEDS) -> dict:
    """Multi-view against single-view ProbeX on one layer over several seeds, everything else equal.

    One expert's score moves with its seed (and, through the order of floating-point sums, with
    torch's thread count) by about a point on the demo jungle, as much as the gap in question; so
    both are trained now with each seed (train, chosen on val, scored on test) and the gap is read
    off the means. Returns ``{"views", "seeds", "probex": [..], "multiview": [..], "probex_mean",
    "multiview_mean", "gap" (multi-view minus ProbeX, of the means), "gap_sd" (of the per-seed gaps),
    "threads"}``.
    """
    import torch

    from probex.experts.classifier import ProbeXClassifier
    from probex.experts.views import views_name

    train, val, test = (tree_zoo.bank(layer, split=split) for split in ("train", "val", "test"))
    params = {key: value for key, value in params.items() if key not in ("views", "seed")}
    single, multi = [], []
    for seed in seeds:
        for scores, chosen in ((single, "xu"), (multi, views)):
            expert = ProbeXClassifier(**{**params, "seed": seed, "views": chosen}).fit(train, val=(val, None))
            scores.append(expert.score(test))
    gaps = np.subtract(multi, single)
    return {"views": views_name(views), "seeds": list(seeds), "probex": single, "multiview": multi,
            "probex_mean": float(np.mean(single)), "multiview_mean": float(np.mean(multi)),
            "gap": float(np.mean(gaps)), "gap_sd": float(np.std(gaps)), "threads": torch.get_num_threads()}


def parameter_lesson(row: dict) -> Optional[dict]:
    """The paper's parameter lesson on one Table 1 row: the best ProbeX expert (single- or multi-view) against
    Dense on the same layer; ``{"expert", "views", "score", "parameters", "margin", "fewer"}`` (margin: its score
    minus Dense's; fewer: Dense's parameters over its), or None without a Dense figure."""
    if row.get("dense") is None:
        return None
    candidates = [("ProbeX", "xu", row["probex"], row["probex_parameters"])]
    if row.get("multiview") is not None:
        candidates.append(("multi-view ProbeX", row["multiview_views"], row["multiview"], row["multiview_parameters"]))
    expert, views, score, parameters = max(candidates, key=lambda candidate: candidate[2])
    return {"expert": expert, "views": views, "score": score, "parameters": int(parameters),
            "margin": score - row["dense"], "fewer": row["dense_parameters"] / max(int(parameters), 1)}


def view_ablation(tree_zoo, layer: str, task: str, params: dict, subsets: Sequence[str] = VIEW_SUBSETS,
                  progress: Optional[Progress] = None) -> dict:
    """One ProbeX expert per view subset on one layer, all else equal (the paper's multi-view ablation).

    Returns ``{"layer", "task", "metric", "rows": [{"views", "score", "val", "n_parameters"}, ...]}`` (in the
    order of ``subsets``):
    test mean binary accuracy for ``task="classes"`` (trained on train, chosen on val); zero-shot
    top-1 on the held-out test split for ``task="align"`` (chosen on the held-out validation split).
    """
    from probex.experts.aligner import ProbeXAligner, names_of
    from probex.experts.classifier import ProbeXClassifier
    from probex.experts.views import views_name

    if task == "align":
        splits = aligned_splits(tree_zoo)
        banks = banks_for(tree_zoo, [layer], splits)
        held_out = sorted(set(names_of(banks[splits[3]][0].labels)))
        metric = "zero-shot top-1 (held-out test)"
    else:
        banks = {split: tree_zoo.bank(layer, split=split) for split in ("train", "val", "test")}
        metric = "test mean binary accuracy"

    def fitted_score(views: str) -> tuple[Any, float]:
        if task == "align":
            expert = ProbeXAligner(**{**params, "views": views}).fit(banks["train"], val=(banks[splits[2]], None))
            return expert, expert.score(banks[splits[3]], candidates=held_out)
        expert = ProbeXClassifier(**{**params, "views": views}).fit(banks["train"], val=(banks["val"], None))
        return expert, expert.score(banks["test"])

    rows = []
    for done, views in enumerate(subsets):
        if progress is not None:
            progress(done, len(subsets), views)
        expert, score = fitted_score(views)
        rows.append({"views": views_name(views), "score": score, "n_parameters": int(expert.n_parameters_),
                     "val": max((log.val_score for log in expert.history_ if log.val_score is not None), default=None)})
    return {"layer": layer, "task": task, "metric": metric, "rows": rows}


def forest_figures(zoo, params: dict) -> dict:
    """The forest as one population: ProbeX at its best layer by validation (the inter-tree control)."""
    from probex.experiments.sweep import sweep_layers

    forest = zoo.select(tree=zoo.trees_with_role(FOREST))
    best = sweep_layers(forest, "classes", params=params).best
    return {"models": len(forest), "layer": best.layer, "probex": best.test, "val": best.val, "chance": 0.5}


def aligned_figures(zoo, tree: str, expert_dir: Optional[Path], recommended: Optional[str], params: dict) -> dict:
    """An aligned tree's figures: its expert (shipped, or trained now on ``recommended``), the best single
    layer with ReLU and without (the paper's ablation) and with multi-view probes (:data:`MULTIVIEW`),
    raw-weight retrieval, and the chance levels."""
    from probex.experts.aligner import ProbeXAligner, names_of
    from probex.experts.base import load_expert

    tree_zoo = zoo.select(tree=tree)
    splits = aligned_splits(tree_zoo)
    held_val, held_test = splits[2], splits[3]
    if expert_dir is not None:
        shipped = load_expert(expert_dir)
    else:
        if recommended is None:
            raise ProbeXError(f"{tree}: neither a shipped aligner nor a recommended layer to train one on")
        banks = banks_for(tree_zoo, [recommended], splits)
        shipped = ProbeXAligner(**params).fit(banks["train"], val=(banks[held_val], None))
        shipped.layers_ = [recommended]
    layers = list(shipped.layers_)
    banks = banks_for(tree_zoo, layers, splits)
    held_out = sorted(set(names_of(banks[held_test][0].labels)))
    training = sorted(set(names_of(banks["train"][0].labels)))
    result = {"expert": {"layers": layers, "source": "shipped" if expert_dir is not None else "trained now",
                         **alignment_figures(shipped, banks, held_out, (held_val, held_test)),
                         "n_parameters": shipped.n_parameters_}}
    single = recommended or layers[0]
    single_banks = banks_for(tree_zoo, [single], splits)
    variants = (("single_layer", {"activation": "relu"}), ("linear_single_layer", {"activation": "none"}),
                ("multiview_single_layer", {"activation": "relu", "views": MULTIVIEW}))
    for name, overrides in variants:
        expert = ProbeXAligner(**{**params, **overrides}).fit(single_banks["train"], val=(single_banks[held_val], None))
        result[name] = {"layer": single, **alignment_figures(expert, single_banks, held_out, (held_val, held_test))}
    result["raw_weights_retrieval"] = raw_weight_retrieval(single_banks, (held_val, held_test))
    result["chance"] = chance_levels(len(training), len(held_out))
    result["concepts"] = {"training": len(training), "held_out": len(held_out)}
    return result


def evaluate_zoo(zoo, layers: Mapping[str, str], experts: Optional[Mapping[str, Path]] = None,
                 params: Optional[dict] = None, progress: Optional[Progress] = None) -> dict:
    """Every figure the zoo's roles allow, at the given layer per tree (and shipped experts where given).

    Returns ``{"router", "classifiers": {tree: row}, "aligned": {tree: figures}, "forest", "seconds"}``;
    the router needs two trees, the forest a tree with the forest role.

    Raises:
        ProbeXError: a tree to evaluate has no layer (run a sweep first, e.g. ``probex jungle validate``).
    """
    from probex.experiments.sweep import SWEEP_DEFAULTS

    params = {**SWEEP_DEFAULTS, "device": "auto", **(params or {})}
    experts = dict(experts or {})
    trees = evaluated_trees(zoo)
    missing = [tree for tree in trees if tree not in layers and tree not in experts]
    if missing:
        raise ProbeXError(f"{zoo.root}: no layer chosen for {', '.join(missing)}; sweep the trees first "
                          "(`probex sweep --tree all`) or pass a layer per tree")
    steps = (["router"] if len(zoo.trees) - len(zoo.trees_with_role(FOREST)) >= 2 else []) + trees
    steps += ["forest"] if zoo.trees_with_role(FOREST) else []
    figures: dict[str, Any] = {"models": len(zoo), "params": params, "classifiers": {}, "aligned": {}}
    started = time.perf_counter()
    for done, step in enumerate(steps):
        if progress is not None:
            progress(done, len(steps), step)
        if step == "router":
            figures["router"] = router_figures(zoo)
        elif step == "forest":
            figures["forest"] = forest_figures(zoo, params)
        elif zoo.role(step).role == ALIGNED:
            figures["aligned"][step] = aligned_figures(zoo, step, experts.get(step), layers.get(step), params)
        else:
            row = classifier_figures(zoo, step, layers[step], experts.get(step), params)
            figures["classifiers"][step] = {**row, **multiview_columns(zoo, step, row, params)}
    if progress is not None:
        progress(len(steps), len(steps), "done")
    figures["seconds"] = round(time.perf_counter() - started, 1)
    return figures


def format_figures(figures: dict, title: str) -> str:
    """The figures of :func:`evaluate_zoo` as a short plain-text table, each with its chance level."""
    lines = [f"{title} ({figures['models']} models)"]
    router = figures.get("router")
    if router:
        lines.append(f"router: {router['trees_found']} trees found ({router['true_trees']} true), "
                     f"held-out routing accuracy {router['held_out_accuracy']:.3f} on {router['held_out_models']} models")
    if figures["classifiers"]:
        lines.append("training-class prediction, test split, mean binary accuracy (chance 0.5):")
        lines.append(f"  {'tree':18s} {'layer':28s} {'ProbeX':>7s} {'params':>8s} {'Dense':>7s} {'params':>8s} {'StatNN':>7s}")
        for tree, row in figures["classifiers"].items():
            lines.append(f"  {tree:18s} {row['layer']:28s} {row['probex']:7.3f} {row['probex_parameters']:8d} "
                         f"{row['dense']:7.3f} {row['dense_parameters']:8d} {row['statnn']:7.3f}")
        readouts = {tree: row["readout"] for tree, row in figures["classifiers"].items() if row.get("readout")}
        if readouts:
            lines.append("  the heads' read-out (their rows are the class slots: trivial, kept out of the table):")
            for tree, head in readouts.items():
                lines.append(f"  {tree:18s} {head['layer']:28s} {head['probex']:7.3f} {head['probex_parameters']:8d} "
                             f"{head['dense']:7.3f} {head['dense_parameters']:8d}")
    forest = figures.get("forest")
    if forest:
        lines.append(f"  {'forest':18s} {forest['layer']:28s} {forest['probex']:7.3f}   "
                     f"(best layer by validation, {forest['models']} models)")
    for tree, aligned in figures["aligned"].items():
        lines.append(f"alignment of {tree} with text ({aligned['concepts']['training']} training concepts, "
                     f"{aligned['concepts']['held_out']} held out):")
        lines.append(f"  {'expert':34s} " + " ".join(f"{key[:9]:>9s}" for key in ALIGNMENT_KEYS))
        lines.append(f"  {'chance':34s} " + " ".join(f"{aligned['chance'][key]:9.3f}" for key in ALIGNMENT_KEYS))
        for name, label in (("expert", ""), ("single_layer", "ReLU: "), ("linear_single_layer", "linear: "),
                            ("multiview_single_layer", "multi-view: ")):
            row = aligned.get(name)
            if row is None:  # figures measured before multi-view probes
                continue
            label = (label or f"{row.get('source', 'expert')}: ") + "+".join(_short(layer) for layer in row.get("layers", [row.get("layer")]))
            lines.append(f"  {label:34s} " + " ".join(_figure(row[key]) for key in ALIGNMENT_KEYS))
        lines.append(f"  raw-weight retrieval (same layer): {aligned['raw_weights_retrieval']:.3f}")
    multiview = {tree: row for tree, row in figures["classifiers"].items() if "multiview" in row}
    if multiview:
        lines.append("multi-view probes beside single-view ProbeX (same layer, test mean binary accuracy):")
        for tree, row in multiview.items():
            lines.append(f"  {tree:18s} {row['layer']:28s} ProbeX {row['probex']:.3f} ({row['probex_parameters']:,} "
                         f"parameters), multi-view {row['multiview_views']} {row['multiview']:.3f} "
                         f"({row['multiview_parameters']:,} parameters, {row.get('multiview_source', 'trained now')})")
    compared = {tree: row["views_comparison"] for tree, row in figures["classifiers"].items() if "views_comparison" in row}
    if compared:
        seeds = next(iter(compared.values()))["seeds"]
        lines.append(f"multi-view minus single-view ProbeX, both trained now with seeds {', '.join(map(str, seeds))} "
                     f"(means; the spread is of the per-seed gaps):")
        for tree, comparison in compared.items():
            lines.append(f"  {tree:18s} {comparison['views']:8s} ProbeX {comparison['probex_mean']:.3f}, multi-view "
                         f"{comparison['multiview_mean']:.3f}: {comparison['gap']:+.3f} +- {comparison['gap_sd']:.3f}")
    lessons = {tree: parameter_lesson(row) for tree, row in figures["classifiers"].items()}
    lessons = {tree: lesson for tree, lesson in lessons.items() if lesson is not None}
    if lessons:
        lines.append("the parameter lesson: the best ProbeX expert against Dense on the same layer:")
        for tree, lesson in lessons.items():
            row = figures["classifiers"][tree]
            lines.append(f"  {tree:18s} {lesson['expert']} ({lesson['views']}) {lesson['score']:.3f} vs Dense "
                         f"{row['dense']:.3f}: {lesson['margin']:+.3f}, {lesson['fewer']:.1f}x fewer parameters "
                         f"({lesson['parameters']:,} vs {row['dense_parameters']:,})")
    lines.append(f"measured in {figures['seconds']} s")
    return "\n".join(lines)


def _short(layer: str) -> str:
    return layer.replace("unet.", "").replace(".attn.to_", ".")


def _figure(value: Optional[float]) -> str:
    return f"{'n/a':>9s}" if value is None else f"{value:9.3f}"
