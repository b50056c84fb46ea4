"""Readable names and one colour per tree for what the router finds."""

import torch

from probex.trees.dendrogram import TREE_COLORS
from probex.trees.naming import architecture_label, architecture_labels, tree_colour_map, tree_labels
from probex.trees.router import TreeRouter

from synthetic import write_layer_bank
from tests.trees.test_router import concat, forest, grow_tree


def test_found_trees_are_named_by_their_majority_true_tree():
    router = TreeRouter().fit(forest(seed=10))
    labels = tree_labels(router)
    assert sorted(labels.values()) == ["a", "b", "c"]
    assert all(labels[name] == router.tree_truth_[name] for name in router.tree_names_)


def test_without_true_trees_the_base_model_names_them_else_a_number():
    bank = concat(grow_tree("a", 12, root_seed=1), grow_tree("b", 12, root_seed=2, seed=3))
    anonymous = write_layer_bank(bank.X, bank.layer, ids=bank.ids, trees=[None] * len(bank.ids))
    router = TreeRouter().fit(anonymous)
    assert sorted(tree_labels(router).values()) == ["tree 1", "tree 2"]
    base = {model_id: "root-A" for model_id in bank.ids[:12]}
    assert sorted(tree_labels(router, base).values()) == ["root-A", "tree 1"]


def test_the_same_name_twice_is_told_apart():
    bank = concat(grow_tree("a", 12, root_seed=1), grow_tree("a", 12, root_seed=2, seed=3))
    router = TreeRouter().fit(bank)
    assert sorted(tree_labels(router).values()) == ["a", "a (2)"]


def test_architectures_are_named_by_layer_count_and_largest_layer_without_hashes():
    signature = (("conv1.weight", (16, 3, 3, 3)), ("conv3.weight", (64, 32, 3, 3)), ("head.weight", (24, 64)))
    assert architecture_label(signature, "conv3.weight", (64, 288)) == "3 layers, largest conv3.weight 64x32x3x3"
    assert architecture_label(None, "fc.weight", (24, 16)) == "fc.weight 24x16"
    router = TreeRouter().fit(forest(seed=10))
    labels = architecture_labels(router.architectures_)
    assert labels == ["fc.weight 24x16", "head.weight 16x12"] and not any("#" in label for label in labels)


def test_a_found_tree_has_its_true_trees_colour_under_every_name():
    router = TreeRouter().fit(forest(seed=10))
    labels = tree_labels(router)
    colours = tree_colour_map(["c", "a", "b"], router, labels)
    assert colours["c"] == TREE_COLORS[0] and colours["a"] == TREE_COLORS[1]
    for name in router.tree_names_:
        assert colours[name] == colours[router.tree_truth_[name]] == colours[labels[name]]


def test_found_trees_without_a_known_tree_take_unused_colours():
    bank = concat(grow_tree("a", 12, root_seed=1), grow_tree("b", 12, root_seed=2, seed=3))
    router = TreeRouter().fit(write_layer_bank(bank.X, bank.layer, ids=bank.ids, trees=[None] * len(bank.ids)))
    colours = tree_colour_map(["x"], router)
    assert len({colours["x"], *(colours[name] for name in router.tree_names_)}) == 3
