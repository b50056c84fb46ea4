"""The build's validation sweep: recommended layers measured, experts shipped in half precision, resumable."""

import json

import pytest

from probex import jungle, load_expert
from probex.cli import main
from probex.jungle.validation import validate_jungle
from baselines import constant_multilabel_accuracy, multilabel_matrix

TREES = {"cnn-supervised", "cnn-attributes", "mixer-supervised", "cnn-own-heads", "mini-sd"}


def test_every_tree_but_the_forest_gets_a_recommended_layer_from_its_catalog(small_jungle):
    recommended = jungle.recommended_layers(small_jungle)
    assert set(recommended) == TREES
    zoo = jungle.load(small_jungle)
    for tree, layer in recommended.items():
        assert layer in {info.name for info in zoo.select(tree=tree).catalog()}


def test_the_recommended_layer_is_the_best_hidden_layer_by_validation_and_the_head_a_flagged_read_out(small_jungle):
    recommended = jungle.recommended_layers(small_jungle)
    for tree, layer in recommended.items():
        rows = [json.loads(line) for line in (small_jungle / "sweeps" / f"{tree}.jsonl").read_text().splitlines()]
        hidden = [row for row in rows if not row["readout"]]
        assert max(row["val"] for row in hidden) == next(row["val"] for row in hidden if row["layer"] == layer)
        assert [row["layer"] for row in rows if row["readout"]] == ([] if tree == "mini-sd" else ["head.weight"])


def test_each_shipped_expert_loads_with_its_layers_tree_and_figures(small_jungle):
    folders = jungle.expert_dirs(small_jungle)
    assert set(folders) == TREES
    recommended = jungle.recommended_layers(small_jungle)
    zoo = jungle.load(small_jungle)
    for tree, folder in folders.items():
        expert = load_expert(folder)
        assert expert.metadata_["tree"] == tree
        assert expert.layers_ == expert.metadata_["layers"]
        assert recommended[tree] in expert.layers_
        assert expert.metadata_["chosen_by"] == "validation"
        if expert.metadata_["task"] == "align":
            assert expert.metadata_["test"] > baseline(zoo.select(tree=tree), "align") + 0.1, tree
        else:  # the small jungle's hidden layers carry little signal (20 models a tree): the figure is the expert's own
            test = zoo.select(tree=tree).bank(expert.layers_[0], split="test")
            assert expert.score(test) == pytest.approx(expert.metadata_["test"], abs=0.01), tree


def test_a_tree_whose_role_names_probe_views_is_swept_and_shipped_with_them(small_jungle):
    zoo = jungle.load(small_jungle)
    assert zoo.role("cnn-own-heads").views == "xtxu"  # its models start their heads at random: read X^T X U
    for tree, folder in jungle.expert_dirs(small_jungle).items():
        expert = load_expert(folder)
        assert expert.views == (zoo.role(tree).views or "xu"), tree
        assert expert.metadata_["params"].get("views", "xu") == expert.views, tree


def baseline(tree_zoo, task: str) -> float:
    """What a model that learned nothing scores on the test split: the best constant predictor of the training
    classes (classes), or chance over the training concepts (align: one concept per model, about balanced)."""
    if task == "align":
        return 1 / len({record.labels[0] for record in tree_zoo.select(split="train")})
    classes = tree_zoo.label_names
    train, test = ([record.labels for record in tree_zoo.select(split=split)] for split in ("train", "test"))
    return constant_multilabel_accuracy(multilabel_matrix(train, classes), multilabel_matrix(test, classes))


def test_the_shipped_experts_predict_on_the_test_split(small_jungle):
    zoo = jungle.load(small_jungle)
    expert = load_expert(jungle.expert_dirs(small_jungle)["cnn-supervised"])
    test = zoo.select(tree="cnn-supervised").bank(expert.layers_[0], split="test")
    assert expert.score(test) == pytest.approx(expert.metadata_["test"], abs=0.02)  # fp16 weights: the same figure


def test_validating_again_trains_no_layer_twice(small_jungle):
    sweeps = {path.name: path.read_text() for path in (small_jungle / "sweeps").iterdir()}
    summary = validate_jungle(small_jungle)
    assert {path.name: path.read_text() for path in (small_jungle / "sweeps").iterdir()} == sweeps
    assert summary["trees"].keys() == TREES


def test_jungle_check_prints_every_acceptance_figure(small_jungle, capsys):
    assert main(["jungle", "check", str(small_jungle)]) == 0
    out = capsys.readouterr().out
    for heading in ("router", "ProbeX", "Dense", "StatNN", "forest", "zero_shot", "retrieval", "multi-view", "read-out"):
        assert heading in out
    report = json.loads((small_jungle / "check.json").read_text())
    assert all("multiview" in row for row in report["classifiers"].values())
    assert all("multiview_single_layer" in figures for figures in report["aligned"].values())
    assert report["router"]["held_out_accuracy"] == 1.0
    for tree, row in report["classifiers"].items():  # Table 1 at a hidden layer, the head measured apart
        assert row["layer"] != "head.weight" and row["readout"]["layer"] == "head.weight"
    own = report["classifiers"]["cnn-own-heads"]  # its shipped expert reads other views: the multi-view column
    assert (own["multiview_views"], own["multiview_source"], own["probex_source"]) == ("xtxu", "shipped", "trained now")
    assert all(row["multiview_source"] == "trained now" and row["multiview_views"] == "all"
               for tree, row in report["classifiers"].items() if tree != "cnn-own-heads")
    assert "the parameter lesson" in out and "multi-view minus single-view ProbeX" in out
    for tree, row in report["classifiers"].items():  # compared over seeds, with the views of the column
        assert row["views_comparison"]["views"] == row["multiview_views"] and len(row["views_comparison"]["seeds"]) == 3
