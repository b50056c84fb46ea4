"""Names and colours for what the router finds, so that people can read its figures.

The router numbers the trees it finds (``tree_0``, ``tree_1``, ...) and the zoo tells
architectures apart by a hash. People read neither. This module names:

- a found tree by the known tree most of its members belong to, else by their most common
  ``base_model`` (metadata), else "tree 1", "tree 2", ... (:func:`tree_labels`);
- an architecture by what it is: its number of layers and its largest layer's shape
  (:func:`architecture_label`, "8 layers, largest conv3.weight 64x32x3x3");
- one colour per tree, the same for a found tree and the known tree it matches, on every
  panel and page (:func:`tree_colour_map`).
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, Mapping, Optional, Sequence

from probex.trees.dendrogram import ABOVE_CUT_COLOR, TREE_COLORS


def tree_labels(router: Any, base_model_of: Optional[Mapping[str, str]] = None) -> dict[str, str]:
    """found tree name -> a readable name (see the module docstring); names are unique.

    Args:
        router: a fitted TreeRouter (``tree_names_``, ``labels_``, ``ids_``, ``tree_truth_``).
        base_model_of: model id -> its base model (e.g. from the records' metadata), optional.
    """
    labels: dict[str, str] = {}
    members: dict[int, list[str]] = {}
    for position, tree in enumerate(router.labels_):
        members.setdefault(int(tree), []).append(router.ids_[position])
    unnamed = 0
    for number, name in enumerate(router.tree_names_):
        label = (router.tree_truth_ or {}).get(name)
        if label is None and base_model_of:
            known = Counter(base_model_of[i] for i in members.get(number, []) if base_model_of.get(i))
            label = known.most_common(1)[0][0] if known else None
        if label is None:
            unnamed += 1
            label = f"tree {unnamed}"
        labels[name] = label
    return _unique(labels)


def _unique(labels: dict[str, str]) -> dict[str, str]:
    """Second and later uses of a name get " (2)", " (3)", ... in order."""
    counts: Counter = Counter()
    unique = {}
    for key, label in labels.items():
        counts[label] += 1
        unique[key] = label if counts[label] == 1 else f"{label} ({counts[label]})"
    return unique


def architecture_label(signature: Optional[Sequence], layer: Optional[str], shape: Sequence[int]) -> str:
    """"N layers, largest NAME AxB..." from an architecture's (layer, shape) signature; without one, the layer and shape."""
    if signature:
        name, largest = max(signature, key=lambda item: (math.prod(item[1]), -signature.index(item)))
        return f"{len(signature)} layers, largest {name} {_shape(largest)}"
    return f"{layer or 'layer'} {_shape(shape)}"


def architecture_labels(architectures: Sequence[Any]) -> list[str]:
    """:func:`architecture_label` of each of a router's ``architectures_``, made unique."""
    labels = {number: architecture_label(a.signature, a.layer, a.shape) for number, a in enumerate(architectures)}
    unique = _unique(labels)
    return [unique[number] for number in range(len(architectures))]


def _shape(shape: Sequence[int]) -> str:
    return "x".join(str(int(size)) for size in shape)


def tree_colour_map(known_trees: Sequence[str], router: Any = None,
                    labels: Optional[Mapping[str, str]] = None) -> dict[str, str]:
    """One colour per tree under every name it goes by.

    Known trees (e.g. a zoo's trees, in its order) take the tree palette in order; a found tree
    takes the colour of the known tree most of its members belong to, else the next colour
    left; ``labels`` (found name -> readable name) share their tree's colour.
    """
    colours = {tree: TREE_COLORS[number % len(TREE_COLORS)] for number, tree in enumerate(known_trees)}
    if router is not None:
        spare = len(colours)
        for name in router.tree_names_:
            truth = (router.tree_truth_ or {}).get(name)
            if truth in colours:
                colours[name] = colours[truth]
            else:
                colours[name] = TREE_COLORS[spare % len(TREE_COLORS)]
                spare += 1
    for name, label in (labels or {}).items():
        if name in colours:
            colours.setdefault(label, colours[name])
    return colours


def colour_of(colours: Mapping[str, str], tree: Optional[str]) -> str:
    """The colour of ``tree`` (grey when it has none, e.g. unknown)."""
    return colours.get(tree, ABOVE_CUT_COLOR) if tree is not None else ABOVE_CUT_COLOR
