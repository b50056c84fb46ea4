"""Find the Model Trees of one architecture: linkage, cut, exact tree means and distances.

For the models of one architecture, flattened to ``flat`` [n, D]:

1. scipy ``linkage`` (``method``, default Ward) on the l2 distances between the models. Above
   ``max_linkage_models`` models, the linkage runs on a random subset of them and the others
   join the tree whose mean (over the linked models) is nearest.
2. The cut (``probex.dendrogram.cut_height``) gives the trees.
3. Each tree's centre is the exact mean of its members, and the exact distances of every model
   to every centre are computed (they calibrate the router's radii).

When D exceeds ``max_coordinates``, step 1 runs on a random subset of coordinates
(``probex.subset``) and the split is confirmed with the exact means and distances of step 3;
when the confirmation fails, everything is recomputed on all coordinates.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import torch
from scipy.cluster import hierarchy

from probex.dendrogram import cut_height, first_appearance, linkage_from_gram
from probex.distances import distances_to_centres, exact_gram, tree_means
from probex.progress import Progress
from probex.subset import coordinate_blocks, split_confirmed, subset_gram

log = logging.getLogger(__name__)


@dataclass
class TreeSplit:
    """The trees of one architecture's n models.

    ``labels`` [n] local tree index of each model; ``linkage`` scipy's matrix over the models
    ``linkage_rows``; ``centres`` [K, D] float32 tree means; ``distances`` [n, K] from each model
    to each centre in the routing metric; ``strategy`` "exact", "subset, confirmed" or "exact
    after a failed subset confirmation".
    """

    labels: np.ndarray
    linkage: np.ndarray
    linkage_rows: np.ndarray
    cut_height: float
    strategy: str
    centres: torch.Tensor
    distances: np.ndarray


def split_into_trees(flat: torch.Tensor, *, method: str = "ward", metric: str = "l2",
                     threshold: float | None = None, n_trees: int | None = None, min_gap_ratio: float = 2.0,
                     max_coordinates: int = 2048, max_linkage_models: int = 10_000,
                     rng: np.random.Generator | None = None, progress: Progress | None = None,
                     name: str = "architecture") -> TreeSplit:
    """The trees of the models ``flat`` [n, D] (see the module docstring); ``name`` is for logs."""
    rng = np.random.default_rng(0) if rng is None else rng
    n, dim = flat.shape
    rows = np.arange(n)
    if n > max_linkage_models:
        rows = np.sort(rng.choice(n, max_linkage_models, replace=False))
    blocks = coordinate_blocks(dim, max_coordinates, rng) if dim > max_coordinates else None
    strategy = "exact"
    while True:
        started = time.perf_counter()
        gram = exact_gram(flat, rows, progress) if blocks is None else subset_gram(flat, rows, blocks, progress)
        linkage = linkage_from_gram(gram, method)
        linked = time.perf_counter()
        cut = cut_height(linkage[:, 2], len(rows), threshold, n_trees, min_gap_ratio)
        link_labels = first_appearance(hierarchy.fcluster(linkage, cut, "distance") if len(rows) > 1
                                       else np.ones(1, dtype=int))
        labels = np.full(n, -1, dtype=np.int64)
        labels[rows] = link_labels
        n_local = int(link_labels.max()) + 1
        if len(rows) < n:  # models outside the linkage join the nearest tree (exact distances)
            centres = tree_means(flat, rows, link_labels, n_local, progress)
            rest = np.setdiff1d(np.arange(n), rows)
            labels[rest] = distances_to_centres(flat, centres, "l2", progress, rows=rest).argmin(1)
        centres = tree_means(flat, np.arange(n), labels, n_local, progress)
        distances = distances_to_centres(flat, centres, "l2", progress)
        log.info("%s: linkage of %d models on %s coordinates %.1f s, exact centres and distances %.1f s",
                 name, len(rows), dim if blocks is None else sum(b - a for a, b in blocks), linked - started,
                 time.perf_counter() - linked)
        if blocks is None:
            break
        if split_confirmed(distances, labels, centres, gram, link_labels, n_local):
            strategy = "subset, confirmed"
            break
        log.warning("%s: the subset-of-coordinates split was not confirmed by exact distances; recomputing "
                    "the linkage on all %d coordinates (slow)", name, dim)
        blocks, strategy = None, "exact after a failed subset confirmation"
    if metric != "l2":
        distances = distances_to_centres(flat, centres, metric, progress)
    return TreeSplit(labels=labels, linkage=linkage, linkage_rows=rows, cut_height=float(cut), strategy=strategy,
                     centres=centres, distances=distances)
