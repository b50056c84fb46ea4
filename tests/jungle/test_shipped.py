"""The demo jungle shipped in assets/: opens offline with no build step, and its experts hold their figures.

The shipped experts are deterministic, so their figures are gated within :data:`TOLERANCE` of
the ones ``probex jungle check`` recorded in ``assets/jungle/check.json``: a retrained or damaged
expert that loses more than that fails here (``test_the_gate_fails_an_expert_whose_weight_is_perturbed``
shows it does). The recorded figures themselves must clear their chance levels by a margin.
"""

import pytest
import torch

from probex import jungle, load_expert
from probex.experiments.harness import (
    ALIGNMENT_KEYS,
    aligned_splits,
    alignment_figures,
    banks_for,
    chance_levels,
    parameter_lesson,
    router_figures,
)
from probex.experts.aligner import names_of
from probex.zoo.extras import shipped_figures

#: How far a shipped expert's figure may move from the recorded one.
TOLERANCE = 0.01


@pytest.fixture(scope="module")
def shipped():
    return jungle.load()


@pytest.fixture(scope="module")
def recorded(shipped):
    """check.json: {"router", "classifiers": {tree: row}, "aligned": {tree: {"expert": figures, ...}}, "forest"}."""
    return shipped_figures(shipped.root)


def gate(measured: dict, recorded: dict, keys) -> dict:
    """The figures of ``keys`` that moved by more than TOLERANCE: {key: (measured, recorded)} ({} passes)."""
    moved = {}
    for key in keys:
        now, then = measured[key], recorded[key]
        if (now is None) != (then is None) or (now is not None and abs(now - then) > TOLERANCE):
            moved[key] = (now, then)
    return moved


def classifier_test_bank(zoo, tree, expert):
    return zoo.select(tree=tree).bank(expert.layers_[0], split="test")


def aligned_figures_now(zoo, tree, expert) -> dict:
    tree_zoo = zoo.select(tree=tree)
    splits = aligned_splits(tree_zoo)
    banks = banks_for(tree_zoo, expert.layers_, splits)
    held_out = sorted(set(names_of(banks[splits[3]][0].labels)))
    return alignment_figures(expert, banks, held_out, splits[2:])


# -- what ships ---------------------------------------------------------------------------------

def test_the_shipped_jungle_has_four_classifier_trees_a_forest_and_an_aligned_tree(shipped):
    assert len(shipped.trees_with_role("classifier")) == 4
    assert len(shipped.trees_with_role("aligned")) == 1
    assert len(shipped.trees_with_role("forest")) >= 100
    assert all(role.declared for role in shipped.roles.values())
    assert not shipped.skipped


def test_three_classifier_trees_share_one_architecture_with_different_roots(shipped):
    classifiers = shipped.trees_with_role("classifier")
    signature = {tree: tuple((info.name, info.shape) for info in shipped.select(tree=tree).catalog()) for tree in classifiers}
    assert len(set(signature.values())) == 2  # three of the four trees share an architecture
    roots = {tree: shipped.select(tree=tree).records[0].metadata.get("base_model") for tree in classifiers}
    assert len(set(roots.values())) == 4


def test_every_lora_model_has_its_training_images(shipped):
    (tree,) = shipped.trees_with_role("aligned")
    generative = shipped.select(tree=tree)
    assert len(generative.records) >= 1600
    assert all(record.images and all(image.is_file() for image in record.images[:1]) for record in generative.records)


def test_every_classifier_model_shows_renders_of_its_training_classes(shipped):
    classifiers = shipped.select(tree=shipped.trees_with_role("classifier", "forest"))
    assert len(classifiers) >= 1200
    for record in classifiers.records:
        assert len(record.images) == 3 * len(record.labels) == 36
    assert all(image.is_file() for image in {image for record in classifiers.records for image in record.images})


def test_recommended_layers_name_a_hidden_layer_of_each_tree(shipped):
    recommended = jungle.recommended_layers()
    assert set(recommended) == set(shipped.trees_with_role("classifier", "aligned"))
    for tree, layer in recommended.items():
        assert layer in {info.name for info in shipped.select(tree=tree).catalog()}
        assert layer != "head.weight"  # the head's rows are the class slots: a trivial read-out


def test_the_lora_classifier_tree_stores_low_rank_updates_of_wide_layers(shipped):
    catalog = {info.name: info for info in shipped.select(tree="mixer-supervised").catalog()}
    lora = [info for info in catalog.values() if info.kind == "lora"]
    assert len(lora) == 2 and all(info.shape == (64, 512) for info in lora)


# -- the recorded figures: above their baselines ---------------------------------------------------

def shipped_key(row: dict) -> str:
    """Which figure of a Table 1 row the shipped expert made: the multi-view column for a tree read through other
    probe views (its role names them), else ProbeX's."""
    return "multiview" if row.get("multiview_source") == "shipped" else "probex"


def test_the_recorded_figures_clear_their_chance_levels(shipped, recorded):
    assert set(recorded["classifiers"]) == set(shipped.trees_with_role("classifier"))
    for tree, row in recorded["classifiers"].items():
        if shipped.role(tree).views is None:  # every model's head starts from one initialisation
            assert row["probex"] > row["chance"] + 0.3, (tree, row)
        else:  # each model's own random head: only the view the role names reads it, and less well
            assert row[shipped_key(row)] > row["chance"] + 0.05, (tree, row)
    (tree,) = recorded["aligned"]
    aligned = recorded["aligned"][tree]
    chance = chance_levels(aligned["concepts"]["training"], aligned["concepts"]["held_out"])
    for key in ALIGNMENT_KEYS:
        assert aligned["expert"][key] > chance[key] + 0.3, (key, aligned["expert"][key], chance[key])


