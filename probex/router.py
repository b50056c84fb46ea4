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
   clustering. Within a ModelZoo architecture, the layer is ``layer`` when given, else the
   largest layer (most values; the first such in catalog order).
2. Within an architecture, scipy ``linkage`` (``method``, default ``"ward"``) on the l2
   distances between the flattened layers. Ward is the default because it is robust: a lone
   outlier model costs little to merge into a big tree (Ward's merge height grows with the
   sizes of what it merges), so it does not become a tree of its own, whereas single and
   average linkage read a forest of models with no shared root as hundreds of singleton trees.
3. The number of trees is read off the dendrogram by the *highest significant gap*: sort the
   merge heights h_1 <= ... <= h_{n-1}, raise those below their median to the median (so
   duplicate or near-duplicate models at the bottom cannot create a spurious gap), and, going
   down from the top merge, cut at the first gap whose ratio h_{i+1} / h_i reaches
   ``min_gap_ratio`` (2.0), at the geometric mean of the two heights; that leaves n - i trees.
   No such gap: the architecture is a single tree. Why the highest gap and not the largest:
   models fine-tuned on a few discrete tasks form tight task clusters inside their tree, and
   the gap below those clusters can be larger than the gap between trees; trees are the
   coarsest structure, so the rule looks from the top. ``threshold`` (a height, in the
   dendrogram's units) or ``n_trees`` (per architecture) replace the rule.
4. Each tree's centre is the mean of its members' weights; ``route`` sends a model to the
   nearest centre of its architecture (``metric`` "l2", or "l1" as in the arXiv v1 formula).
5. Unknown trees: each tree gets a radius, ``radius_margin`` times the ``radius_quantile``
   quantile of its members' distances to their centre (trees of fewer than 3 members borrow
   the median radius of the others). A model beyond the radius of its nearest centre, or of an
   architecture never seen in ``fit``, is routed to ``None``, not to the wrong expert.

Scale: when a layer has more than ``max_coordinates`` values, the linkage runs on a random
subset of coordinates (contiguous blocks, rescaled so heights estimate full distances), and the
split is then *confirmed* with exact full-dimensional distances, streamed in chunks: every model
must be nearest (exactly) to its own tree's centre, and both the exact distances between
centres and each tree's exact root-mean-square spread around its centre must agree with their
subset estimates within 25% (a structure the subset missed shows up as a spread mismatch). When the confirmation fails, the linkage is
recomputed on all coordinates. Inputs may be memory-mapped (e.g. ``torch.from_numpy`` of a
float16 ``numpy.memmap``): the router reads coordinate blocks and row chunks, never the whole.
"""

from __future__ import annotations

import json
import logging
import math
import time
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from scipy.cluster import hierarchy

from probex.errors import ProbeXError, ZooError
from probex.storage import atomic_directory

log = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]

#: Colours of the trees, in order (links above the cut are drawn in ``ABOVE_CUT_COLOR``).
TREE_COLORS = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
    "#e377c2", "#17becf", "#bcbd22", "#aec7e8", "#ffbb78", "#98df8a",
)
ABOVE_CUT_COLOR = "#9e9e9e"
LINKAGE_METHODS = ("ward", "single", "complete", "average", "weighted")
METRICS = ("l2", "l1")

_BLOCK = 128  # coordinates per contiguous block of the random subset (few pages touched per model)
_CHUNK_BYTES = 64 * 2**20  # float32 bytes of one streamed row chunk (one reused buffer)
_CANCELLATION_GUARD = 1e-2 / 1e-6  # float32 products err by <~1e-6 of the norms; keep distances within 1%
_CONFIRM_TOLERANCE = 0.25  # relative disagreement allowed between subset and exact centre distances
_MIN_MEMBERS_FOR_RADIUS = 3


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


@dataclass
class _Group:
    """One architecture's models of a population: the stacked layer and where they sit."""

    name: str | None
    layer: str | None
    signature: tuple | None
    X: torch.Tensor  # [n, d_W, d_H], possibly memory-mapped
    positions: np.ndarray
    ids: list[str]
    true_trees: list | None


