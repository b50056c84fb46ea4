"""TreeRouter: find the Model Trees of a population of models and send each model to its tree.

Most public models are fine-tunes of a few foundation models. Models fine-tuned from the same
root stay close to it in weight space, so a hierarchical clustering of one layer's weights
recovers the trees, and a new model goes to the tree whose centre is nearest::

    router = TreeRouter().fit(bank)        # a ModelZoo, a LayerBank or a tensor [N, d_W, d_H]
    router.n_trees_, router.tree_names_
    router.route(new_bank)                 # ["tree_0", "tree_1", None, ...]

How the trees are found, precisely:

1. Architectures first. Models whose architectures differ (a ModelZoo's ``architectures()``;
   for tensors and LayerBanks, the layer name and shape) are different trees before any
   clustering (``probex.trees.populations``). Within a ModelZoo architecture, the layer is ``layer``
   when given, else the largest layer (most values; the first such in catalog order).
2. Within an architecture, scipy ``linkage`` (``method``, default ``"ward"``) on the l2
   distances between the flattened layers (``probex.trees.clustering``; large layers on a confirmed
   subset of coordinates, inputs possibly memory-mapped and read in chunks, never whole).
3. The number of trees is read off the dendrogram by the *highest significant gap*
   (``probex.trees.dendrogram.highest_gap_cut``); ``threshold`` (a height, in the dendrogram's units)
   or ``n_trees`` (per architecture) replace the rule.
4. Each tree's centre is the mean of its members' weights; ``route`` sends a model to the
   nearest centre of its architecture (``metric`` "l2", or "l1" as in the arXiv v1 formula).
5. Unknown trees: each tree gets a radius, ``radius_margin`` times the ``radius_quantile``
   quantile of its members' distances to their centre (trees of fewer than 3 members borrow
   the median radius of the others). A model beyond the radius of its nearest centre, or of an
   architecture never seen in ``fit``, is routed to ``None``, not to the wrong expert.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from probex.trees.clustering import split_into_trees
from probex.trees.dendrogram import LINKAGE_METHODS, DendrogramData, dendrogram_data, tree_colours
from probex.trees.distances import METRICS, distances_to_centres, tree_means
from probex.errors import ParameterError, ProbeXError
from probex.estimator import Estimator, Rule, integer, one_of, real
from probex.trees.populations import (ArchitectureGroup, check_layer_exists, clustering_layer, layer_signature,
                                split_population, true_trees_of)
from probex.progress import Progress
from probex.storage import atomic_directory, holds_only, open_regular, read_regular_bytes

log = logging.getLogger(__name__)

_MIN_MEMBERS_FOR_RADIUS = 3
ROUTER_KIND = "probex-router"
ROUTER_FILES = {"router.json", "router.safetensors"}


def _is_layer_choice(layer: Any) -> bool:
    if layer is None or isinstance(layer, str):
        return True
    return isinstance(layer, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in layer.items())


@dataclass
class ArchitectureTrees:
    """The trees found within one architecture, and the dendrogram they were cut from.

    ``positions`` index the fitted population; ``linkage`` is scipy's matrix over the models at
    ``positions[linkage_rows]`` (all of them unless there were more than ``max_linkage_models``);
    ``strategy`` says how the distances were computed: "exact", "subset, confirmed" or
    "exact after a failed subset confirmation" ("added" for a tree given to ``add_tree``).
    """

    name: str
    layer: str | None
    shape: tuple[int, int]
    signature: tuple | None
    positions: np.ndarray
    linkage: np.ndarray
    linkage_rows: np.ndarray
    cut_height: float
    tree_indices: list[int]
    strategy: str


class TreeRouter(Estimator):
    """Finds the Model Trees of a population (hierarchical clustering) and routes new models.

    A scikit-learn estimator (``clone``, ``get_params``, ``set_params``; parameters checked at
    the start of ``fit``; NotFittedError before it). Hyperparameters, stored unchanged:
    ``layer`` (name, or dict architecture -> name; ModelZoo input only), ``method`` (scipy
    linkage method), ``metric`` ("l2" or "l1", for routing and radii; the clustering itself is
    on l2), ``threshold`` / ``n_trees`` (override the largest gap rule), ``min_gap_ratio``, ``radius_quantile``,
    ``radius_margin`` (None: never report unknown), ``max_coordinates``, ``max_linkage_models``
    (above it, the linkage runs on a random subset of models and the others join the nearest
    tree), ``random_state``.

    Learned: ``tree_names_``, ``n_trees_``, ``centers_`` (one [d_W, d_H] float32 tensor per
    tree), ``radii_`` [n_trees], ``labels_`` [N] (tree index of each fitted model),
    ``architectures_`` (list of ArchitectureTrees), ``ids_``, ``true_trees_``, ``tree_truth_``
    (tree -> majority true tree, when true trees are known), ``nearest_ids_`` (the model nearest
    each centre).
    """

    parameter_rules = {
        "layer": Rule("a layer name, a dict architecture -> layer name, or None", _is_layer_choice),
        "method": one_of(*LINKAGE_METHODS),
        "metric": one_of(*METRICS),
        "threshold": real(low=0, optional=True),
        "n_trees": integer(low=1, optional=True),
        "min_gap_ratio": real(low=1, low_open=True),
        "radius_quantile": real(low=0, high=1),
        "radius_margin": real(low=0, low_open=True, optional=True),
        "max_coordinates": integer(low=1),
        "max_linkage_models": integer(low=2),
        "random_state": integer(low=0),
    }
    _fit_hint = "call fit(population) first, or load a saved router with TreeRouter.load"

    def __init__(self, layer: str | dict[str, str] | None = None, method: str = "ward",
                 metric: str = "l2", threshold: float | None = None, n_trees: int | None = None,
                 min_gap_ratio: float = 2.0, radius_quantile: float = 0.99,
                 radius_margin: float | None = 1.5, max_coordinates: int = 2048,
                 max_linkage_models: int = 10_000, random_state: int = 0):
        self.layer = layer
        self.method = method
        self.metric = metric
        self.threshold = threshold
        self.n_trees = n_trees
        self.min_gap_ratio = min_gap_ratio
        self.radius_quantile = radius_quantile
        self.radius_margin = radius_margin
        self.max_coordinates = max_coordinates
        self.max_linkage_models = max_linkage_models
        self.random_state = random_state

    # ------------------------------------------------------------------ fitting
    def fit(self, population: Any, progress: Progress | None = None) -> "TreeRouter":
        """Find the trees of ``population`` (ModelZoo, LayerBank, tensor or array [N, d_W, d_H])."""
        self._check_params()
        self.__dict__.pop("tree_truth_", None)  # set last: the router is fitted once it is back
        check_layer_exists(self.layer, population)
        total, groups = split_population(population, partial(clustering_layer, self.layer), progress)
        if total == 0:
            raise ProbeXError("TreeRouter.fit: the population is empty; give it at least one model")
        self.tree_names_, self.centers_, self.architectures_ = [], [], []
        self.labels_ = np.full(total, -1, dtype=np.int64)
        self.ids_ = [str(i) for i in range(total)]
        true_trees: list | None = None
        member_distances: list[np.ndarray] = []
        nearest_ids: list[str] = []
        for number, group in enumerate(groups):
            rng = np.random.default_rng([self.random_state, number])
            split = split_into_trees(
                group.stack, method=self.method, metric=self.metric, threshold=self.threshold, n_trees=self.n_trees,
                min_gap_ratio=self.min_gap_ratio, max_coordinates=self.max_coordinates,
                max_linkage_models=self.max_linkage_models, rng=rng, progress=progress, name=group.display_name)
            first = len(self.tree_names_)
            n_local = split.centres.shape[0]
            for k in range(n_local):
                members = np.flatnonzero(split.labels == k)
                own = split.distances[members, k]
                member_distances.append(own)
                nearest_ids.append(group.ids[members[int(np.argmin(own))]])
                self.tree_names_.append(f"tree_{first + k}")
                self.centers_.append(split.centres[k].reshape(group.shape).clone())
            self.labels_[group.positions] = split.labels + first
            for position, model_id in zip(group.positions, group.ids):
                self.ids_[position] = model_id
            if group.true_trees is not None:
                true_trees = true_trees or [None] * total
                for position, tree in zip(group.positions, group.true_trees):
                    true_trees[position] = tree
            self.architectures_.append(ArchitectureTrees(
                name=group.display_name, layer=group.layer, shape=group.shape,
                signature=group.signature, positions=group.positions, linkage=split.linkage,
                linkage_rows=split.linkage_rows, cut_height=split.cut_height,
                tree_indices=list(range(first, first + n_local)), strategy=split.strategy))
        self.n_trees_ = len(self.tree_names_)
        self.radii_ = self._calibrate_radii(member_distances)
        self.nearest_ids_ = nearest_ids
        self.true_trees_ = true_trees
        self.tree_truth_ = self._majority_truth()
        log.info("TreeRouter: %d models -> %d trees in %d architectures",
                 total, self.n_trees_, len(self.architectures_))
        return self

    def _check_params(self) -> None:
        super()._check_params()
        if self.threshold is not None and self.n_trees is not None:
            raise ParameterError("TreeRouter: give threshold or n_trees, not both")

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "tree_truth_")

    def _calibrate_radii(self, member_distances: list[np.ndarray]) -> np.ndarray:
        radii = np.full(len(member_distances), np.nan)
        if self.radius_margin is None:
            return np.full(len(member_distances), np.inf)
        for k, own in enumerate(member_distances):
            if len(own) >= _MIN_MEMBERS_FOR_RADIUS:
                radii[k] = np.quantile(own, self.radius_quantile) * self.radius_margin
        calibrated = radii[np.isfinite(radii)]
        if len(calibrated) == 0:
            log.warning("TreeRouter: no tree has %d members to calibrate its radius; unknown trees "
                        "will not be detected", _MIN_MEMBERS_FOR_RADIUS)
            return np.full(len(member_distances), np.inf)
        radii[~np.isfinite(radii)] = np.median(calibrated)
        return radii

    def _majority_truth(self) -> dict[str, str]:
        if self.true_trees_ is None:
            return {}
        truth = {}
        for k, name in enumerate(self.tree_names_):
            known = [self.true_trees_[i] for i in np.flatnonzero(self.labels_ == k) if self.true_trees_[i] is not None]
            if known:
                truth[name] = Counter(known).most_common(1)[0][0]
        return truth

    # ------------------------------------------------------------------ routing
    def route(self, population: Any, return_distance: bool = False, progress: Progress | None = None):
        """The tree of each model of ``population`` (None: unknown tree or architecture).

        With ``return_distance``, also an array [N] of the distance to the nearest centre (NaN
        for an unknown architecture).
        """
        self._check_fitted()
        total, groups = split_population(population, self._route_layer_choice, progress)
        names: list[str | None] = [None] * total
        nearest_distance = np.full(total, np.nan)
        for group in groups:
            architecture = self._match(group)
            if architecture is None:
                log.info("TreeRouter: %d models of an architecture not seen in fit -> unknown", len(group.positions))
                continue
            trees = architecture.tree_indices
            centres = torch.stack([self.centers_[t].reshape(-1) for t in trees])
            distances = distances_to_centres(group.stack, centres, self.metric, progress)
            for position, row in zip(group.positions, distances):
                k = int(np.argmin(row))
                nearest_distance[position] = row[k]
                if row[k] <= self.radii_[trees[k]]:
                    names[position] = self.tree_names_[trees[k]]
        return (names, nearest_distance) if return_distance else names

    def score(self, population: Any, true_trees: Sequence | None = None) -> float:
        """Open-set routing accuracy: a model is right when its tree's majority true tree is its
        own, or when it is routed to None and its true tree was not in ``fit``."""
        self._check_fitted()
        if true_trees is None:
            true_trees = true_trees_of(population)
        if true_trees is None:
            raise ProbeXError("TreeRouter.score: the population carries no true tree names; pass true_trees")
        if not self.tree_truth_:
            raise ProbeXError("TreeRouter.score: fit saw no true tree names, so found trees cannot be matched to them")
        return self.score_routes(self.route(population), true_trees)

    def score_routes(self, routed: Sequence[str | None], true_trees: Sequence) -> float:
        """:meth:`score` of routes already computed (``route``'s answer), against their true trees."""
        self._check_fitted()
        if not self.tree_truth_:
            raise ProbeXError("TreeRouter.score: fit saw no true tree names, so found trees cannot be matched to them")
        known = set(self.tree_truth_.values())
        right = [(tree is None and truth not in known) or (tree is not None and self.tree_truth_.get(tree) == truth)
                 for tree, truth in zip(routed, true_trees)]
        return float(np.mean(right)) if right else float("nan")

    def _route_layer_choice(self, name: str, catalog: Sequence) -> str | None:
        signature = layer_signature(catalog)
        for architecture in self.architectures_:
            if architecture.signature is not None and architecture.signature == signature:
                return architecture.layer
        shapes = {info.name: tuple(info.shape) for info in catalog}
        for architecture in self.architectures_:
            if shapes.get(architecture.layer) == architecture.shape:
                return architecture.layer
        return None

    def _match(self, group: ArchitectureGroup) -> ArchitectureTrees | None:
        shape = group.shape
        if group.signature is not None:
            for architecture in self.architectures_:
                if architecture.signature == group.signature:
                    return architecture
        same_shape = [a for a in self.architectures_ if a.shape == shape]
        if group.layer is not None:
            named = [a for a in same_shape if a.layer == group.layer]
            if named:
                return named[0]
        if len(same_shape) > 1:
            raise ProbeXError(f"TreeRouter.route: several fitted architectures have layers of shape {shape}; "
                              "route a LayerBank (with its layer name) or a ModelZoo instead of a bare tensor")
        return same_shape[0] if same_shape else None

    # ------------------------------------------------------------------ growing
    def add_tree(self, name: str, members: Any, layer: str | None = None) -> "TreeRouter":
        """Add one known tree from its member models (a LayerBank, tensor, or ModelZoo of one
        architecture), leaving every existing tree as it is. Its radius is calibrated the same way."""
        self._check_fitted()
        if name in self.tree_names_:
            raise ProbeXError(f"TreeRouter.add_tree: a tree named {name!r} exists already")
        choose = (lambda arch, catalog: layer or self._route_layer_choice(arch, catalog)
                  or clustering_layer(self.layer, arch, catalog))
        _, groups = split_population(members, choose, None)
        if len(groups) != 1:
            raise ProbeXError(f"TreeRouter.add_tree: the members of {name!r} span {len(groups)} architectures; give one")
        group = groups[0]
        everyone = np.arange(len(group.positions))
        centre = tree_means(group.stack, everyone, np.zeros(len(everyone), dtype=np.int64), 1, None)
        own = distances_to_centres(group.stack, centre, self.metric, None)[:, 0]
        index = len(self.tree_names_)
        self.tree_names_.append(name)
        self.centers_.append(centre[0].reshape(group.shape).clone())
        self.nearest_ids_.append(group.ids[int(np.argmin(own))])
        radius = np.inf if self.radius_margin is None else (
            np.quantile(own, self.radius_quantile) * self.radius_margin if len(own) >= _MIN_MEMBERS_FOR_RADIUS
            else float(np.median(self.radii_)))
        self.radii_ = np.append(self.radii_, radius)
        self.n_trees_ = len(self.tree_names_)
        try:
            architecture = self._match(group)
        except ProbeXError:
            architecture = None
        if architecture is None:
            self.architectures_.append(ArchitectureTrees(
                name=group.display_name, layer=group.layer, shape=group.shape,
                signature=group.signature, positions=np.zeros(0, dtype=np.int64),
                linkage=np.zeros((0, 4)), linkage_rows=np.zeros(0, dtype=np.int64), cut_height=0.0,
                tree_indices=[index], strategy="added"))
        else:
            architecture.tree_indices.append(index)
        return self

    # ------------------------------------------------------------------ dendrogram data
    def dendrogram(self, architecture: int | str = 0, max_leaves: int = 200) -> DendrogramData:
        """The dendrogram of one architecture, ready to plot (see ``probex.figures.dendrogram_figure``).

        Above ``max_leaves`` models it is truncated to the last ``max_leaves`` merged clusters
        (scipy ``truncate_mode="lastp"``); each such leaf reports its size and majority trees.
        """
        self._check_fitted()
        arch = self._architecture(architecture)
        positions = arch.positions[arch.linkage_rows]
        colours = tree_colours(self.tree_names_)
        return dendrogram_data(
            arch.linkage, leaf_trees=[self.tree_names_[self.labels_[p]] for p in positions],
            leaf_ids=[self.ids_[p] for p in positions],
            leaf_true_trees=[self.true_trees_[p] for p in positions] if self.true_trees_ else None,
            tree_colors={self.tree_names_[t]: colours[self.tree_names_[t]] for t in arch.tree_indices},
            architecture=arch.name, layer=arch.layer, cut=arch.cut_height, max_leaves=max_leaves)

    def _architecture(self, architecture: int | str) -> ArchitectureTrees:
        if isinstance(architecture, int):
            return self.architectures_[architecture]
        for candidate in self.architectures_:
            if candidate.name == architecture:
                return candidate
        raise ProbeXError(f"TreeRouter: no architecture {architecture!r}; "
                          f"known: {[a.name for a in self.architectures_]}")

    def tree_table(self) -> list[dict]:
        """One row per tree: name, architecture, layer, size, nearest model, radius, true tree."""
        self._check_fitted()
        sizes = np.bincount(self.labels_, minlength=self.n_trees_)
        rows = []
        for architecture in self.architectures_:
            for k in architecture.tree_indices:
                name = self.tree_names_[k]
                rows.append({"tree": name, "architecture": architecture.name, "layer": architecture.layer,
                             "size": int(sizes[k]), "nearest_model": self.nearest_ids_[k],
                             "radius": float(self.radii_[k]), "true_tree": self.tree_truth_.get(name)})
        return rows

    # ------------------------------------------------------------------ save / load
    def save(self, directory: str | Path) -> Path:
        """Write the fitted router to ``directory`` (router.safetensors + router.json), atomically."""
        from safetensors.torch import save_file

        self._check_fitted()
        directory = Path(directory)
        tensors = {"labels": torch.from_numpy(self.labels_), "radii": torch.from_numpy(self.radii_.astype(np.float64))}
        for k, centre in enumerate(self.centers_):
            tensors[f"center.{k}"] = centre.contiguous()
        meta = []
        for a, arch in enumerate(self.architectures_):
            tensors[f"arch.{a}.positions"] = torch.from_numpy(np.asarray(arch.positions, dtype=np.int64))
            tensors[f"arch.{a}.linkage"] = torch.from_numpy(np.ascontiguousarray(arch.linkage, dtype=np.float64))
            tensors[f"arch.{a}.linkage_rows"] = torch.from_numpy(np.asarray(arch.linkage_rows, dtype=np.int64))
            meta.append({"name": arch.name, "layer": arch.layer, "shape": list(arch.shape),
                         "signature": [list(item) for item in arch.signature] if arch.signature else None,
                         "cut_height": arch.cut_height, "tree_indices": arch.tree_indices, "strategy": arch.strategy})
        state = {"params": self.get_params(deep=False), "tree_names": self.tree_names_, "architectures": meta,
                 "ids": self.ids_, "true_trees": self.true_trees_, "nearest_ids": self.nearest_ids_}
        with atomic_directory(directory, ROUTER_KIND, legacy=lambda folder: holds_only(folder, ROUTER_FILES)) as tmp:
            save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / "router.safetensors"))
            (tmp / "router.json").write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "TreeRouter":
        """Read a router written by ``save``."""
        from safetensors.torch import load_file

        directory = Path(directory)
        try:
            state = json.loads(read_regular_bytes(directory / "router.json", 256 * 2**20, "router state"))
            open_regular(directory / "router.safetensors").close()  # a FIFO or a device would block the loader
            tensors = load_file(str(directory / "router.safetensors"))
        except (OSError, ValueError) as error:
            raise ProbeXError(f"{directory}: not a saved TreeRouter ({error}); write one with TreeRouter.save") from error
        try:
            return cls._restore_saved(state, tensors)
        except (KeyError, TypeError, IndexError) as error:
            raise ProbeXError(f"{directory}: a damaged saved TreeRouter ({type(error).__name__}: {error}); "
                              "save it again") from None

    @classmethod
    def _restore_saved(cls, state: dict, tensors: dict) -> "TreeRouter":
        router = cls(**state["params"])
        router._check_params()
        router.tree_names_ = list(state["tree_names"])
        router.n_trees_ = len(router.tree_names_)
        router.centers_ = [tensors[f"center.{k}"] for k in range(router.n_trees_)]
        router.radii_ = tensors["radii"].numpy()
        router.labels_ = tensors["labels"].numpy()
        router.ids_, router.true_trees_ = state["ids"], state["true_trees"]
        router.nearest_ids_ = state["nearest_ids"]
        router.architectures_ = [ArchitectureTrees(
            name=m["name"], layer=m["layer"], shape=tuple(m["shape"]),
            signature=tuple((item[0], tuple(item[1])) for item in m["signature"]) if m["signature"] else None,
            positions=tensors[f"arch.{a}.positions"].numpy(), linkage=tensors[f"arch.{a}.linkage"].numpy(),
            linkage_rows=tensors[f"arch.{a}.linkage_rows"].numpy(), cut_height=m["cut_height"],
            tree_indices=list(m["tree_indices"]), strategy=m["strategy"]) for a, m in enumerate(state["architectures"])]
        router.tree_truth_ = router._majority_truth()
        return router
