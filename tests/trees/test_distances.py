"""Streamed exact computations: tree means, distances in several metrics from one read."""

from __future__ import annotations

import numpy as np
import torch

from probex.trees.distances import distances_in_metrics, distances_to_centres, streaming_threads, tree_means


def models(n: int = 50, dim: int = 300, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))


def test_tree_means_are_the_means_of_the_members():
    flat = models()
    labels = np.arange(50) % 3
    means = tree_means(flat, np.arange(50), labels, 3)
    for k in range(3):
        torch.testing.assert_close(means[k], flat[labels == k].mean(0), rtol=1e-5, atol=1e-6)


def test_distances_in_two_metrics_from_one_read_match_each_metric_alone():
    flat, centres = models(), models(4, seed=1)
    both = distances_in_metrics(flat, centres, ("l2", "l1"))
    np.testing.assert_array_equal(both["l2"], distances_to_centres(flat, centres, "l2"))
    np.testing.assert_array_equal(both["l1"], distances_to_centres(flat, centres, "l1"))
    exact_l2 = torch.cdist(flat.double(), centres.double()).numpy()
    np.testing.assert_allclose(both["l2"], exact_l2, rtol=1e-5)


def test_distances_of_chosen_rows_follow_the_rows_order():
    flat, centres = models(), models(2, seed=1)
    rows = np.array([7, 3, 40])
    np.testing.assert_allclose(distances_to_centres(flat, centres, "l2", rows=rows),
                               distances_to_centres(flat, centres, "l2")[rows], rtol=1e-6)


def test_streaming_threads_restores_the_thread_count():
    before = torch.get_num_threads()
    with streaming_threads():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