class TreeRouter:
    """Finds the Model Trees of a population (hierarchical clustering) and routes new models.

    Hyperparameters (stored unchanged, scikit-learn style): ``layer`` (name, or dict
    architecture -> name; ModelZoo input only), ``method`` (scipy linkage method), ``metric``
    ("l2" or "l1", for routing and radii; the clustering itself is on l2), ``threshold`` /
    ``n_trees`` (override the largest gap rule), ``min_gap_ratio``, ``radius_quantile``,
    ``radius_margin`` (None: never report unknown), ``max_coordinates``, ``max_linkage_models``
    (above it, the linkage runs on a random subset of models and the others join the nearest
    tree), ``random_state``.

    Learned: ``tree_names_``, ``n_trees_``, ``centers_`` (one [d_W, d_H] float32 tensor per
    tree), ``radii_`` [n_trees], ``labels_`` [N] (tree index of each fitted model),
    ``architectures_`` (list of ArchitectureTrees), ``ids_``, ``true_trees_``, ``tree_truth_``
    (tree -> majority true tree, when true trees are known), ``nearest_ids_`` (the model nearest
    each centre).
    """

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
        self._check_parameters()
        self._check_layer_exists(population)
        total, groups = _split_population(population, self._fit_layer_choice, progress)
        if total == 0:
            raise ProbeXError("TreeRouter.fit: the population is empty; give it at least one model")
        self.tree_names_, self.centers_, radii, self.architectures_ = [], [], [], []
        self.labels_ = np.full(total, -1, dtype=np.int64)
        self.ids_ = [str(i) for i in range(total)]
        true_trees: list | None = None
        member_distances: list[np.ndarray] = []
        nearest_ids: list[str] = []
        for number, group in enumerate(groups):
            rng = np.random.default_rng([self.random_state, number])
            local, linkage, rows, cut, strategy, centres, distances = self._cluster(group, rng, progress)
            first = len(self.tree_names_)
            n_local = centres.shape[0]
            for k in range(n_local):
                members = np.flatnonzero(local == k)
                own = distances[members, k]
                member_distances.append(own)
                nearest_ids.append(group.ids[members[int(np.argmin(own))]])
                self.tree_names_.append(f"tree_{first + k}")
                self.centers_.append(centres[k].reshape(group.X.shape[1:]).clone())
            self.labels_[group.positions] = local + first
            for position, model_id in zip(group.positions, group.ids):
                self.ids_[position] = model_id
            if group.true_trees is not None:
                true_trees = true_trees or [None] * total
                for position, tree in zip(group.positions, group.true_trees):
                    true_trees[position] = tree
            self.architectures_.append(ArchitectureTrees(
                name=group.name or _shape_name(group), layer=group.layer,
                shape=tuple(group.X.shape[1:]), signature=group.signature,
                positions=group.positions, linkage=linkage, linkage_rows=rows, cut_height=cut,
                tree_indices=list(range(first, first + n_local)), strategy=strategy))
        self.n_trees_ = len(self.tree_names_)
        self.radii_ = self._calibrate_radii(member_distances)
        self.nearest_ids_ = nearest_ids
        self.true_trees_ = true_trees
        self.tree_truth_ = self._majority_truth()
        log.info("TreeRouter: %d models -> %d trees in %d architectures",
                 total, self.n_trees_, len(self.architectures_))
        return self

    def _check_parameters(self) -> None:
        if self.method not in LINKAGE_METHODS:
            raise ProbeXError(f"TreeRouter: method {self.method!r} unknown; use one of {LINKAGE_METHODS}")
        if self.metric not in METRICS:
            raise ProbeXError(f"TreeRouter: metric {self.metric!r} unknown; use one of {METRICS}")
        if self.threshold is not None and self.n_trees is not None:
            raise ProbeXError("TreeRouter: give threshold or n_trees, not both")

    def _check_layer_exists(self, population: Any) -> None:
        """A layer name given for a ModelZoo must exist in at least one of its architectures."""
        if not isinstance(self.layer, str) or not hasattr(population, "architectures"):
            return
        catalogs = [sub.catalog() for sub in population.architectures().values()]
        if not any(self.layer in {info.name for info in catalog} for catalog in catalogs):
            names = [info.name for catalog in catalogs for info in catalog]
            raise ZooError(f"{getattr(population, 'root', 'zoo')}: no architecture has a layer {self.layer!r}; "
                           f"available: {', '.join(names[:20])}{', ...' if len(names) > 20 else ''}")

    def _fit_layer_choice(self, name: str, catalog: Sequence) -> str:
        """The layer to cluster an architecture on: the one asked for, else the largest."""
        wanted = self.layer.get(name) if isinstance(self.layer, dict) else self.layer
        names = [info.name for info in catalog]
        if wanted is not None and wanted in names:
            return wanted
        if wanted is not None and not isinstance(self.layer, str):
            raise ZooError(f"architecture {name!r}: layer {wanted!r} missing; available: {', '.join(names[:20])}")
        largest = max(catalog, key=lambda info: math.prod(info.shape))  # first of the largest
        if wanted is not None:
            log.info("architecture %s has no layer %r; clustering on its largest, %r", name, wanted, largest.name)
        return largest.name

    def _cluster(self, group: _Group, rng: np.random.Generator, progress: Progress | None):
        """Cluster one architecture: local labels, linkage, cut, centres [K, D], distances [n, K]."""
        n = len(group.positions)
        flat = group.X.reshape(n, -1)
        dim = flat.shape[1]
        rows = np.arange(n)
        if n > self.max_linkage_models:
            rows = np.sort(rng.choice(n, self.max_linkage_models, replace=False))
        blocks = _coordinate_blocks(dim, self.max_coordinates, rng) if dim > self.max_coordinates else None
        strategy = "exact"
        while True:
            started = time.perf_counter()
            gram = _gram(flat, rows, blocks, dim, progress)
            linkage = _linkage(gram, self.method)
            linked = time.perf_counter()
            cut = self._cut_height(linkage[:, 2], len(rows))
            link_labels = _first_appearance(hierarchy.fcluster(linkage, cut, "distance") if len(rows) > 1
                                            else np.ones(1, dtype=int))
            labels = np.full(n, -1, dtype=np.int64)
            labels[rows] = link_labels
            n_local = int(link_labels.max()) + 1
            if len(rows) < n:  # models outside the linkage join the nearest tree (exact distances)
                centres = _centres(flat, rows, link_labels, n_local, progress)
                rest = np.setdiff1d(np.arange(n), rows)
                labels[rest] = _distances(flat, centres, "l2", progress, rows=rest).argmin(1)
            centres = _centres(flat, np.arange(n), labels, n_local, progress)
            distances = _distances(flat, centres, "l2", progress)
            log.info("architecture %s: linkage of %d models on %s coordinates %.1f s, exact centres and "
                     "distances %.1f s", group.name or _shape_name(group), len(rows),
                     dim if blocks is None else sum(b - a for a, b in blocks), linked - started,
                     time.perf_counter() - linked)
            if blocks is None:
                break
            if _confirmed(distances, labels, centres, gram, link_labels, n_local):
                strategy = "subset, confirmed"
                break
            log.warning("architecture %s: the subset-of-coordinates split was not confirmed by exact "
                        "distances; recomputing the linkage on all %d coordinates (slow)", group.name, dim)
            blocks, strategy = None, "exact after a failed subset confirmation"
        if self.metric != "l2":
            distances = _distances(flat, centres, self.metric, progress)
        return labels, linkage, rows, float(cut), strategy, centres, distances

    def _cut_height(self, heights: np.ndarray, n_models: int) -> float:
        """Where to cut the dendrogram (see the module docstring for the rule)."""
        if n_models < 2:
            return 0.0
        h = np.sort(heights)
        above_all = float(h[-1]) * 1.05 + 1e-12
        if self.threshold is not None:
            return float(self.threshold)
        if self.n_trees is not None:
            k = min(max(int(self.n_trees), 1), n_models)
            return above_all if k == 1 else float(h[-k] + h[-k + 1]) / 2
        return highest_gap_cut(h, self.min_gap_ratio)[1]

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
        total, groups = _split_population(population, self._route_layer_choice, progress)
        names: list[str | None] = [None] * total
        nearest_distance = np.full(total, np.nan)
        for group in groups:
            architecture = self._match(group)
            if architecture is None:
                log.info("TreeRouter: %d models of an architecture not seen in fit -> unknown", len(group.positions))
                continue
            trees = architecture.tree_indices
            centres = torch.stack([self.centers_[t].reshape(-1) for t in trees])
            flat = group.X.reshape(len(group.positions), -1)
            distances = _distances(flat, centres, self.metric, progress)
            for position, row in zip(group.positions, distances):
                k = int(np.argmin(row))
                nearest_distance[position] = row[k]
                if row[k] <= self.radii_[trees[k]]:
                    names[position] = self.tree_names_[trees[k]]
        return (names, nearest_distance) if return_distance else names

    def score(self, population: Any, true_trees: Sequence | None = None) -> float:
        """Open-set routing accuracy: a model is right when its tree's majority true tree is its
        own, or when it is routed to None and its true tree was not in ``fit``."""
        if true_trees is None:
            true_trees = _true_trees_of(population)
        if true_trees is None:
            raise ProbeXError("TreeRouter.score: the population carries no true tree names; pass true_trees")
        if not self.tree_truth_:
            raise ProbeXError("TreeRouter.score: fit saw no true tree names, so found trees cannot be matched to them")
        known = set(self.tree_truth_.values())
        routed = self.route(population)
        right = [(tree is None and truth not in known) or (tree is not None and self.tree_truth_.get(tree) == truth)
                 for tree, truth in zip(routed, true_trees)]
        return float(np.mean(right)) if right else float("nan")

    def _route_layer_choice(self, name: str, catalog: Sequence) -> str | None:
        signature = _signature(catalog)
        for architecture in self.architectures_:
            if architecture.signature is not None and architecture.signature == signature:
                return architecture.layer
        shapes = {info.name: tuple(info.shape) for info in catalog}
        for architecture in self.architectures_:
            if shapes.get(architecture.layer) == architecture.shape:
                return architecture.layer
        return None

    def _match(self, group: _Group) -> ArchitectureTrees | None:
        shape = tuple(group.X.shape[1:])
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

    def _check_fitted(self) -> None:
        if not hasattr(self, "tree_names_"):
            raise ProbeXError("TreeRouter: call fit(population) before route/score/dendrogram")

    # ------------------------------------------------------------------ growing
    def add_tree(self, name: str, members: Any, layer: str | None = None) -> "TreeRouter":
        """Add one known tree from its member models (a LayerBank, tensor, or ModelZoo of one
        architecture), leaving every existing tree as it is. Its radius is calibrated the same way."""
        self._check_fitted()
        if name in self.tree_names_:
            raise ProbeXError(f"TreeRouter.add_tree: a tree named {name!r} exists already")
        choose = (lambda arch, catalog: layer or self._route_layer_choice(arch, catalog)
                  or self._fit_layer_choice(arch, catalog))
        _, groups = _split_population(members, choose, None)
        if len(groups) != 1:
            raise ProbeXError(f"TreeRouter.add_tree: the members of {name!r} span {len(groups)} architectures; give one")
        group = groups[0]
        flat = group.X.reshape(len(group.positions), -1)
        everyone = np.arange(len(group.positions))
        centre = _centres(flat, everyone, np.zeros(len(everyone), dtype=np.int64), 1, None)
        own = _distances(flat, centre, self.metric, None)[:, 0]
        index = len(self.tree_names_)
        self.tree_names_.append(name)
        self.centers_.append(centre[0].reshape(group.X.shape[1:]).clone())
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
                name=group.name or _shape_name(group), layer=group.layer, shape=tuple(group.X.shape[1:]),
                signature=group.signature, positions=np.zeros(0, dtype=np.int64),
                linkage=np.zeros((0, 4)), linkage_rows=np.zeros(0, dtype=np.int64), cut_height=0.0,
                tree_indices=[index], strategy="added"))
        else:
            architecture.tree_indices.append(index)
        return self

    # ------------------------------------------------------------------ dendrogram data
    def dendrogram(self, architecture: int | str = 0, max_leaves: int = 200) -> "DendrogramData":
        """The dendrogram of one architecture, ready to plot (see ``probex.figures.dendrogram_figure``).

        Above ``max_leaves`` models it is truncated to the last ``max_leaves`` merged clusters
        (scipy ``truncate_mode="lastp"``); each such leaf reports its size and majority trees.
        """
        self._check_fitted()
        arch = self._architecture(architecture)
        n = len(arch.linkage_rows)
        positions = arch.positions[arch.linkage_rows]
        local = self.labels_[positions]
        node_tree = np.concatenate([local, np.zeros(max(n - 1, 0), dtype=np.int64)])
        for j, (a, b) in enumerate(arch.linkage[:, :2].astype(int)):
            node_tree[n + j] = node_tree[a] if node_tree[a] == node_tree[b] else -1
        colours = {name: TREE_COLORS[k % len(TREE_COLORS)] for k, name in enumerate(self.tree_names_)}
        truncated = n > max_leaves
        if n < 2:
            info = {"icoord": [], "dcoord": [], "ivl": [self.ids_[p] for p in positions], "leaves": list(range(n)),
                    "color_list": []}
        else:
            info = hierarchy.dendrogram(
                arch.linkage, no_plot=True, truncate_mode="lastp" if truncated else None,
                p=max_leaves, labels=[self.ids_[p] for p in positions],
                link_color_func=lambda node: colours[self.tree_names_[node_tree[node]]] if node_tree[node] >= 0
                else ABOVE_CUT_COLOR)
        nodes = hierarchy.to_tree(arch.linkage, rd=True)[1] if n > 1 else []
        leaf_ids, leaf_trees, leaf_true, leaf_sizes = [], [], [], []
        for node in info["leaves"]:
            members = nodes[node].pre_order() if node >= n else [node]
            trees = [self.tree_names_[self.labels_[positions[m]]] for m in members]
            truth = [self.true_trees_[positions[m]] for m in members] if self.true_trees_ else []
            truth = [t for t in truth if t is not None]
            leaf_ids.append(self.ids_[positions[members[0]]] if len(members) == 1 else f"({len(members)} models)")
            leaf_trees.append(Counter(trees).most_common(1)[0][0])
            leaf_true.append(Counter(truth).most_common(1)[0][0] if truth else None)
            leaf_sizes.append(len(members))
        return DendrogramData(
            architecture=arch.name, layer=arch.layer, scipy=info, cut_height=arch.cut_height,
            tree_colors={self.tree_names_[t]: colours[self.tree_names_[t]] for t in arch.tree_indices},
            leaf_ids=leaf_ids, leaf_trees=leaf_trees, leaf_true_trees=leaf_true, leaf_sizes=leaf_sizes,
            truncated=truncated)

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
        state = {"params": self.get_params(), "tree_names": self.tree_names_, "architectures": meta,
                 "ids": self.ids_, "true_trees": self.true_trees_, "nearest_ids": self.nearest_ids_}
        with atomic_directory(directory) as tmp:
            save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / "router.safetensors"))
            (tmp / "router.json").write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "TreeRouter":
        """Read a router written by ``save``."""
        from safetensors.torch import load_file

        directory = Path(directory)
        try:
            state = json.loads((directory / "router.json").read_text(encoding="utf-8"))
            tensors = load_file(str(directory / "router.safetensors"))
        except (OSError, ValueError) as error:
            raise ProbeXError(f"{directory}: not a saved TreeRouter ({error}); write one with TreeRouter.save") from error
        router = cls(**state["params"])
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

    def get_params(self) -> dict[str, Any]:
        """The hyperparameters, as given to ``__init__``."""
        return {name: getattr(self, name) for name in (
            "layer", "method", "metric", "threshold", "n_trees", "min_gap_ratio", "radius_quantile",
            "radius_margin", "max_coordinates", "max_linkage_models", "random_state")}

    def __repr__(self) -> str:
        fitted = f", n_trees_={self.n_trees_}" if hasattr(self, "n_trees_") else ""
        return f"TreeRouter(method={self.method!r}, metric={self.metric!r}{fitted})"


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


