"""MixtureOfExperts: the router sends each model to its Model Tree, the tree's expert predicts.

Divide and conquer, as in the paper: one expert per tree, each on the layer that suits its tree
best, and a TreeRouter in front::

    moe = MixtureOfExperts(TreeRouter(), expert=ProbeXClassifier(epochs=200))
    moe.fit(zoo, layers=["fc1.weight", "fc2.weight"])     # best of these layers per tree (by val)
    moe.predict(new_zoo)                                   # one prediction per model, None: unknown tree
    moe.score_table(test_zoo)                              # per tree and overall, the paper's MoE column
    moe.save("moe/"); MixtureOfExperts.load("moe/")

or assembled from a fitted router and experts trained elsewhere:
``MixtureOfExperts.from_experts(router, {"tree_0": expert}, layers={"tree_0": "fc1.weight"})``.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from sklearn.base import clone

from probex.errors import ProbeXError
from probex.estimator import Estimator, Rule, instance_of
from probex.experts.base import BaseExpert
from probex.progress import Progress
from probex.trees.router import TreeRouter
from probex.storage import atomic_directory, json_field, read_regular_bytes

log = logging.getLogger(__name__)

MOE_FILE = "mixture.json"
MOE_FORMAT = "probex-mixture-of-experts"


def _is_layer_map(layers: Any) -> bool:
    return layers is None or (isinstance(layers, dict) and all(isinstance(k, str) and isinstance(v, str)
                                                                for k, v in layers.items()))


class MixtureOfExperts(Estimator):
    """A TreeRouter and one expert per tree, each expert reading its own layer.

    Args:
        router: the TreeRouter that finds the trees (default ``TreeRouter()``). ``fit`` fits a
            clone of it on the training models, or uses it as given when it is fitted already.
        expert: the expert ``fit`` trains for every tree (cloned; default ``ProbeXClassifier()``).
        layers: tree name -> the layer its expert reads, for trees whose layer ``fit`` should
            not choose.

    Learned: ``router_`` (the fitted router), ``experts_`` and ``layers_`` (tree -> expert /
    layer name), ``layer_scores_`` (tree -> {layer: validation score}) when ``fit`` chose among
    layers. :meth:`from_experts` assembles a fitted mixture from experts trained elsewhere.
    """

    parameter_rules = {
        "router": instance_of(TreeRouter, optional=True, expected="a TreeRouter"),
        "expert": instance_of(BaseExpert, optional=True, expected="an expert (ProbeXClassifier(), DenseExpert(), ...)"),
        "layers": Rule("a dict tree name -> layer name", _is_layer_map),
    }
    _fit_hint = "call fit(population) first, or assemble one with MixtureOfExperts.from_experts(router, experts)"

    def __init__(self, router: TreeRouter | None = None, expert: BaseExpert | None = None,
                 layers: dict[str, str] | None = None):
        self.router = router
        self.expert = expert
        self.layers = layers

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "experts_")

    @classmethod
    def from_experts(cls, router: TreeRouter, experts: dict[str, BaseExpert],
                     layers: dict[str, str | None] | None = None) -> "MixtureOfExperts":
        """A fitted mixture of a fitted ``router`` and experts trained elsewhere (tree name -> expert),
        each reading ``layers[tree]`` (its layer name; a LayerBank or tensor input needs none)."""
        router._check_fitted()
        unknown = sorted(set(experts) - set(router.tree_names_))
        if unknown:
            raise ProbeXError(f"MixtureOfExperts.from_experts: the router knows no tree {unknown[0]!r}; "
                              f"its trees: {router.tree_names_}")
        for expert in experts.values():
            expert._check_fitted()
        mixture = cls(router=router)
        mixture.router_ = router
        mixture.layers_ = dict(layers or {})
        mixture.layer_scores_ = {}
        mixture.experts_ = dict(experts)
        return mixture

    # ------------------------------------------------------------------ training
    def fit(self, population: Any, y: Any = None, layers: Sequence[str] | str | None = None,
            train_split: str = "train", val_split: str | None = "val", val: tuple[Any, Any] | None = None,
            progress: Progress | None = None) -> "MixtureOfExperts":
        """Train one expert per tree.

        ``population`` is a ModelZoo (its ``train_split`` models train, its ``val_split`` models
        choose each tree's layer among ``layers`` and the best epoch; a zoo without splits trains
        on all), or a LayerBank / tensor [N, d_W, d_H] with labels ``y`` (a LayerBank carries its
        own) and an optional ``val=(X_val, y_val)``. A tree's layer is ``self.layers[tree]`` when
        given, else the best of ``layers`` by validation score (a single name: that layer; None:
        the router's layer of the tree's architecture).
        """
        self._check_params()
        router = TreeRouter() if self.router is None else self.router
        router_fitted = router.__sklearn_is_fitted__()
        if not router_fitted:
            router._check_params()
        template = self._template_expert()
        template._check_params()
        zoo_input = hasattr(population, "architectures") and hasattr(population, "bank")
        if zoo_input:
            train = population.select(split=train_split) if train_split in population.splits else population
            val_zoo = population.select(split=val_split) if val_split and val_split in population.splits else None
        else:
            train, val_zoo = population, None
        self.__dict__.pop("experts_", None)
        self.router_ = router if router_fitted else clone(router).fit(train, progress=progress)
        experts, self.layers_, self.layer_scores_ = {}, {}, {}
        train_trees = self.router_.route(train)
        val_trees = self.router_.route(val_zoo if zoo_input else val[0]) if (val_zoo is not None or val) else None
        for tree in self.router_.tree_names_:
            members = [i for i, name in enumerate(train_trees) if name == tree]
            if not members:
                log.warning("MixtureOfExperts.fit: no training model routed to %s; it gets no expert", tree)
                continue
            val_members = [i for i, name in enumerate(val_trees or []) if name == tree]
            candidates = self._candidate_layers(tree, layers)
            scores, best = {}, None
            for layer in candidates:
                train_data = _subset(train, members, layer, y)
                val_data = _subset(val_zoo if zoo_input else val[0], val_members, layer,
                                   None if zoo_input else val[1]) if val_members else None
                expert = clone(template).fit(train_data[0], train_data[1], val=val_data, progress=progress)
                scores[layer] = float(expert.score(*val_data)) if val_data else float("nan")
                if best is None or scores[layer] > scores[best]:  # the first layer wins ties and NaN
                    best, experts[tree], self.layers_[tree] = layer, expert, layer
            self.layer_scores_[tree] = scores
            log.info("MixtureOfExperts: %s -> layer %s (%d models)", tree, self.layers_[tree], len(members))
        self.experts_ = experts  # last: the mixture is fitted
        return self

    def _candidate_layers(self, tree: str, layers: Sequence[str] | str | None) -> list[str | None]:
        """The layers a tree's expert may read: the one set for it, else those of ``layers`` its
        architecture has, else the layer the router clustered that architecture on."""
        if self.layers and tree in self.layers:
            return [self.layers[tree]]
        index = self.router_.tree_names_.index(tree)
        architecture = next(a for a in self.router_.architectures_ if index in a.tree_indices)
        wanted = [layers] if isinstance(layers, str) else list(layers or [])
        if architecture.signature is not None:  # a zoo: keep the layers this architecture has
            present = {name for name, _ in architecture.signature}
            wanted = [layer for layer in wanted if layer in present]
        return wanted or [architecture.layer]

    def _template_expert(self) -> BaseExpert:
        """The expert every tree's is cloned from: ``expert``, or ProbeXClassifier()."""
        if self.expert is None:
            from probex.experts.classifier import ProbeXClassifier

            return ProbeXClassifier()
        return self.expert

    # ------------------------------------------------------------------ predicting
    def predict(self, population: Any, return_trees: bool = False):
        """One prediction per model (its tree's expert's ``predict``), None for a model of an
        unknown tree (or a tree without an expert), reported in the log. With ``return_trees``,
        also the tree of each model."""
        self._check_fitted()
        trees = self.router_.route(population)
        predictions: list[Any] = [None] * len(trees)
        for tree, members in _group_by_tree(trees).items():
            if tree not in self.experts_:
                continue
            X, _ = _subset(population, members, self.layers_.get(tree), None)
            for member, prediction in zip(members, _rows(self.experts_[tree].predict(X))):
                predictions[member] = prediction
        unknown = [i for i, tree in enumerate(trees) if tree is None or tree not in self.experts_]
        if unknown:
            ids = _ids(population)
            log.warning("MixtureOfExperts: %d of %d models belong to no known tree (no prediction): %s%s",
                        len(unknown), len(trees), ", ".join(ids[i] for i in unknown[:5]),
                        " ..." if len(unknown) > 5 else "")
        return (predictions, trees) if return_trees else predictions

    def score_table(self, population: Any, y: Any = None) -> list[dict]:
        """Per-tree scores of the routed models (each expert's ``score``: mean binary accuracy for
        multi-label experts) and an ``overall`` row, their model-weighted mean, like the paper's
        MoE column. Models routed to no known tree are counted in ``unrouted``, not scored.
        Classes a tree's expert never saw cannot be predicted, so they are dropped from the
        labels of the models routed to it."""
        self._check_fitted()
        trees = self.router_.route(population)
        rows, total, weighted = [], 0, 0.0
        for tree, members in _group_by_tree(trees).items():
            if tree not in self.experts_:
                continue
            expert = self.experts_[tree]
            X, labels = _subset(population, members, self.layers_.get(tree), y)
            if labels is not None and _is_label_lists(labels):
                known = set(expert.classes_)
                labels = [[label for label in row if label in known] for row in labels]
            score = float(expert.score(X, labels))
            rows.append({"tree": tree, "layer": self.layers_.get(tree), "models": len(members), "score": score})
            total, weighted = total + len(members), weighted + score * len(members)
        unrouted = sum(1 for tree in trees if tree is None or tree not in self.experts_)
        rows.append({"tree": "overall", "layer": None, "models": total,
                     "score": weighted / total if total else float("nan"), "unrouted": unrouted})
        return rows

    # ------------------------------------------------------------------ growing
    def add_tree(self, name: str, expert: Any, layer: str | None = None, members: Any = None) -> "MixtureOfExperts":
        """Add one tree's expert without touching the others' weights.

        ``members`` (models of the new tree: LayerBank, tensor or ModelZoo) teach the router where
        the tree lies; leave it out when the router already knows a tree called ``name``.
        """
        self._check_fitted()
        if name in self.experts_:
            raise ProbeXError(f"MixtureOfExperts.add_tree: tree {name!r} has an expert already")
        if name not in self.router_.tree_names_:
            if members is None:
                raise ProbeXError(f"MixtureOfExperts.add_tree: the router does not know a tree {name!r}; "
                                  "pass its member models (members=...) so new models can be routed to it")
            self.router_.add_tree(name, members, layer=layer)
        self.experts_[name] = expert
        self.layers_[name] = layer
        return self

    # ------------------------------------------------------------------ save / load
    def save(self, directory: str | Path) -> Path:
        """Write the mixture to one folder, atomically: ``router/`` (safetensors + JSON),
        ``experts/<n>/`` (each expert's own save) and ``mixture.json``."""
        self._check_fitted()
        directory = Path(directory)
        folders = {tree: f"{number:03d}" for number, tree in enumerate(self.experts_)}
        saved_before_markers = lambda folder: json_field(folder / MOE_FILE, "format") == MOE_FORMAT  # noqa: E731
        with atomic_directory(directory, MOE_FORMAT, legacy=saved_before_markers) as tmp:
            self.router_.save(tmp / "router")
            for tree, expert in self.experts_.items():
                expert.save(tmp / "experts" / folders[tree])
            manifest = {"format": MOE_FORMAT, "experts": [
                {"tree": tree, "folder": f"experts/{folders[tree]}", "layer": self.layers_.get(tree),
                 "layer_scores": self.layer_scores_.get(tree)} for tree in self.experts_]}
            (tmp / MOE_FILE).write_text(json.dumps(manifest, indent=2, allow_nan=True) + "\n", encoding="utf-8")
        return directory

    @classmethod
    def load(cls, directory: str | Path, device: str | None = None) -> "MixtureOfExperts":
        """Read a mixture written by ``save``."""
        from probex.experts.base import load_expert

        directory = Path(directory)
        try:
            manifest = json.loads(read_regular_bytes(directory / MOE_FILE, 64 * 2**20, "mixture manifest"))
        except (OSError, ValueError) as error:
            raise ProbeXError(f"{directory}: not a saved MixtureOfExperts ({error})") from error
        if manifest.get("format") != MOE_FORMAT:
            raise ProbeXError(f"{directory / MOE_FILE}: not a mixture of experts (format {manifest.get('format')!r})")
        router = TreeRouter.load(directory / "router")
        try:
            entries = list(manifest["experts"])
            folders = {entry["tree"]: str(entry["folder"]) for entry in entries}
            layers = {entry["tree"]: entry["layer"] for entry in entries}
        except (KeyError, TypeError) as error:
            raise ProbeXError(f"{directory / MOE_FILE}: a damaged mixture manifest ({error}); save it again") from None
        for tree, folder in folders.items():
            # the manifest names each expert's folder: only the experts/NNN folders save() writes are read
            if not re.fullmatch(r"experts/[0-9]{3,}", folder):
                raise ProbeXError(f"{directory / MOE_FILE}: expert folder {folder!r} of tree {tree!r} is not one "
                                  "this mixture's save() writes (experts/NNN); not reading it")
        experts = {tree: load_expert(directory / folder, device=device) for tree, folder in folders.items()}
        mixture = cls.from_experts(router, experts, layers=layers)
        mixture.layer_scores_ = {entry["tree"]: entry["layer_scores"] for entry in entries if entry.get("layer_scores")}
        return mixture


