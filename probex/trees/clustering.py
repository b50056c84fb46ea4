"""Find the Model Trees of one architecture: linkage, cut, exact tree means and distances.

For the models of one architecture, flattened to ``flat`` [n, D] (a MatrixStack: a dense bank,
possibly memory-mapped, or LoRA factors, read a chunk of merged rows at a time):

1. scipy ``linkage`` (``method``, default Ward) on the l2 distances between the models. Ward
   is the default because it is robust: a lone outlier model costs little to merge into a big
   tree (Ward's merge height grows with the sizes of what it merges), so it does not become a
   tree of its own, whereas single and average linkage read a forest of models with no shared
   root as hundreds of singleton trees. Above ``max_linkage_models`` models, the linkage runs
   on a random subset of them and the others join the tree whose mean (over the linked models)
   is nearest.
2. The cut (``probex.trees.dendrogram.cut_height``) gives the trees.
3. Each tree's centre is the exact mean of its members, and the exact distances of every model
   to every centre are computed (they calibrate the router's radii).

When D exceeds ``max_coordinates``, step 1 runs on a random subset of coordinates
(``probex.trees.subset``) and the split is confirmed with the exact means and distances of step 3;
when the confirmation fails, everything is recomputed on all coordinates.

Reads of the population (it may be a memory map larger than RAM): on the subset path, one
sequential read gathers the subset *and* sums the models by cell (``probex.trees.cell_sums``), from
which the exact means follow once the cut is known, and a second read measures the exact
distances (l2 for the confirmation, and ``metric`` when it is l1). Models outside the linkage
cost one more read of themselves, to find their nearest tree.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import torch
from scipy.cluster import hierarchy

from probex.trees.cell_sums import CellMeans, SubsetRead, read_subset_and_cells, tree_means_from_cells
from probex.trees.dendrogram import cut_height, first_appearance, linkage_from_gram
from probex.trees.distances import as_flat, distances_in_metrics, distances_to_centres, exact_gram, flat_shape, tree_means
from probex.progress import Progress
from probex.zoo.stack import MatrixStack
from probex.trees.subset import coordinate_blocks, split_confirmed, subset_gram, subset_scale

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


def split_into_trees(flat: MatrixStack | torch.Tensor, *, method: str = "ward", metric: str = "l2",
                     threshold: float | None = None, n_trees: int | None = None, min_gap_ratio: float = 2.0,
                     max_coordinates: int = 2048, max_linkage_models: int = 10_000,
                     rng: np.random.Generator | None = None, progress: Progress | None = None,
                     name: str = "architecture") -> TreeSplit:
    """The trees of the models ``flat`` [n, D] (see the module docstring); ``name`` is for logs."""
    rng = np.random.default_rng(0) if rng is None else rng
    flat = as_flat(flat)
    n, dim = flat_shape(flat)
    rows = np.arange(n)
    if n > max_linkage_models:
        rows = np.sort(rng.choice(n, max_linkage_models, replace=False))
    blocks = coordinate_blocks(dim, max_coordinates, rng) if dim > max_coordinates else None
    metrics = ("l2",) if metric == "l2" else ("l2", metric)  # l2 confirms, ``metric`` routes
    strategy = "exact"
    while True:
        started = time.perf_counter()
        read = None if blocks is None else read_subset_and_cells(flat, rows, blocks, rng, progress=progress)
        gram = exact_gram(flat, rows, progress) if read is None else subset_gram(read.subset, subset_scale(dim, blocks))
        linkage = linkage_from_gram(gram, method)
        linked = time.perf_counter()
        cut = cut_height(linkage[:, 2], len(rows), threshold, n_trees, min_gap_ratio)
        link_labels = first_appearance(hierarchy.fcluster(linkage, cut, "distance") if len(rows) > 1
                                       else np.ones(1, dtype=int))
        labels = np.full(n, -1, dtype=np.int64)
        labels[rows] = link_labels
        n_local = int(link_labels.max()) + 1
        if len(rows) < n:  # models outside the linkage join the nearest tree (exact distances)
            linked_means = _means(flat, read, labels, n_local, progress).means
            rest = np.setdiff1d(np.arange(n), rows)
            labels[rest] = distances_to_centres(flat, linked_means, "l2", progress, rows=rest).argmin(1)
        means = _means(flat, read, labels, n_local, progress)
        centres = means.means
        averaged = time.perf_counter()
        distances = distances_in_metrics(flat, centres, metrics, progress)
        coordinates = dim if blocks is None else sum(stop - start for start, stop in blocks)
        read_note = "" if read is None else f"one read of {n} models (subset, cell sums) {read.seconds:.1f} s; "
        means_note = ("by tree" if read is None else "cells mixed trees, read again by tree" if means.full_read
                      else f"from cell sums, {means.strays} strays read again")
        log.info("%s: %slinkage of %d models on %d coordinates %.1f s; exact tree means (%s) %.1f s; exact "
                 "distances %.1f s", name, read_note, len(rows), coordinates,
                 linked - started - (0.0 if read is None else read.seconds), means_note, averaged - linked,
                 time.perf_counter() - averaged)
        if blocks is None:
            break
        if split_confirmed(distances["l2"], labels, centres, gram, link_labels, n_local):
            strategy = "subset, confirmed"
            break
        log.warning("%s: the subset-of-coordinates split was not confirmed by exact distances; recomputing "
                    "the linkage on all %d coordinates (slow)", name, dim)
        blocks, strategy = None, "exact after a failed subset confirmation"
    return TreeSplit(labels=labels, linkage=linkage, linkage_rows=rows, cut_height=float(cut), strategy=strategy,
                     centres=centres, distances=distances[metric])


def _means(flat: MatrixStack, read: SubsetRead | None, labels: np.ndarray, n_trees: int,
           progress: Progress | None) -> CellMeans:
    """Exact means of the trees ``labels`` (-1: left out): from the cell sums of a subset read,
    else by a read of the models."""
    if read is not None:
        return tree_means_from_cells(flat, read, labels, n_trees, progress)
    included = np.flatnonzero(labels >= 0)
    return CellMeans(tree_means(flat, included, labels[included], n_trees, progress), strays=0, full_read=True)
