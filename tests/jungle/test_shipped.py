"""The demo jungle shipped in assets/: opens offline with no build step, and its experts hold their figures."""

import pytest

from probex import jungle, load_expert
from probex.experts.aligner import names_of

DISCRIMINATIVE = ("cnn-supervised", "cnn-attributes", "mixer-supervised")


@pytest.fixture(scope="module")
def shipped():
    return jungle.load()


def test_the_shipped_jungle_has_three_classifier_trees_a_forest_and_a_generative_tree(shipped):
    trees = set(shipped.trees)
    assert set(DISCRIMINATIVE) | {"mini-sd"} <= trees
    assert len([tree for tree in trees if tree.startswith("forest-")]) >= 100
    assert not shipped.skipped


def test_two_classifier_trees_share_one_architecture_with_different_roots(shipped):
    signature = {tree: [(info.name, info.shape) for info in shipped.select(tree=tree).catalog()] for tree in DISCRIMINATIVE}
    assert signature["cnn-supervised"] == signature["cnn-attributes"] != signature["mixer-supervised"]
    roots = {tree: shipped.select(tree=tree).records[0].metadata.get("base_model") for tree in DISCRIMINATIVE}
    assert len(set(roots.values())) == 3


def test_every_lora_model_has_its_training_images(shipped):
    generative = shipped.select(tree="mini-sd")
    assert len(generative.records) >= 1600
    assert all(record.images and all(image.is_file() for image in record.images[:1]) for record in generative.records)


def test_every_classifier_model_shows_renders_of_its_training_classes(shipped):
    classifiers = shipped.select(tree=[tree for tree in shipped.trees if tree != "mini-sd"])
    assert len(classifiers) >= 1200
    for record in classifiers.records:
        assert len(record.images) == 3 * len(record.labels) == 36
    assert all(image.is_file() for image in {image for record in classifiers.records for image in record.images})


def test_recommended_layers_name_a_hidden_layer_of_each_tree(shipped):
    recommended = jungle.RECOMMENDED_LAYERS
    assert set(recommended) == set(DISCRIMINATIVE) | {"mini-sd"}
    for tree, layer in recommended.items():
        assert layer in {info.name for info in shipped.select(tree=tree).catalog()}
        assert layer != "head.weight"  # the head's rows are the class slots: a trivial read-out


def test_the_lora_classifier_tree_stores_low_rank_updates_of_wide_layers(shipped):
    catalog = {info.name: info for info in shipped.select(tree="mixer-supervised").catalog()}
    lora = [info for info in catalog.values() if info.kind == "lora"]
    assert len(lora) == 2 and all(info.shape == (64, 512) for info in lora)


@pytest.mark.parametrize("tree", DISCRIMINATIVE)
def test_each_shipped_classifier_predicts_training_classes_of_test_models(shipped, tree):
    expert = load_expert(jungle.expert_dirs()[tree])
    test = shipped.select(tree=tree).bank(expert.layers_[0], split="test")
    assert expert.score(test) >= 0.78  # mean binary accuracy; chance 0.5


def test_the_shipped_aligner_names_held_out_concepts_zero_shot(shipped):
    expert = load_expert(jungle.expert_dirs()["mini-sd"])
    generative = shipped.select(tree="mini-sd")
    held = [generative.bank(layer, split="test_holdout") for layer in expert.layers_]
    candidates = sorted(set(names_of(held[0].labels)))
    assert len(candidates) == 16
    assert expert.score(held, candidates=candidates) >= 0.55  # chance 1/16
    test = [generative.bank(layer, split="test") for layer in expert.layers_]
    assert expert.score(test) >= 0.40  # in-distribution, 48 concepts
