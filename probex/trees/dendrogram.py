"""The dendrogram of a population: linkage from distances, where to cut it, and data to plot it.

The router clusters the models of one architecture with scipy ``linkage`` and reads the number
of trees off the merge heights; this module holds that part, free of any weight reading:

- ``linkage_from_gram``: scipy's linkage matrix from a Gram matrix (l2 distances, row by row);
- ``highest_gap_cut`` and ``cut_height``: where to cut (the rule, or a threshold, or a count);
- ``dendrogram_data``: a ``DendrogramData`` ready to plot (``probex.figures.dendrogram_figure``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy.cluster import hierarchy

from probex.errors import ProbeXError

#: Colours of the trees, in order (links above the cut are drawn in ``ABOVE_CUT_COLOR``).
TREE_COLORS = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
    "#e377c2", "#17becf", "#bcbd22", "#aec7e8", "#ffbb78", "#98df8a",
)
ABOVE_CUT_COLOR = "#9e9e9e"
LINKAGE_METHODS = ("ward", "single", "complete", "average", "weighted")


@dataclass
class DendrogramData:
    """One architecture's dendrogram, ready to plot.

    ``scipy`` is ``scipy.cluster.hierarchy.dendrogram(..., no_plot=True)`` (icoord, dcoord, ivl,
    leaves, color_list, with links coloured by tree and grey above the cut); the ``leaf_*`` lists
    follow the displayed leaves left to right (leaf i sits at x = 10 i + 5).
    """

    architecture: str
    layer: str | None
    scipy: dict
    cut_height: float
    tree_colors: dict[str, str]
    leaf_ids: list[str]
    leaf_trees: list[str]
    leaf_true_trees: list[str | None]
    leaf_sizes: list[int]
    truncated: bool


def linkage_from_gram(gram: np.ndarray, method: str) -> np.ndarray:
    """scipy's linkage matrix [n - 1, 4] of the l2 distances of a Gram matrix [n, n] (float64;
    only its upper triangle and diagonal are read)."""
    n = gram.shape[0]
    if n < 2:
        return np.zeros((0, 4))
    diagonal = np.diag(gram).copy()
    condensed = np.empty(n * (n - 1) // 2)
    start = 0
    for i in range(n - 1):  # row by row: never a second n x n matrix in memory
        squared = diagonal[i] + diagonal[i + 1:] - 2.0 * gram[i, i + 1:]
        condensed[start:start + n - 1 - i] = np.sqrt(np.maximum(squared, 0.0))
        start += n - 1 - i
    return hierarchy.linkage(condensed, method=method)


def highest_gap_cut(heights: np.ndarray, min_gap_ratio: float = 2.0) -> tuple[int, float]:
    """The highest significant gap rule: (number of trees, cut height) from merge heights [n - 1].

    Sort the heights h_1 <= ... <= h_{n-1}, raise those below their median to the median (so
    duplicate models at the bottom cannot make a gap), and, going down from the top merge, cut at
    the first gap whose ratio h_{i+1} / h_i reaches ``min_gap_ratio``, at the geometric mean of the
    two heights. No such gap: one tree. The highest gap, not the largest, because task clusters
    inside a tree can be separated by a larger gap than the trees themselves.
    """
    h = np.sort(np.asarray(heights, dtype=np.float64))
    if len(h) == 0:
        return 1, 0.0
    above_all = float(h[-1]) * 1.05 + 1e-12
    if len(h) < 2 or h[-1] <= 0:
        return 1, above_all
    floored = np.maximum(h, max(float(np.median(h)), float(h[-1]) * 1e-12))
    ratios = floored[1:] / floored[:-1]
    significant = np.flatnonzero(ratios >= min_gap_ratio)
    if len(significant) == 0:
        return 1, above_all
    best = int(significant[-1])  # the highest one
    return len(h) - best, float(np.sqrt(floored[best] * floored[best + 1]))


def cut_height(heights: np.ndarray, n_models: int, threshold: float | None = None, n_trees: int | None = None,
               min_gap_ratio: float = 2.0) -> float:
    """Where to cut a dendrogram of ``n_models`` leaves: at ``threshold``, else between the
    merges that leave ``n_trees``, else by ``highest_gap_cut``."""
    if n_models < 2:
        return 0.0
    h = np.sort(heights)
    if threshold is not None:
        return float(threshold)
    if n_trees is not None:
        if not 1 <= int(n_trees) <= n_models:
            raise ProbeXError(f"n_trees={n_trees}: cannot cut {n_models} models into that many trees; "
                              f"give a number from 1 to {n_models}")
        k = int(n_trees)
        if k == 1:
            return float(h[-1]) * 1.05 + 1e-12
        return float(h[0]) / 2 if k > len(h) else float(h[-k] + h[-k + 1]) / 2
    return highest_gap_cut(h, min_gap_ratio)[1]


def first_appearance(cluster_ids: np.ndarray) -> np.ndarray:
    """Renumber cluster ids 0, 1, ... in order of first appearance (deterministic names)."""
    order: dict[int, int] = {}
    return np.array([order.setdefault(int(c), len(order)) for c in cluster_ids], dtype=np.int64)


def tree_colours(tree_names: Sequence[str]) -> dict[str, str]:
    """The colour of each tree, by its index among all trees."""
    return {name: TREE_COLORS[k % len(TREE_COLORS)] for k, name in enumerate(tree_names)}


def dendrogram_data(linkage: np.ndarray, leaf_trees: Sequence[str], leaf_ids: Sequence[str],
                    leaf_true_trees: Sequence | None, tree_colors: dict[str, str], architecture: str,
                    layer: str | None, cut: float, max_leaves: int = 200) -> DendrogramData:
    """A ``DendrogramData`` of a linkage over n models (their tree names, ids and true trees in
    linkage order). Above ``max_leaves`` models it is truncated to the last ``max_leaves`` merged
    clusters (scipy ``truncate_mode="lastp"``); each such leaf reports its size and majority trees.
    """
    n = len(leaf_ids)
    node_tree: list[str | None] = list(leaf_trees) + [None] * max(n - 1, 0)
    for j, (a, b) in enumerate(linkage[:, :2].astype(int)):
        node_tree[n + j] = node_tree[a] if node_tree[a] == node_tree[b] else None
    truncated = n > max_leaves
    if n < 2:
        info = {"icoord": [], "dcoord": [], "ivl": list(leaf_ids), "leaves": list(range(n)), "color_list": []}
    else:
        info = hierarchy.dendrogram(
            linkage, no_plot=True, truncate_mode="lastp" if truncated else None, p=max_leaves,
            labels=list(leaf_ids),
            link_color_func=lambda node: ABOVE_CUT_COLOR if node_tree[node] is None else tree_colors[node_tree[node]])
    nodes = hierarchy.to_tree(linkage, rd=True)[1] if n > 1 else []
    ids, trees, truths, sizes = [], [], [], []
    for node in info["leaves"]:
        members = nodes[node].pre_order() if node >= n else [node]
        known = [leaf_true_trees[m] for m in members if leaf_true_trees[m] is not None] if leaf_true_trees else []
        ids.append(leaf_ids[members[0]] if len(members) == 1 else f"({len(members)} models)")
        trees.append(Counter(leaf_trees[m] for m in members).most_common(1)[0][0])
        truths.append(Counter(known).most_common(1)[0][0] if known else None)
        sizes.append(len(members))
    return DendrogramData(architecture=architecture, layer=layer, scipy=info, cut_height=cut,
                          tree_colors=tree_colors, leaf_ids=ids, leaf_trees=trees, leaf_true_trees=truths,
                          leaf_sizes=sizes, truncated=truncated)
