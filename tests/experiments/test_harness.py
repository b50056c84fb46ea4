"""The evaluation harness: figures by tree role, on any zoo, with chance levels that name every figure."""

import json

import pytest

from probex.cli import main
from probex.experiments.harness import (ALIGNMENT_KEYS, chance_levels, evaluated_trees, parameter_lesson, task_of,
                                        tree_params, tree_views, views_comparison)
from probex.zoo import ALIGNED, CLASSIFIER, ModelZoo


def test_chance_levels_name_every_alignment_figure():
    chance = chance_levels(48, 16)
    assert set(chance) == set(ALIGNMENT_KEYS)
    assert chance["zero_shot"] == pytest.approx(1 / 16) and chance["in_distribution"] == pytest.approx(1 / 48)


def test_a_user_zoo_without_declared_roles_reads_them_off_its_models(user_zoo):
    zoo = ModelZoo.open(user_zoo)
    assert zoo.declared_roles == {}
    assert zoo.role("alpha").role == CLASSIFIER and not zoo.role("alpha").declared
    assert zoo.role("beta").role == ALIGNED and zoo.role("beta").held_out_splits == ("val_holdout", "test_holdout")
    assert evaluated_trees(zoo) == ["alpha", "beta"]
    assert (task_of(zoo, "alpha"), task_of(zoo, "beta")) == ("classes", "align")


def test_the_demo_jungle_declares_its_roles(small_jungle):
    zoo = ModelZoo.open(small_jungle)
    forest = zoo.trees_with_role("forest")
    assert forest and all(zoo.role(tree).declared for tree in zoo.trees)
    assert forest[0] not in evaluated_trees(zoo)


def test_the_parameter_lesson_takes_the_better_probex_expert_against_dense():
    row = {"probex": 0.50, "probex_parameters": 20_000, "multiview": 0.61, "multiview_parameters": 25_000,
           "multiview_views": "xtxu", "dense": 0.51, "dense_parameters": 250_000}
    lesson = parameter_lesson(row)
    assert (lesson["expert"], lesson["views"], lesson["parameters"]) == ("multi-view ProbeX", "xtxu", 25_000)
    assert lesson["margin"] == pytest.approx(0.10) and lesson["fewer"] == pytest.approx(10.0)
    single = parameter_lesson({**row, "multiview": 0.40})
    assert (single["expert"], single["views"], single["fewer"]) == ("ProbeX", "xu", 12.5)
    assert parameter_lesson({"probex": 0.9, "probex_parameters": 10}) is None  # no Dense figure


def test_a_tree_role_that_names_views_sets_them_for_its_experts_and_no_other(small_jungle, user_zoo):
    zoo = ModelZoo.open(small_jungle)
    assert tree_views(zoo, "cnn-own-heads") == "xtxu" and tree_views(zoo, "cnn-supervised") is None
    assert tree_params(zoo, "cnn-own-heads", {"epochs": 3}) == {"epochs": 3, "views": "xtxu"}
    assert tree_params(zoo, "cnn-supervised", {"epochs": 3}) == {"epochs": 3}
    assert tree_views(ModelZoo.open(user_zoo), "alpha") is None  # roles read off the models name no views


def test_the_views_comparison_trains_both_experts_with_each_seed_and_reads_the_gap_off_the_means(small_jungle):
    from probex.experts.classifier import ProbeXClassifier

    tree = ModelZoo.open(small_jungle).select(tree="cnn-supervised")
    params = {"epochs": 8, "patience": 8, "views": "xtxu", "seed": 5}  # the comparison sets views and seed itself
    comparison = views_comparison(tree, "conv2.weight", params, "first", seeds=(0, 1))
    assert (comparison["views"], comparison["seeds"]) == ("first", [0, 1])
    assert comparison["gap"] == pytest.approx(comparison["multiview_mean"] - comparison["probex_mean"])
    assert comparison["multiview_mean"] == pytest.approx(sum(comparison["multiview"]) / 2)
    gaps = [multi - single for multi, single in zip(comparison["multiview"], comparison["probex"])]
    assert comparison["gap_sd"] == pytest.approx(abs(gaps[0] - gaps[1]) / 2)
    train, val, test = (tree.bank("conv2.weight", split=split) for split in ("train", "val", "test"))
    again = ProbeXClassifier(epochs=8, patience=8, seed=1, views="first").fit(train, val=(val, None))
    assert again.score(test) == comparison["multiview"][1]  # seed 1's multi-view expert, trained again


@pytest.fixture(scope="module")
def user_report(user_zoo, tmp_path_factory):
    out = tmp_path_factory.mktemp("user-report")
    assert main(["report", str(user_zoo), "--out", str(out), "--epochs", "15"]) == 0
    return json.loads((out / "report.json").read_text()), (out / "report.md").read_text()


def test_the_report_runs_on_a_user_zoo_and_measures_each_tree_by_its_role(user_report):
    report, markdown = user_report
    assert set(report["table1"]) == {"alpha"} and set(report["alignment"]) == {"beta"}
    assert "## Router" in markdown and "## Table 1" in markdown and "## Table 2" in markdown
    assert "## Intra- vs inter-tree" not in markdown  # no forest declared, none invented
    row = report["table1"]["alpha"]
    # a hidden layer, never the head; on this small tree (14 training models, 15 epochs) the Dense
    # baseline shows the layer carries the classes, and ProbeX is at least 10 times smaller
    assert row["layer"] != "head.weight" and row["readout"]["layer"] == "head.weight"
    assert row["dense"] >= row["chance"] + 0.1
    assert row["probex_parameters"] * 10 < row["dense_parameters"]
    assert "The read-out, apart" in markdown
    alignment = report["alignment"]["beta"]
    best = max(alignment["table2"].values(), key=lambda figures: figures["zero_shot"])
    assert best["zero_shot"] >= 2 * alignment["chance"]["zero_shot"]
