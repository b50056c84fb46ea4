"""Calibrated search scores: how a cosine compares with the scores of real matches, and within its population.

A raw cosine in an aligned expert's space says little on its own: on the demo jungle a model and
its own concept's name score 0.83-0.98, and the best model for "a dog" (a concept nothing in the
jungle was trained on) still scores 0.35, a bar a third full on a -1..1 scale. Two calibrations
make scores readable and comparable across prompts and trees:

- **match**: the share of *true matches* (every indexed model scored against its own concept's
  name) that score below a given cosine, 0..1. A hit with match 0.4 scores like a typical real
  match; a hit with match 0.0 scores below every real match.
- **z**: the hit's standard score among every model of the population for this prompt (how
  much it stands out from the rest). Every prompt's best hit stands out (the maximum of a
  thousand scores is about 3 standard deviations up), so z ranks within a prompt but cannot
  tell a real match from none; match can.

A prompt whose best hit scores below the ``WEAK_QUANTILE`` quantile of the true-match scores is a
weak match ("no strong match" in the app and the CLI)::

    reference = true_match_scores(index.embeddings, index.expert_text(names), rows, columns)
    strength = match_strength(best_score, reference)
    strength.weak, strength.match
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from probex.errors import ProbeXError

#: A best score below this quantile of the true-match scores is a weak match.
WEAK_QUANTILE = 0.05


@dataclass
class MatchStrength:
    """How well a prompt's best model matches it, on the scale of real matches.

    Attributes:
        best: the best model's cosine score.
        match: the share of true-match scores below ``best`` (0..1).
        threshold: the cosine below which a best score is a weak match (the ``WEAK_QUANTILE``
            quantile of the true-match scores).
        typical: the 5th and 95th percentiles of the true-match scores (what real matches score).
        weak: ``best < threshold``.
    """

    best: float
    match: float
    threshold: float
    typical: tuple[float, float]
    weak: bool

    def describe(self) -> str:
        """One sentence for a person: the best score against what real matches score."""
        low, high = self.typical
        verdict = "no strong match" if self.weak else "a strong match"
        return (f"{verdict}: the best model scores {self.best:.2f}; a model and the name of the concept it was "
                f"fine-tuned on typically score {low:.2f}-{high:.2f}")


def true_matches(labels: Sequence[Sequence[str]], classes: Sequence[str]) -> tuple[list[int], list[int]]:
    """The (model row, class index) pairs of every model's concepts among ``classes``.

    Raises:
        ProbeXError: no model carries a concept among ``classes`` (scores cannot be calibrated).
    """
    column = {name: number for number, name in enumerate(classes)}
    pairs = [(row, column[label]) for row, names in enumerate(labels) for label in names if label in column]
    if not pairs:
        raise ProbeXError("no model carries a concept among the class names; scores cannot be calibrated")
    rows, names = zip(*pairs)
    return list(rows), list(names)


def true_match_scores(embeddings: np.ndarray, name_embeddings: np.ndarray, rows: Sequence[int],
                      names: Sequence[int]) -> np.ndarray:
    """The cosine of each model ``rows[i]`` with its own concept's name ``names[i]`` ([M], unit rows in, float64 out).

    Args:
        embeddings: [N, d] the models' unit rows.
        name_embeddings: [C, d] the class names' unit rows.
        rows, names: one (model row, class index) pair per true match.
    """
    rows, names = np.asarray(rows, dtype=np.int64), np.asarray(names, dtype=np.int64)
    if rows.shape != names.shape:
        raise ProbeXError(f"true_match_scores: {len(rows)} model rows for {len(names)} class indices")
    return np.einsum("md,md->m", embeddings[rows].astype(np.float64), name_embeddings[names].astype(np.float64))


def calibrated_match(scores: np.ndarray | float, reference: np.ndarray) -> np.ndarray:
    """The share of ``reference`` scores strictly below each score (0..1; ``reference`` need not be sorted)."""
    ordered = np.sort(np.asarray(reference, dtype=np.float64))
    if len(ordered) == 0:
        raise ProbeXError("calibrated_match: no reference scores (no model of a known concept)")
    return np.searchsorted(ordered, np.asarray(scores, dtype=np.float64), side="left") / len(ordered)


def standard_scores(scores: np.ndarray) -> np.ndarray:
    """z-scores of a population's scores [N] (0 where every score is equal)."""
    scores = np.asarray(scores, dtype=np.float64)
    spread = scores.std()
    return (scores - scores.mean()) / spread if spread > 0 else np.zeros_like(scores)


def match_strength(best: float, reference: np.ndarray, quantile: float = WEAK_QUANTILE) -> MatchStrength:
    """How ``best`` (a prompt's best cosine) compares with the true-match scores ``reference``."""
    reference = np.asarray(reference, dtype=np.float64)
    if len(reference) == 0:
        raise ProbeXError("match_strength: no reference scores (no model of a known concept)")
    threshold = float(np.quantile(reference, quantile))
    low, high = (float(value) for value in np.quantile(reference, [0.05, 0.95]))
    return MatchStrength(best=float(best), match=float(calibrated_match(best, reference)), threshold=threshold,
                         typical=(low, high), weak=bool(best < threshold))
