"""Metrics of the paper: multi-label, top-k, kNN, one-class classification and retrieval.

Inputs are numpy arrays (or anything ``np.asarray`` accepts); embeddings are [N, d].
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from probex.errors import ProbeXError


def _as_2d(name: str, value) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64)
    if array.ndim != 2:
        raise ProbeXError(f"{name}: expected a 2-D array [N, d]; got shape {array.shape}")
    return array


def mean_binary_accuracy(y_true, y_pred) -> float:
    """The fraction of (model, class) pairs predicted right: the paper's training-class metric (chance 0.5)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape:
        raise ProbeXError(f"y_true and y_pred must have one shape; got {y_true.shape} and {y_pred.shape}")
    return float((y_true.astype(bool) == y_pred.astype(bool)).mean())


def accuracy(y_true, y_pred) -> float:
    """The fraction of models whose single label is predicted right."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape:
        raise ProbeXError(f"y_true and y_pred must have one shape; got {y_true.shape} and {y_pred.shape}")
    return float((y_true == y_pred).mean())


def top_k_accuracy(scores, y_true, k: int = 1) -> float:
    """The fraction of rows whose true class index is among the k highest scores [N, C]."""
    scores = _as_2d("scores", scores)
    y_true = np.asarray(y_true)
    if y_true.shape != (scores.shape[0],):
        raise ProbeXError(f"y_true: expected {scores.shape[0]} class indices; got shape {y_true.shape}")
    k = min(k, scores.shape[1])
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return float((top == y_true[:, None]).any(axis=1).mean())


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def cosine_similarity(a, b) -> np.ndarray:
    """Pairwise cosine similarity [len(a), len(b)]."""
    return _normalise(_as_2d("a", a)) @ _normalise(_as_2d("b", b)).T


def knn_predict(train_embeddings, train_labels: Sequence, query_embeddings, k: int = 1) -> np.ndarray:
    """The majority label of the k most cosine-similar training embeddings (ties: the nearer)."""
    similarity = cosine_similarity(query_embeddings, train_embeddings)
    train_labels = np.asarray(train_labels)
    k = min(k, similarity.shape[1])
    nearest = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
    predictions = []
    for row in nearest:
        votes: dict = {}
        for rank, index in enumerate(row):
            label = train_labels[index]
            count, first = votes.get(label, (0, rank))
            votes[label] = (count + 1, first)
        predictions.append(max(votes, key=lambda label: (votes[label][0], -votes[label][1])))
    return np.asarray(predictions)


def knn_accuracy(train_embeddings, train_labels, test_embeddings, test_labels, k: int = 1) -> float:
    """Accuracy of cosine kNN classification of the test embeddings."""
    predicted = knn_predict(train_embeddings, train_labels, test_embeddings, k)
    return accuracy(np.asarray(test_labels), predicted)


def one_class_auc(
    train_embeddings,
    train_labels,
    test_embeddings,
    test_labels,
    method: str = "knn",
    k: int = 1,
) -> float:
    """Mean ROC-AUC of one-class classification over classes (the paper's OCC metric).

    For each class, only its training embeddings are seen; every test embedding gets a
    normality score, and the test models of that class should score highest.
    method "knn": minus the mean cosine distance to the k nearest training embeddings of the
    class. method "ledoit_wolf": minus the Mahalanobis distance under a Ledoit-Wolf shrunk
    Gaussian fitted on the class.
    """
    from sklearn.covariance import LedoitWolf
    from sklearn.metrics import roc_auc_score

    train = _normalise(_as_2d("train_embeddings", train_embeddings))
    test = _normalise(_as_2d("test_embeddings", test_embeddings))
    train_labels, test_labels = np.asarray(train_labels), np.asarray(test_labels)
    aucs = []
    for label in np.unique(train_labels):
        positives = test_labels == label
        if positives.all() or not positives.any():
            continue  # ROC-AUC needs both positives and negatives
        members = train[train_labels == label]
        if method == "knn":
            distance = 1.0 - test @ members.T
            kk = min(k, members.shape[0])
            normality = -np.sort(distance, axis=1)[:, :kk].mean(axis=1)
        elif method == "ledoit_wolf":
            if members.shape[0] < 2:
                continue
            model = LedoitWolf().fit(members)
            normality = -model.mahalanobis(test)
        else:
            raise ProbeXError(f"method must be 'knn' or 'ledoit_wolf'; got {method!r}")
        aucs.append(roc_auc_score(positives, normality))
    if not aucs:
        raise ProbeXError("one_class_auc: no class has both positive and negative test models")
    return float(np.mean(aucs))


def retrieval_precision_at_k(embeddings, labels, k: int = 1, gallery_embeddings=None, gallery_labels=None) -> float:
    """Mean fraction of each query's k nearest neighbours (cosine) that share its label.

    Without a gallery, every model queries all the others (itself excluded).
    """
    queries = _as_2d("embeddings", embeddings)
    labels = np.asarray(labels)
    if gallery_embeddings is None:
        similarity = cosine_similarity(queries, queries)
        np.fill_diagonal(similarity, -np.inf)
        gallery = labels
    else:
        similarity = cosine_similarity(queries, gallery_embeddings)
        gallery = np.asarray(gallery_labels)
    k = min(k, similarity.shape[1] - (1 if gallery_embeddings is None else 0))
    nearest = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
    return float((gallery[nearest] == labels[:, None]).mean())
