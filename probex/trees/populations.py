"""Populations of models as the router reads them: one stacked layer per architecture.

A population is a ModelZoo, a LayerBank (dense or LoRA factors; or anything with ``.X``
[N, d_W, d_H] and optionally ``.ids``, ``.trees``, ``.layer``), LoraFactors, a tensor or array
[N, d_W, d_H], or a list of those (one after the other, e.g. one LayerBank per architecture).
``split_population`` turns it into ``ArchitectureGroup`` records, one per architecture, each
holding the one layer the router clusters or routes on (a MatrixStack, read a chunk at a time),
plus where its models sit in the population.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from probex.errors import ProbeXError, ZooError
from probex.progress import Progress
from probex.zoo.factored import LoraFactors
from probex.zoo.stack import MatrixStack

log = logging.getLogger(__name__)

#: ``choose_layer(architecture name, catalog) -> layer name``, or None to leave it out.
LayerChoice = Callable[[str, Sequence], "str | None"]


@dataclass
class ArchitectureGroup:
    """One architecture's models of a population: the stacked layer and where the models sit.

    ``name`` and ``signature`` (sorted (layer, shape) pairs) are known for ModelZoo input only;
    ``stack`` holds the n matrices [d_W, d_H] (possibly memory-mapped, or LoRA factors);
    ``positions`` [n] index the population.
    """

    name: str | None
    layer: str | None
    signature: tuple | None
    stack: MatrixStack
    positions: np.ndarray
    ids: list[str]
    true_trees: list | None

    @property
    def shape(self) -> tuple[int, int]:
        """(d_W, d_H), the matrix shape of the layer."""
        return self.stack.shape[1], self.stack.shape[2]

    @property
    def display_name(self) -> str:
        """The architecture's name, else its layer and shape, e.g. ``fc.weight [24x16]``."""
        if self.name:
            return self.name
        shape = "x".join(str(s) for s in self.shape)
        return f"{self.layer} [{shape}]" if self.layer else f"[{shape}]"


def split_population(population: Any, choose_layer: LayerChoice,
                     progress: Progress | None = None) -> tuple[int, list[ArchitectureGroup]]:
    """(number of models, their architecture groups) of a ModelZoo, LayerBank, tensor, array or
    a list of those."""
    if isinstance(population, (list, tuple)):
        total, groups = 0, []
        for part in population:
            count, part_groups = split_population(part, choose_layer, progress)
            for group in part_groups:
                group.positions = group.positions + total
            total, groups = total + count, groups + part_groups
        return total, groups
    if hasattr(population, "architectures") and hasattr(population, "bank"):
        return _zoo_groups(population, choose_layer, progress)
    layer = getattr(population, "layer", None)
    stack = as_model_stack(population)
    n = len(stack)
    ids = getattr(population, "ids", None)
    ids = [str(i) for i in (range(n) if ids is None else ids)]
    return n, [ArchitectureGroup(name=None, layer=layer, signature=None, stack=stack, positions=np.arange(n), ids=ids,
                                 true_trees=true_trees_of(population))]


def _zoo_groups(zoo: Any, choose_layer: LayerChoice, progress: Progress | None) -> tuple[int, list[ArchitectureGroup]]:
    position_of = {record.id: i for i, record in enumerate(zoo.records)}
    groups = []
    for name, sub in zoo.architectures().items():
        catalog = sub.catalog()
        layer = choose_layer(name, catalog)
        if layer is None:  # an architecture the router does not know: leave its models unrouted
            continue
        bank = sub.bank(layer, progress=progress)
        ids = [str(i) for i in bank.ids]
        groups.append(ArchitectureGroup(
            name=name, layer=layer, signature=layer_signature(catalog), stack=bank.stack,
            positions=np.array([position_of[i] for i in ids], dtype=np.int64), ids=ids,
            true_trees=true_trees_of(bank)))
    return len(position_of), groups


def check_layer_exists(layer: str | dict | None, population: Any) -> None:
    """A layer name given for a ModelZoo must exist in at least one of its architectures."""
    if not isinstance(layer, str) or not hasattr(population, "architectures"):
        return
    catalogs = [sub.catalog() for sub in population.architectures().values()]
    if not any(layer in {info.name for info in catalog} for catalog in catalogs):
        names = [info.name for catalog in catalogs for info in catalog]
        raise ZooError(f"{getattr(population, 'root', 'zoo')}: no architecture has a layer {layer!r}; "
                       f"available: {', '.join(names[:20])}{', ...' if len(names) > 20 else ''}")


def clustering_layer(layer: str | dict | None, name: str, catalog: Sequence) -> str:
    """The layer to cluster architecture ``name`` on: ``layer`` (a name, or a dict architecture ->
    name) when the catalog has it, else the largest layer (most values; the first such)."""
    wanted = layer.get(name) if isinstance(layer, dict) else layer
    names = [info.name for info in catalog]
    if wanted is not None and wanted in names:
        return wanted
    if wanted is not None and not isinstance(layer, str):
        raise ZooError(f"architecture {name!r}: layer {wanted!r} missing; available: {', '.join(names[:20])}")
    largest = max(catalog, key=lambda info: math.prod(info.shape))  # first of the largest
    if wanted is not None:
        log.info("architecture %s has no layer %r; clustering on its largest, %r", name, wanted, largest.name)
    return largest.name


def true_trees_of(population: Any) -> list | None:
    """The true tree name of each model of ``population`` (None where unknown), or None when no
    model carries one."""
    if isinstance(population, (list, tuple)):
        parts = [(true_trees_of(part), _count(part)) for part in population]
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
    return len(as_model_stack(population))


def as_model_stack(population: Any) -> MatrixStack:
    """A population's models as a MatrixStack [N, d_W, d_H]: a LayerBank's own, LoraFactors, or a tensor or
    array (a [N, d] input gets d_H = 1); arrays, memory maps included, are wrapped without a copy."""
    if isinstance(population, MatrixStack):
        return population
    stack = getattr(population, "stack", None)
    if isinstance(stack, MatrixStack):
        return stack
    if isinstance(population, LoraFactors):
        return MatrixStack(population)
    X = getattr(population, "X", population)
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
    return MatrixStack(X)


def layer_signature(catalog: Sequence) -> tuple:
    """An architecture's identity: its sorted (layer name, shape) pairs."""
    return tuple(sorted((info.name, tuple(int(s) for s in info.shape)) for info in catalog))
