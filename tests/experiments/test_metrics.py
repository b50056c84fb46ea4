"""The metrics, on small cases worked out by hand."""

import numpy as np
import pytest

from probex.experiments.metrics import (
    accuracy,
    knn_accuracy,
    knn_predict,
    mean_binary_accuracy,
    one_class_auc,
    retrieval_precision_at_k,
    top_k_accuracy,
)


def test_mean_binary_accuracy_counts_model_class_pairs():
    assert mean_binary_accuracy([[1, 0], [0, 0]], [[1, 1], [0, 0]]) == 0.75


def test_metrics_refuse_mismatched_shapes():
    with pytest.raises(ValueError, match="one shape"):
        mean_binary_accuracy([[1, 0]], [[1, 0, 1]])
    with pytest.raises(ValueError, match="one shape"):
        accuracy([1, 2], [1])


def test_top_k_accuracy():
    scores = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.1, 0.2, 0.7]])
    assert top_k_accuracy(scores, [1, 1, 0], k=1) == pytest.approx(1 / 3)
    assert top_k_accuracy(scores, [1, 1, 0], k=2) == pytest.approx(2 / 3)


def test_knn_uses_cosine_neighbours_and_majority_vote():
    train = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9], [0.2, 0.8]])
    labels = ["a", "a", "b", "b", "b"]
    assert list(knn_predict(train, labels, [[1, 0.05], [0.05, 1]], k=1)) == ["a", "b"]
    assert list(knn_predict(train, labels, [[0.6, 0.4]], k=5)) == ["b"]
    assert knn_accuracy(train, labels, [[5, 0], [0, 3]], ["a", "a"], k=1) == 0.5


def test_one_class_auc_is_perfect_for_separated_classes_and_half_for_noise():
    rng = np.random.default_rng(0)
    centers = np.eye(4) * 10
    train = np.concatenate([c + rng.normal(size=(20, 4)) for c in centers])
    test = np.concatenate([c + rng.normal(size=(10, 4)) for c in centers])
    train_y, test_y = np.repeat(range(4), 20), np.repeat(range(4), 10)
    for method in ("knn", "ledoit_wolf"):
        assert one_class_auc(train, train_y, test, test_y, method=method, k=3) > 0.99
    noise_auc = one_class_auc(rng.normal(size=(200, 8)), rng.integers(0, 4, 200), rng.normal(size=(400, 8)), rng.integers(0, 4, 400))
    assert 0.4 < noise_auc < 0.6


def test_retrieval_precision_excludes_the_query_itself():
    embeddings = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.2, 1]])
    assert retrieval_precision_at_k(embeddings, ["a", "a", "b", "b"], k=1) == 1.0
    assert retrieval_precision_at_k(embeddings, ["a", "b", "a", "b"], k=1) == 0.0
