"""Training one expert from the Experts page: the probex calls, with the page's progress callback.

The same fit and scores as the layer sweep (``probex.sweep``), for one layer and with a
progress callback per epoch so that the page can draw live curves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

TASK_NAMES = {"classes": "training-class prediction (multi-label)", "align": "alignment with class names (zero-shot)"}


@dataclass
class TrainingRun:
    """A trained expert and its scores: metric name -> value (with its chance level when known)."""

    expert: Any
    scores: list[dict]


def default_task(zoo) -> str:
    """'align' for a tree with held-out classes (zero-shot is then measurable), else 'classes'."""
    return "align" if {"val_holdout", "test_holdout"} <= set(zoo.splits) else "classes"


def train_expert(zoo, task: str, layer: str, n_probes: int, proj_dim: int, rep_dim: int, epochs: int,
                 patience: Optional[int] = 20, progress: Optional[Callable[[int, int, Any], None]] = None) -> TrainingRun:
    """Fit a ProbeX expert of ``task`` on ``layer`` of one tree's zoo (train split; best epoch by validation).

    Raises:
        ZooError: the zoo lacks the splits or the layer (the message says which).
    """
    from probex.aligner import ProbeXAligner, names_of
    from probex.errors import ZooError
    from probex.experts import ProbeXClassifier

    splits = set(zoo.splits)
    holdout = {"val_holdout", "test_holdout"} <= splits
    needed = {"train", "val_holdout" if task == "align" and holdout else "val"}
    if not needed <= splits:
        raise ZooError(f"{zoo.root}: training needs the splits {sorted(needed)}; this tree has {zoo.splits}")
    params = dict(n_probes=n_probes, proj_dim=proj_dim, rep_dim=rep_dim, epochs=epochs, patience=patience)
    train = zoo.bank(layer, split="train")
    scores: list[dict] = []
    if task == "classes":
        val = zoo.bank(layer, split="val")
        expert = ProbeXClassifier(**params).fit(train, val=(val, None), progress=progress)
        scores.append({"metric": "validation mean binary accuracy", "value": expert.score(val), "chance": 0.5})
        if "test" in splits:
            scores.append({"metric": "test mean binary accuracy", "value": expert.score(zoo.bank(layer, split="test")),
                           "chance": 0.5})
    else:
        val = zoo.bank(layer, split="val_holdout" if holdout else "val")
        expert = ProbeXAligner(**params).fit(train, val=(val, None), progress=progress)
        if "test" in splits:
            test = zoo.bank(layer, split="test")
            # in-distribution: the test models of concepts seen in training (a small train split may miss some)
            seen = [model_id for model_id, name in zip(test.ids, names_of(test.labels)) if name in set(expert.classes_)]
            if seen:
                scores.append({"metric": f"in-distribution top-1 ({len(seen)} test models)",
                               "value": expert.score(test.select(ids=seen)), "chance": 1 / len(expert.classes_)})
        if holdout:
            held = zoo.bank(layer, split="test_holdout")
            candidates = sorted(set(names_of(held.labels)))
            scores.append({"metric": f"zero-shot top-1 over {len(candidates)} held-out classes (test_holdout)",
                           "value": expert.score(held, candidates=candidates), "chance": 1 / len(candidates)})
    scores.append({"metric": "parameters", "value": expert.n_parameters_, "chance": None})
    scores.append({"metric": "best epoch", "value": expert.best_epoch_, "chance": None})
    return TrainingRun(expert, scores)