# ---------------------------------------------------------------------- helpers
def _group_by_tree(trees: Sequence[str | None]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    for position, tree in enumerate(trees):
        if tree is not None:
            groups.setdefault(tree, []).append(position)
    return groups


def _subset(population: Any, positions: list[int], layer: str | None, y: Any) -> tuple[Any, Any]:
    """(X, labels) of the models at ``positions``: a LayerBank of ``layer`` for a ModelZoo, else rows."""
    if hasattr(population, "architectures") and hasattr(population, "bank"):
        ids = [population.records[i].id for i in positions]
        bank = population.select(ids=ids).bank(layer)
        return bank, bank.labels if y is None else _take(y, positions)
    bank_layer = getattr(population, "layer", None)
    if layer is not None and bank_layer is not None and layer != bank_layer:
        raise ProbeXError(f"MixtureOfExperts: this tree's expert reads layer {layer!r} but the models given hold "
                          f"{bank_layer!r}; give a ModelZoo so each expert can read its own layer")
    if hasattr(population, "X") and hasattr(population, "__getitem__"):
        part = population[positions]
        return part, getattr(part, "labels", None) if y is None else _take(y, positions)
    X = population.X if hasattr(population, "X") else population
    return X[positions], None if y is None else _take(y, positions)


def _take(y: Any, positions: list[int]) -> Any:
    if isinstance(y, (list, tuple)):
        return [y[i] for i in positions]
    return y[positions]


def _rows(predictions: Any) -> list:
    return list(predictions) if not isinstance(predictions, np.ndarray) else [row for row in predictions]


def _is_label_lists(labels: Any) -> bool:
    return isinstance(labels, (list, tuple)) and all(isinstance(row, (list, tuple)) for row in labels)


def _ids(population: Any) -> list[str]:
    if hasattr(population, "records"):
        return [record.id for record in population.records]
    ids = getattr(population, "ids", None)
    return [str(i) for i in ids] if ids is not None else [f"#{i}" for i in range(len(getattr(population, "X", population)))]
