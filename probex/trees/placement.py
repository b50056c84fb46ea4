"""Where a model lies among the trees: its nearest tree, how far, and how that compares with the tree's own models.

``TreeRouter.route`` answers "which tree, or none". To be honest about an answer, a page also
needs the nearest tree when the answer is "none", and how the distance compares with the
distances of the tree's own models: a model closer to the centre than almost every member may be
the tree's root or barely fine-tuned; one beyond the members' 99th percentile is far from
anything the tree's expert was trained on::

    spread = member_distances(router, fitted_zoo)           # tree -> its members' distances (sorted)
    placement = place(router, upload_zoo, spread)[0]
    placement.tree, placement.nearest, placement.distance, placement.radius, placement.percentile
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional

import numpy as np
import torch

from probex.trees.distances import distances_to_centres
from probex.trees.populations import split_population

#: Closer to its tree's centre than this share of the tree's own models: maybe the root.
ROOT_LIKE_PERCENTILE = 0.10
#: Farther than this share of the tree's own models: far from what the expert was trained on.
FAR_PERCENTILE = 0.99


@dataclass
class Placement:
    """One model's place among the trees of a fitted router.

    Attributes:
        tree: the tree it joins (None: beyond every radius, or an unknown architecture).
        nearest: the tree whose centre is nearest (None: no tree of its architecture).
        distance: to that centre (NaN for an unknown architecture).
        radius: the nearest tree's radius (beyond it a model is an unknown tree).
        percentile: the share of the nearest tree's own models closer to its centre (0..1; NaN
            when unknown).
    """

    tree: Optional[str]
    nearest: Optional[str]
    distance: float
    radius: float
    percentile: float

    @property
    def root_like(self) -> bool:
        """Joined a tree closer to its centre than all but ``ROOT_LIKE_PERCENTILE`` of its models."""
        return self.tree is not None and self.percentile < ROOT_LIKE_PERCENTILE

    @property
    def far(self) -> bool:
        """Joined a tree but lies farther from its centre than ``FAR_PERCENTILE`` of its models."""
        return self.tree is not None and self.percentile > FAR_PERCENTILE


def member_distances(router: Any, population: Any) -> dict[str, np.ndarray]:
    """tree -> the sorted distances of the models of ``population`` routed to it (e.g. the fitted models)."""
    trees, distances = router.route(population, return_distance=True)
    spread: dict[str, list[float]] = {}
    for tree, distance in zip(trees, distances):
        if tree is not None:
            spread.setdefault(tree, []).append(float(distance))
    return {tree: np.sort(np.asarray(values)) for tree, values in spread.items()}


def place(router: Any, population: Any, spread: Optional[Mapping[str, np.ndarray]] = None) -> list[Placement]:
    """The :class:`Placement` of each model of ``population`` (same inputs as ``TreeRouter.route``)."""
    router._check_fitted()
    total, groups = split_population(population, router._route_layer_choice)
    placements = [Placement(None, None, math.nan, math.nan, math.nan) for _ in range(total)]
    for group in groups:
        architecture = router._match(group)
        if architecture is None:
            continue
        trees = architecture.tree_indices
        centres = torch.stack([router.centers_[t].reshape(-1) for t in trees])
        distances = distances_to_centres(group.stack, centres, router.metric)
        for position, row in zip(group.positions, distances):
            k = int(np.argmin(row))
            name, distance, radius = router.tree_names_[trees[k]], float(row[k]), float(router.radii_[trees[k]])
            members = (spread or {}).get(name)
            percentile = float(np.searchsorted(members, distance) / len(members)) if members is not None and len(
                members) else math.nan
            placements[position] = Placement(name if distance <= radius else None, name, distance, radius, percentile)
    return placements
