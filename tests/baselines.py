"""Baselines that quality assertions in the tests are margins over: what a model that learned nothing scores.

A test of an expert asserts ``score > baseline + margin``, where the baseline is computed from
the same data: the best constant predictor (each class's majority answer on the training
models), the majority class, or chance. A bare range (``0.4 <= score <= 1.0``) would pass for
a model that learned nothing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np


def constant_multilabel_accuracy(train_Y, test_Y) -> float:
    """Mean binary accuracy of the best constant multi-label predictor: each class's majority answer in training.

    ``train_Y``, ``test_Y``: 0/1 matrices [N, C] (tensors or arrays).
    """
    train, test = np.asarray(train_Y, dtype=float), np.asarray(test_Y, dtype=float)
    constant = (train.mean(axis=0) > 0.5).astype(float)
    return float((test == constant).mean())


def multilabel_matrix(labels: Sequence[Sequence[str]], classes: Sequence[str]) -> np.ndarray:
    """Lists of class names as a 0/1 matrix [N, len(classes)]."""
    column = {name: index for index, name in enumerate(classes)}
    matrix = np.zeros((len(labels), len(classes)))
    for row, names in enumerate(labels):
        for name in names:
            matrix[row, column[name]] = 1.0
    return matrix


def majority_class_accuracy(train_y: Sequence, test_y: Sequence) -> float:
    """Accuracy of always answering the most frequent training class (single-label)."""
    majority = Counter(np.asarray(train_y).tolist()).most_common(1)[0][0]
    return float(np.mean(np.asarray(test_y) == majority))
