"""The demo jungle's acceptance figures, measured on a built (or the shipped) jungle.

``check_jungle(path)`` runs the evaluation harness (:func:`probex.experiments.harness.evaluate_zoo`)
at the jungle's recommended layers with its shipped experts, on models never seen in training:
the router (trees found without being told their number, held-out routing accuracy), every
classifier tree (ProbeX, Dense and StatNN, with parameter counts), the forest (the inter-tree
control) and the aligned tree (in-distribution, zero-shot, kNN, one-class ROC-AUC, retrieval,
prompt search; the best single layer with and without ReLU; raw-weight retrieval). Every figure
comes with its chance level. ``probex jungle check`` prints them and writes ``check.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from probex.progress import Progress


def check_jungle(path: str | Path, params: Optional[dict] = None, progress: Optional[Progress] = None) -> dict:
    """Every acceptance figure of the jungle at ``path`` (see the module docstring); also written to check.json."""
    from probex.experiments.harness import evaluate_zoo
    from probex.storage import atomic_write_json
    from probex.zoo import ModelZoo
    from probex.zoo.extras import FIGURES_FILE, expert_dirs, recommended_layers

    path = Path(path)
    zoo = ModelZoo.open(path)
    report = {"jungle": str(path), **evaluate_zoo(zoo, recommended_layers(path), expert_dirs(path), params, progress)}
    atomic_write_json(path / FIGURES_FILE, report)
    return report


def format_report(report: dict) -> str:
    """The figures as a short plain-text table, each with its chance level."""
    from probex.experiments.harness import format_figures

    return format_figures(report, f"demo jungle: {report['jungle']}")
