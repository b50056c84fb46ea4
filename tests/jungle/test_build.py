"""A small demo jungle, built in the test session, reads back as a zoo with every tree."""

import json

import pytest
import torch

from probex import ModelZoo
from probex.cli import main
from probex.jungle import discriminative as disc
from probex.jungle import load


def test_the_small_jungle_opens_as_one_zoo_with_every_tree(small_jungle):
    zoo = ModelZoo.open(small_jungle)
    assert not zoo.skipped
    trees = set(zoo.trees)
    assert {"cnn-supervised", "cnn-attributes", "mixer-supervised", "mini-sd"} <= trees
    forest = [t for t in trees if t.startswith("forest-")]
    assert len(forest) == disc.SIZES["small"].forest_models
    assert set(zoo.splits) >= {"train", "val", "test", "val_holdout", "test_holdout"}


def test_discriminative_models_are_labelled_with_half_the_pool(small_jungle):
    zoo = ModelZoo.open(small_jungle).select(tree="cnn-supervised")
    pool = {disc.concept(i).name for i in disc.POOL_CONCEPTS}
    assert all(len(r.labels) == disc.CLASSES_PER_MODEL and set(r.labels) <= pool for r in zoo.records)
    names = [layer.name for layer in zoo.catalog()]
    assert "conv3.weight" in names and "head.weight" in names


def test_every_lora_model_has_its_training_images(small_jungle):
    zoo = ModelZoo.open(small_jungle).select(tree="mini-sd")
    assert len(zoo) > 0 and all(len(r.images) >= 5 and len(r.labels) == 1 for r in zoo.records)


def test_the_generative_folder_alone_is_the_model_j_generative_layout(small_jungle):
    zoo = ModelZoo.open(small_jungle / "generative")
    assert zoo.layout != ModelZoo.open(small_jungle).layout
    assert len(zoo) == len(ModelZoo.open(small_jungle).select(tree="mini-sd"))
    assert all(len(record.labels) == 1 and record.tree == "mini-sd" for record in zoo.records)


def test_load_reads_a_built_jungle_and_the_build_report(small_jungle):
    assert len(load(small_jungle)) == len(ModelZoo.open(small_jungle))
    report = json.loads((small_jungle / "build.json").read_text())
    assert report["size"] == "small" and report["total_seconds"] > 0
    assert set(report) >= {"cnn-supervised", "cnn-attributes", "mixer-supervised", "forest", "generative"}


def test_load_without_a_jungle_says_how_to_build_one(tmp_path):
    with pytest.raises(ValueError, match="probex jungle build --out"):
        load(tmp_path)


def test_fine_tuning_is_deterministic_for_a_seed():
    recipe = disc.TREES[2]  # the mixer: the fastest
    root = disc.pretrain_root(recipe, steps=5)
    first = disc.fine_tune_tree(recipe, root, n_models=3, seed=1, step_scale=0.1)
    second = disc.fine_tune_tree(recipe, root, n_models=3, seed=1, step_scale=0.1)
    assert all(torch.equal(a.weights[k], b.weights[k]) for a, b in zip(first, second) for k in a.weights)
    assert [m.classes for m in first] == [m.classes for m in second]


def test_every_model_of_a_tree_starts_its_head_from_one_initialisation():
    """Heads of one tree stay similar; heads of forest models (each its own start) do not."""
    recipe = disc.TREES[2]
    root = disc.pretrain_root(recipe, steps=2)
    tuned = disc.fine_tune_tree(recipe, root, n_models=3, seed=0, step_scale=0.1)
    # heads move during fine-tuning, but their shared start shows as high similarity
    heads = torch.stack([m.weights["head.weight"].flatten() for m in tuned])
    similarity = torch.nn.functional.cosine_similarity(heads[0], heads[1], dim=0)
    assert similarity > 0.5
    forest = disc.fine_tune_tree(disc.FOREST, None, n_models=2, seed=0, step_scale=0.1)
    apart = torch.nn.functional.cosine_similarity(forest[0].weights["head.weight"].flatten(),
                                                  forest[1].weights["head.weight"].flatten(), dim=0)
    assert abs(float(apart)) < 0.5