def highest_gap_cut(heights: np.ndarray, min_gap_ratio: float = 2.0) -> tuple[int, float]:
    """The highest significant gap rule: (number of trees, cut height) from merge heights [n - 1]."""
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


# ---------------------------------------------------------------------- populations
def _split_population(population: Any, choose_layer: Callable[[str, Sequence], str | None],
                      progress: Progress | None) -> tuple[int, list[_Group]]:
    """(number of models, their architecture groups) of a ModelZoo, LayerBank, tensor or array,
    or of a list of those (one after the other, e.g. one LayerBank per architecture)."""
    if isinstance(population, (list, tuple)):
        total, groups = 0, []
        for part in population:
            count, part_groups = _split_population(part, choose_layer, progress)
            for group in part_groups:
                group.positions = group.positions + total
            total, groups = total + count, groups + part_groups
        return total, groups
    if hasattr(population, "architectures") and hasattr(population, "bank"):
        return _zoo_groups(population, choose_layer, progress)
    layer = getattr(population, "layer", None)
    X = _as_tensor(getattr(population, "X", population))
    n = X.shape[0]
    ids = getattr(population, "ids", None)
    ids = [str(i) for i in (range(n) if ids is None else ids)]
    return n, [_Group(name=None, layer=layer, signature=None, X=X, positions=np.arange(n), ids=ids,
                      true_trees=_true_trees_of(population))]


