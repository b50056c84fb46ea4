"""The evaluation harness: figures by tree role, on any zoo, with chance levels that name every figure."""

import json

import pytest

from probex.cli import main
from probex.experiments.harness import ALIGNMENT_KEYS, chance_levels, evaluated_trees, task_of
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
