"""The dendrogram cut rule: the highest significant gap in the merge heights."""

from __future__ import annotations

import numpy as np

from probex.trees.dendrogram import highest_gap_cut


def test_gap_rule_ignores_duplicates_at_the_bottom():
    heights = np.array([0.0, 0.0, 0.0, 1.0, 1.1, 1.2, 1.3, 10.0])
    n_trees, cut = highest_gap_cut(heights)
    assert n_trees == 2
    assert 1.3 < cut < 10.0


def test_gap_rule_cuts_at_the_highest_significant_gap_not_the_largest():
    # task clusters (gap x20 at 0.1 -> 2) inside two trees (gap x5 at 2.4 -> 12)
    heights = np.array([0.1] * 8 + [2.0, 2.2, 2.4, 12.0])
    n_trees, cut = highest_gap_cut(heights)
    assert n_trees == 2
    assert 2.4 < cut < 12.0


def test_gap_rule_without_a_gap_is_one_tree():
    assert highest_gap_cut(np.array([1.0, 1.1, 1.2, 1.5]))[0] == 1