def _zoo_groups(zoo: Any, choose_layer: Callable, progress: Progress | None) -> tuple[int, list[_Group]]:
    position_of = {record.id: i for i, record in enumerate(zoo.records)}
    groups = []
    for name, sub in zoo.architectures().items():
        catalog = sub.catalog()
        layer = choose_layer(name, catalog)
        if layer is None:  # an architecture the router does not know: leave its models unrouted
            continue
        bank = sub.bank(layer, progress=progress)
        ids = [str(i) for i in bank.ids]
        groups.append(_Group(name=name, layer=layer, signature=_signature(catalog), X=_as_tensor(bank.X),
                             positions=np.array([position_of[i] for i in ids], dtype=np.int64), ids=ids,
                             true_trees=_true_trees_of(bank)))
    return len(position_of), groups


def _true_trees_of(population: Any) -> list | None:
    if isinstance(population, (list, tuple)):
        parts = [(_true_trees_of(part), _count(part)) for part in population]
        trees = sum((part or [None] * count for part, count in parts), [])
        return None if all(tree is None for tree in trees) else trees
    if hasattr(population, "architectures"):  # a ModelZoo: .trees is its set of names, records say per model
        trees = [record.tree for record in population.records]
    else:
        trees = getattr(population, "trees", None)
    if trees is None or all(tree is None for tree in trees):
        return None
    return list(trees)


