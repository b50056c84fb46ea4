"""The build's own validation sweep: the recommended layer of every tree, and the experts shipped with it.

After the models are written, ``validate_jungle(path)`` sweeps every matrix layer of every tree
(:func:`probex.experiments.sweep.sweep_layers`: train on ``train``, choose on the validation split), and
writes into the jungle::

    recommended_layers.json    {tree: best layer by validation}   -> jungle.RECOMMENDED_LAYERS
    sweeps/<tree>.jsonl        one row per layer: validation and test scores, size, time
    validation.json            the whole sweep and what shipped, in one file
    experts/<tree>/            the expert of the best layer, saved in float16 (probex.load_expert)

``<tree>`` is the tree's name made safe for a path (:func:`probex.storage.safe_name`: the jungle's
own names stay as they are; a name with ``/`` or ``..`` gets a readable stem and a hash), so a
tree name from a manifest never writes outside the jungle.

Classifier trees get a :class:`~probex.experts.classifier.ProbeXClassifier` (training classes), with
the probe views the tree's role names where it names any (the sweep then uses them too);
aligned trees a :class:`~probex.experts.aligner.ProbeXAligner` with the bundled MiniLM. For an
aligner, the two best layers together (the paper's multi-layer form) are also tried; the one
with the better validation score ships. The forest (one model per tree) has no expert. Which
tree is which comes from the jungle's manifest (its trees' roles); files are named by
:func:`probex.storage.safe_name` of the tree.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Optional

from probex.experiments.harness import banks_for, evaluated_trees, task_of, tree_params
from probex.progress import Progress
from probex.storage import atomic_write_json, safe_name
from probex.zoo.extras import EXPERTS_FOLDER, RECOMMENDED_FILE, SWEEPS_FOLDER

logger = logging.getLogger(__name__)


def _score_pair(tree_zoo, layers: list[str], params: dict):
    """An aligner on several layers at once, scored like the sweep scores one layer."""
    from probex.experts.aligner import ProbeXAligner, names_of

    started = time.perf_counter()
    held_out = tree_zoo.held_out_splits()
    holdout = bool(held_out)
    val_split = held_out[0] if holdout else "val"
    test_holdout = held_out[1] if len(held_out) > 1 else None
    banks = banks_for(tree_zoo, layers, [split for split in ("train", val_split, "test", test_holdout)
                                         if split in tree_zoo.splits])
    expert = ProbeXAligner(**params).fit(banks["train"], val=(banks[val_split], None))

    def names(split: str) -> list[str]:
        return sorted(set(names_of(banks[split][0].labels)))

    figures = {
        "val": round(expert.score(banks[val_split], candidates=names(val_split) if holdout else None), 4),
        "test": round(expert.score(banks["test"]), 4) if "test" in banks else None,
        "zero_shot_test": round(expert.score(banks[test_holdout], candidates=names(test_holdout)), 4) if test_holdout else None,
        "n_parameters": int(expert.n_parameters_),
        "seconds": round(time.perf_counter() - started, 2),
    }
    return expert, figures


def validate_jungle(path: str | Path, params: Optional[dict] = None, progress: Optional[Progress] = None) -> dict:
    """Sweep every tree of the jungle at ``path``, write the recommended layers and the experts; return a summary.

    Resumable: layers already in ``sweeps/<tree>.jsonl`` (same parameters) are not trained again (their
    experts are then refitted only if they are the best, with the same seed).
    """
    from probex.experiments.sweep import SWEEP_DEFAULTS, fit_layer, sweep_layers
    from probex.zoo import ModelZoo

    path = Path(path)
    zoo = ModelZoo.open(path)
    params = {**SWEEP_DEFAULTS, "device": "auto", "seed": 0, **(params or {})}
    summary: dict = {"params": params, "trees": {}}
    recommended: dict[str, str] = {}
    trees = evaluated_trees(zoo)
    for position, tree in enumerate(trees):
        started = time.perf_counter()
        tree_zoo = zoo.select(tree=tree)
        task = task_of(zoo, tree)
        own = tree_params(zoo, tree, params)  # the probe views the tree's role names, if any
        result = sweep_layers(tree_zoo, task=task, params=own, results=path / SWEEPS_FOLDER / f"{safe_name(tree)}.jsonl")
        best = result.best
        recommended[tree] = best.layer
        expert = result.experts.get(best.layer)
        if expert is None:  # the sweep resumed past it: the same seed refits the same expert
            expert, _ = fit_layer(tree_zoo, task, best.layer, own)
        shipped = {"layers": [best.layer], "val": best.val, "test": best.test, "zero_shot_test": best.zero_shot_test,
                   "n_parameters": best.n_parameters}
        if task == "align" and len(result.scores) > 1:
            pair = [score.layer for score in result.ranked()[:2]]
            pair_expert, figures = _score_pair(tree_zoo, pair, own)
            logger.info("%s: %s together: val %.3f (best single %s: %.3f)", tree, " + ".join(pair), figures["val"], best.layer, best.val)
            summary.setdefault("pairs", {})[tree] = {"layers": pair, **figures}
            if figures["val"] > best.val:
                expert, shipped = pair_expert, {"layers": pair, **{k: figures[k] for k in ("val", "test", "zero_shot_test", "n_parameters")}}
        metadata = {"tree": tree, "task": task, **shipped, "chosen_by": "validation", "params": own}
        expert.save(path / EXPERTS_FOLDER / safe_name(tree), metadata=metadata, half=True)
        summary["trees"][tree] = {"task": task, "best": best.layer, "views": own.get("views", "xu"), "shipped": shipped,
                                  "layers": [vars(score) for score in result.scores],
                                  "seconds": round(time.perf_counter() - started, 1)}
        if progress is not None:
            progress(position + 1, len(trees), f"validated {tree}: {best.layer}")
    atomic_write_json(path / RECOMMENDED_FILE, recommended)
    atomic_write_json(path / "validation.json", summary)
    return summary