def test_table_1_reads_hidden_layers_with_the_heads_read_out_apart_and_is_not_saturated(shipped, recorded):
    rows = recorded["classifiers"]
    for tree, row in rows.items():
        assert row["readout"]["layer"] != row["layer"], tree  # the head is a trivial read-out: measured apart
        if shipped.role(tree).views is None:  # heads from one shared initialisation: their rows are the class slots
            assert row["readout"]["probex"] > row["chance"] + 0.3, tree
    # the table tells methods apart: some method stays below 0.98 on some tree
    assert min(row[method] for row in rows.values() for method in ("probex", "dense", "statnn")) < 0.98


def test_the_recorded_paper_effects_hold(recorded):
    router = recorded["router"]
    assert router["trees_found"] == router["true_trees"] and router["held_out_accuracy"] == 1.0
    forest = recorded["forest"]
    assert forest["probex"] <= forest["chance"] + 0.06  # no tree, nothing to read: about chance
    (aligned,) = recorded["aligned"].values()
    assert aligned["expert"]["zero_shot"] >= 0.75 and aligned["single_layer"]["zero_shot"] >= 0.75
    assert aligned["single_layer"]["zero_shot"] > 2 * aligned["linear_single_layer"]["zero_shot"]  # ReLU matters


def test_multi_view_probes_never_lose_to_probex_by_more_than_a_point_and_win_somewhere(recorded):
    # on the classifier trees, the gap of the means over three seeds (one run moves by about a point)
    gains = {tree: row["views_comparison"]["gap"] for tree, row in recorded["classifiers"].items()}
    for tree, aligned in recorded["aligned"].items():
        gains[f"{tree} zero-shot"] = aligned["multiview_single_layer"]["zero_shot"] - aligned["single_layer"]["zero_shot"]
    assert min(gains.values()) >= -0.01 and max(gains.values()) >= 0.02, gains


def test_on_a_hidden_layer_a_probex_expert_beats_dense_with_a_tenth_of_its_parameters(recorded):
    lessons = {tree: parameter_lesson(row) for tree, row in recorded["classifiers"].items()}
    winners = {tree: lesson for tree, lesson in lessons.items() if lesson["margin"] >= 0.02 and lesson["fewer"] >= 10}
    assert winners, lessons
    for tree in winners:  # on the tree's recommended layer, a hidden one
        assert recorded["classifiers"][tree]["layer"] == jungle.recommended_layers()[tree] != "head.weight"


# -- the gates: the shipped experts measure what check.json recorded, within TOLERANCE ------------

@pytest.mark.parametrize("index", range(4))
def test_each_shipped_classifier_scores_what_check_json_recorded(shipped, recorded, index):
    tree = shipped.trees_with_role("classifier")[index]
    expert = load_expert(jungle.expert_dirs()[tree])
    key = shipped_key(recorded["classifiers"][tree])
    assert expert.views == (shipped.role(tree).views or "xu") == recorded["classifiers"][tree].get(f"{key}_views", "xu")
    measured = {key: expert.score(classifier_test_bank(shipped, tree, expert))}
    assert gate(measured, recorded["classifiers"][tree], [key]) == {}


def test_the_shipped_aligner_measures_what_check_json_recorded(shipped, recorded):
    (tree,) = shipped.trees_with_role("aligned")
    expert = load_expert(jungle.expert_dirs()[tree])
    assert expert.layers_ == recorded["aligned"][tree]["expert"]["layers"]
    measured = aligned_figures_now(shipped, tree, expert)
    assert gate(measured, recorded["aligned"][tree]["expert"], ALIGNMENT_KEYS) == {}


def test_the_router_finds_what_check_json_recorded(shipped, recorded):
    measured = router_figures(shipped)
    assert measured["trees_found"] == recorded["router"]["trees_found"] == recorded["router"]["true_trees"]
    assert gate(measured, recorded["router"], ["held_out_accuracy"]) == {}


def test_the_gate_fails_an_expert_whose_weight_is_perturbed(shipped, recorded):
    tree = shipped.trees_with_role("classifier")[0]
    expert = load_expert(jungle.expert_dirs()[tree])
    test = classifier_test_bank(shipped, tree, expert)
    assert gate({"probex": expert.score(test)}, recorded["classifiers"][tree], ["probex"]) == {}
    with torch.no_grad():  # one concept's output answers the opposite: its row of the head T negated
        expert.network_.head.weight[0].neg_()
        expert.network_.head.bias[0].neg_()
    perturbed = expert.score(test)
    moved = gate({"probex": perturbed}, recorded["classifiers"][tree], ["probex"])
    assert recorded["classifiers"][tree]["probex"] - perturbed > TOLERANCE
    assert set(moved) == {"probex"}


def test_the_gate_fails_an_aligner_whose_probes_are_perturbed(shipped, recorded):
    (tree,) = shipped.trees_with_role("aligned")
    expert = load_expert(jungle.expert_dirs()[tree])
    with torch.no_grad():  # the probes U of the first layer, negated
        expert.network_.model_side.encoders[0].probes.neg_()
    moved = gate(aligned_figures_now(shipped, tree, expert), recorded["aligned"][tree]["expert"], ALIGNMENT_KEYS)
    assert "zero_shot" in moved and moved["zero_shot"][1] - moved["zero_shot"][0] > TOLERANCE, moved
