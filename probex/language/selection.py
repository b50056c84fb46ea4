"""Selections of models: "more like these", ranked by similarity to what was selected.

A selection (a lasso on a map, a table's rows) is a set of rows of a population's vectors: an
aligned expert's unit embeddings, or flattened weights. Every model of the population is ranked
by its similarity to the selection's mean direction, so that a few examples find the rest of
their kind. The ranking is shown as a highlight, never as a filter::

    scores = similarity_to_selection(index.embeddings, rows)    # [N], cosine with the mean direction
    top = most_similar(scores, rows, k=50)                       # best first, the selection left out
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from probex.errors import ZooError


def similarity_to_selection(vectors: np.ndarray, rows: Sequence[int]) -> np.ndarray:
    """Each row's cosine with the mean direction of the selected rows ([N] float32).

    Args:
        vectors: [N, d] one vector per model (unit rows or not: each is normalised here).
        rows: the selected rows (at least one).

    Raises:
        ZooError: empty selection or a row out of range.
    """
    vectors = np.asarray(vectors, dtype=np.float32)
    rows = np.asarray(list(rows), dtype=np.int64)
    if rows.size == 0:
        raise ZooError("more like these: the selection is empty; select a few models first")
    if rows.min() < 0 or rows.max() >= len(vectors):
        raise ZooError(f"more like these: row {int(rows.max())} out of range for {len(vectors)} models")
    units = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    direction = units[rows].mean(axis=0)
    norm = float(np.linalg.norm(direction))
    if norm < 1e-12:  # selected vectors cancel out: no direction to rank by
        return np.zeros(len(vectors), dtype=np.float32)
    return (units @ (direction / norm)).astype(np.float32)


def most_similar(scores: np.ndarray, exclude: Sequence[int] = (), k: int = 50) -> list[int]:
    """The ``k`` best rows by ``scores`` (best first), leaving out ``exclude`` (e.g. the selection itself)."""
    scores = np.asarray(scores, dtype=np.float64).copy()
    scores[np.asarray(list(exclude), dtype=np.int64)] = -np.inf
    k = max(0, min(int(k), int(np.isfinite(scores).sum())))
    order = np.argsort(-scores, kind="stable")[:k]
    return [int(row) for row in order]