def _count(population: Any) -> int:
    if hasattr(population, "records"):
        return len(population.records)
    return len(getattr(population, "X", population))


def _as_tensor(X: Any) -> torch.Tensor:
    if isinstance(X, np.ndarray):
        with warnings.catch_warnings():  # read-only memory maps are fine: the router never writes
            warnings.simplefilter("ignore", UserWarning)
            X = torch.from_numpy(X)
    if not isinstance(X, torch.Tensor):
        raise ProbeXError(f"TreeRouter: cannot read a population of type {type(X).__name__}; give a ModelZoo, "
                          "a LayerBank or a tensor [N, d_W, d_H]")
    if X.ndim == 2:
        X = X.unsqueeze(-1)
    if X.ndim != 3:
        raise ProbeXError(f"TreeRouter: expected a tensor [N, d_W, d_H], got shape {tuple(X.shape)}")
    return X


def _signature(catalog: Sequence) -> tuple:
    return tuple(sorted((info.name, tuple(int(s) for s in info.shape)) for info in catalog))


def _shape_name(group: _Group) -> str:
    shape = "x".join(str(s) for s in group.X.shape[1:])
    return f"{group.layer} [{shape}]" if group.layer else f"[{shape}]"


# ---------------------------------------------------------------------- distances
def _coordinate_blocks(dim: int, count: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """About ``count`` coordinates of [0, dim) as sorted random contiguous blocks."""
    n_blocks = max(1, count // _BLOCK)
    starts = np.sort(rng.choice(dim // _BLOCK, size=min(n_blocks, dim // _BLOCK), replace=False)) * _BLOCK
    return [(int(s), int(min(s + _BLOCK, dim))) for s in starts]


def _gram(flat: torch.Tensor, rows: np.ndarray, blocks: list[tuple[int, int]] | None, dim: int,
          progress: Progress | None) -> np.ndarray:
    """Centred float64 Gram matrix [r, r] of ``flat[rows]`` on the coordinate blocks (None: all),
    rescaled so that its distances estimate full-dimensional ones."""
    index = torch.from_numpy(rows)
    everyone = len(rows) == flat.shape[0]
    if blocks is None:  # all coordinates, streamed in column chunks of bounded memory
        width = max(1, _CHUNK_BYTES // (8 * len(rows)))
        groups = [[(start, min(start + width, dim))] for start in range(0, dim, width)]
        scale = 1.0
    else:  # the subset, read in one go and rescaled so squared distances estimate full ones
        groups = [blocks]
        scale = dim / sum(stop - start for start, stop in blocks)
    gram = torch.zeros(len(rows), len(rows), dtype=torch.float64)
    for done, group in enumerate(groups):
        parts = [flat[:, start:stop] if everyone else flat[:, start:stop].index_select(0, index) for start, stop in group]
        chunk = torch.cat(parts, dim=1).to(torch.float64)
        chunk -= chunk.mean(0, keepdim=True)
        gram.addmm_(chunk, chunk.T, alpha=scale)
        if progress:
            progress(done + 1, len(groups), "pairwise distances")
    return gram.numpy()


def _linkage(gram: np.ndarray, method: str) -> np.ndarray:
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


def _first_appearance(cluster_ids: np.ndarray) -> np.ndarray:
    """Renumber cluster ids 0, 1, ... in order of first appearance (deterministic names)."""
    order: dict[int, int] = {}
    return np.array([order.setdefault(int(c), len(order)) for c in cluster_ids], dtype=np.int64)


def _row_chunks(flat: torch.Tensor, rows: np.ndarray):
    """(offset, float32 rows) chunks of ``flat[rows]``; each chunk reuses one buffer, so a caller
    must be done with a chunk before asking for the next."""
    step = max(1, _CHUNK_BYTES // (4 * flat.shape[1]))
    buffer = torch.empty(min(step, len(rows)), flat.shape[1], dtype=torch.float32)
    for start in range(0, len(rows), step):
        part = rows[start:start + step]
        chunk = buffer[:len(part)]
        if part[-1] - part[0] + 1 == len(part):  # contiguous rows: one slice, no gather
            chunk.copy_(flat[int(part[0]):int(part[-1]) + 1])
        else:
            chunk.copy_(flat.index_select(0, torch.from_numpy(part)))
        yield start, chunk


def _centres(flat: torch.Tensor, rows: np.ndarray, labels: np.ndarray, n_trees: int,
             progress: Progress | None) -> torch.Tensor:
    """Mean of each tree's members [n_trees, D] (float32), streamed over row chunks."""
    sums = torch.zeros(n_trees, flat.shape[1], dtype=torch.float64)
    for start, chunk in _row_chunks(flat, rows):
        onehot = torch.zeros(n_trees, len(chunk))
        onehot[torch.from_numpy(labels[start:start + len(chunk)]), torch.arange(len(chunk))] = 1.0
        sums.add_(onehot @ chunk)  # a small float32 sum per chunk, float64 across chunks
        if progress:
            progress(start + len(chunk), len(rows), "tree centres")
    counts = torch.from_numpy(np.bincount(labels, minlength=n_trees)).clamp(min=1).to(torch.float64)
    return (sums / counts[:, None]).to(torch.float32)


def _distances(flat: torch.Tensor, centres: torch.Tensor, metric: str, progress: Progress | None,
               rows: np.ndarray | None = None) -> np.ndarray:
    """Exact distances [len(rows), K] from models to centres, summed over differences (never the
    |x|^2 - 2 x.c + |c|^2 shortcut, whose cancellation ruins the small within-tree distances)."""
    rows = np.arange(flat.shape[0]) if rows is None else rows
    out = np.empty((len(rows), centres.shape[0]))
    # l2 goes through one matrix product: |x-m|^2 - 2 (x-m).(c-m) + |c-m|^2 around the mean m of
    # the centres; rows where float32 cancellation could exceed 1% are redone from differences
    middle = centres.mean(0)
    offsets = centres - middle
    offset_norms = offsets.double().pow(2).sum(1)
    for start, chunk in _row_chunks(flat, rows):
        if metric == "l1":
            value = torch.cdist(chunk, centres, p=1.0).double()
        else:
            chunk.sub_(middle)
            norms = torch.linalg.vector_norm(chunk, dim=1).double().pow(2)
            squared = norms[:, None] + offset_norms[None, :] - 2.0 * (chunk @ offsets.T).double()
            risky = (norms[:, None] + offset_norms[None, :]) > _CANCELLATION_GUARD * squared
            if risky.any():
                redo = risky.any(1)
                exact = torch.cdist(chunk[redo], offsets, compute_mode="donot_use_mm_for_euclid_dist")
                squared[redo] = exact.double().pow(2)
            value = squared.clamp(min=0.0).sqrt()
        out[start:start + len(chunk)] = value.numpy()
        if progress:
            progress(start + len(chunk), len(rows), "distances to tree centres")
    return out


def _confirmed(distances: np.ndarray, labels: np.ndarray, centres: torch.Tensor, gram: np.ndarray,
               link_labels: np.ndarray, n_trees: int) -> bool:
    """Exact checks of a split found on a subset of coordinates (see the module docstring)."""
    if not np.array_equal(distances.argmin(1), labels):
        return False
    onehot = np.zeros((len(link_labels), n_trees))
    onehot[np.arange(len(link_labels)), link_labels] = 1.0
    onehot /= onehot.sum(0, keepdims=True)
    inner = onehot.T @ gram @ onehot  # [K, K] inner products of the subset centres
    # root-mean-square spread of each tree around its centre: subset estimate vs exact
    estimated_spread = np.sqrt(np.maximum(np.diag(gram) @ onehot - np.diag(inner), 0.0))
    exact_spread = np.sqrt(np.array([np.mean(distances[labels == k, k] ** 2) for k in range(n_trees)]))
    if np.any(np.abs(estimated_spread - exact_spread) > _CONFIRM_TOLERANCE * exact_spread):
        return False
    estimated = np.sqrt(np.maximum(np.diag(inner)[:, None] + np.diag(inner)[None, :] - 2 * inner, 0.0))
    exact = torch.cdist(centres.double(), centres.double()).numpy()
    upper = np.triu_indices(n_trees, 1)
    return bool(np.all(np.abs(estimated[upper] - exact[upper]) <= _CONFIRM_TOLERANCE * exact[upper]))
