"""Training one expert from the Experts page: the sweep's fit of one layer, with the page's progress callback.

``probex.experiments.sweep.fit_layer`` trains and scores the expert (the same splits and scores as a layer
sweep); this module turns its LayerScore into the rows the page shows, with chance levels.
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


def _concepts(zoo, split: str) -> int:
    return len({record.labels[0] for record in zoo.records if record.split == split and record.labels})


def train_expert(zoo, task: str, layer: str, n_probes: int, proj_dim: int, rep_dim: int, epochs: int,
                 patience: Optional[int] = 20, progress: Optional[Callable[[int, int, Any], None]] = None,
                 device: str = "auto") -> TrainingRun:
    """Fit a ProbeX expert of ``task`` on ``layer`` of one tree's zoo (train split; best epoch by validation).

    Raises:
        ZooError: the zoo lacks the splits or the layer (the message says which).
    """
    from probex.experiments.sweep import fit_layer

    params = dict(n_probes=n_probes, proj_dim=proj_dim, rep_dim=rep_dim, epochs=epochs, patience=patience,
                  device=device)
    expert, score = fit_layer(zoo, task, layer, params, progress=progress)
    scores: list[dict] = []
    if task == "classes":
        scores.append({"metric": "validation mean binary accuracy", "value": score.val, "chance": 0.5})
        if score.test is not None:
            scores.append({"metric": "test mean binary accuracy", "value": score.test, "chance": 0.5})
    else:
        holdout = "val_holdout" in zoo.splits
        val_split = "val_holdout" if holdout else "val"
        scores.append({"metric": f"{'zero-shot ' if holdout else ''}validation top-1 ({val_split})", "value": score.val,
                       "chance": 1 / max(_concepts(zoo, val_split) if holdout else len(expert.classes_), 1)})
        if score.test is not None:
            scores.append({"metric": "in-distribution top-1 (test models of seen concepts)", "value": score.test,
                           "chance": 1 / len(expert.classes_)})
        if score.zero_shot_test is not None:
            held = _concepts(zoo, "test_holdout")
            scores.append({"metric": f"zero-shot top-1 over {held} held-out classes (test_holdout)",
                           "value": score.zero_shot_test, "chance": 1 / held})
    scores.append({"metric": "parameters", "value": score.n_parameters, "chance": None})
    scores.append({"metric": "best epoch", "value": score.best_epoch, "chance": None})
    return TrainingRun(expert, scores)


def recommended_layer(layers: list[str], recommended: Optional[str], sweep: list[dict]) -> str:
    """The layer a new expert should read: the recommended one when known, else the sweep's best by validation
    (ties to the smaller expert, then the earlier layer, as ``SweepResult.best``), else the first layer."""
    if recommended in layers:
        return recommended
    rows = [row for row in sweep if row["layer"] in layers]
    if rows:
        return max(rows, key=lambda row: (row["val"], -row.get("n_parameters", 0), -rows.index(row)))["layer"]
    return layers[0]


def as_text(value: Any) -> str:
    """A score for a table: whole numbers with thousands separators, fractions with three decimals, "-" for none."""
    if value is None:
        return "-"
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) >= 2):
        return f"{int(value):,}"
    return f"{value:.3f}" if isinstance(value, float) else str(value)
