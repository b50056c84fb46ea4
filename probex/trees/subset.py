"""The coordinate-subset shortcut: cluster on a few coordinates, then confirm with exact distances.

A 768 x 768 layer has 589,824 coordinates; pairwise distances between 10,000 models on all of
them cost 10^13 operations. Distances on a random subset of coordinates, rescaled by
D / |subset|, estimate them well when the differences between trees are spread over the layer
(as fine-tuning spreads them). The subset is contiguous blocks of ``BLOCK`` coordinates, so
reading it touches few pages per model of a memory-mapped population.

An estimate is not trusted: ``split_confirmed`` checks the split it gave against exact
full-dimensional distances, and the caller recomputes on all coordinates when it fails. The
coordinates themselves are gathered by ``probex.trees.cell_sums`` in the same read that sums the
trees.
"""

from __future__ import annotations

import numpy as np
import torch

from probex.trees.distances import add_centred_products

BLOCK = 128  # coordinates per contiguous block of the subset
CONFIRM_TOLERANCE = 0.25  # relative disagreement allowed between subset estimates and exact values


def coordinate_blocks(dim: int, count: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """About ``count`` coordinates of [0, dim) as sorted random contiguous blocks (start, stop)."""
    n_blocks = max(1, count // BLOCK)
    starts = np.sort(rng.choice(dim // BLOCK, size=min(n_blocks, dim // BLOCK), replace=False)) * BLOCK
    return [(int(s), int(min(s + BLOCK, dim))) for s in starts]


def subset_scale(dim: int, blocks: list[tuple[int, int]]) -> float:
    """The factor that makes squared distances on the blocks estimate full-dimensional ones."""
    return dim / sum(stop - start for start, stop in blocks)


def subset_gram(coordinates: torch.Tensor, scale: float) -> np.ndarray:
    """Centred float64 Gram matrix [r, r] of models' block coordinates [r, s], rescaled by
    ``scale`` (``subset_scale``) so that its l2 distances estimate full-dimensional ones."""
    gram = torch.zeros(len(coordinates), len(coordinates), dtype=torch.float64)
    add_centred_products(gram, coordinates, scale)
    return gram.numpy()


def split_confirmed(distances: np.ndarray, labels: np.ndarray, centres: torch.Tensor, gram: np.ndarray,
                    link_labels: np.ndarray, n_trees: int) -> bool:
    """Exact checks of a split found on a subset of coordinates.

    ``distances`` [n, K] are exact l2 distances of every model to the exact tree means
    ``centres`` [K, D]; ``labels`` [n] the trees; ``gram`` the subset Gram matrix of the models
    that were linked, ``link_labels`` their trees. Confirmed when every model is nearest its own
    tree's mean, and both each tree's root-mean-square spread around its mean and the distances
    between the means agree with their subset estimates within ``CONFIRM_TOLERANCE`` (a structure
    the subset missed shows up as a spread that the subset underestimates).
    """
    if not np.array_equal(distances.argmin(1), labels):
        return False
    onehot = np.zeros((len(link_labels), n_trees))
    onehot[np.arange(len(link_labels)), link_labels] = 1.0
    onehot /= onehot.sum(0, keepdims=True)
    inner = onehot.T @ gram @ onehot  # [K, K] inner products of the subset centres
    estimated_spread = np.sqrt(np.maximum(np.diag(gram) @ onehot - np.diag(inner), 0.0))
    exact_spread = np.sqrt(np.array([np.mean(distances[labels == k, k] ** 2) for k in range(n_trees)]))
    if np.any(np.abs(estimated_spread - exact_spread) > CONFIRM_TOLERANCE * exact_spread):
        return False
    estimated = np.sqrt(np.maximum(np.diag(inner)[:, None] + np.diag(inner)[None, :] - 2 * inner, 0.0))
    exact = torch.cdist(centres.double(), centres.double()).numpy()
    upper = np.triu_indices(n_trees, 1)
    return bool(np.all(np.abs(estimated[upper] - exact[upper]) <= CONFIRM_TOLERANCE * exact[upper]))
