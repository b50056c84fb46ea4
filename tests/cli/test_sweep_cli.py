"""probex sweep: the per-layer table with the best layer marked, resumable, sharded."""

import json

import pytest

from probex.cli import main

FAST = ["--epochs", "3"]


def test_sweep_prints_every_layer_and_marks_the_best(tmp_path, capsys):
    results = tmp_path / "cnn.jsonl"
    assert main(["sweep", "--tree", "cnn-supervised", "--layers", "^(conv1|head)", *FAST, "--results", str(results),
                 "--html", str(tmp_path / "cnn.html")]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith(("  conv", "  head", "* "))]
    assert [next(word for word in row.split() if word.endswith(".weight")) for row in rows] == ["conv1.weight", "head.weight"]
    assert sum(row.startswith("*") for row in rows) == 1
    assert "12x27" in out and len(results.read_text().splitlines()) == 2
    assert (tmp_path / "cnn.html").read_text().lower().startswith("<!doctype html>")


def test_sweep_with_views_trains_multiview_probes_into_their_own_results(tmp_path, capsys):
    results = tmp_path / "cnn.jsonl"
    assert main(["sweep", "--tree", "cnn-supervised", "--layers", "^conv1", *FAST, "--views", "first",
                 "--results", str(results), "--json"]) == 0
    single = json.loads(capsys.readouterr().out)["cnn-supervised"]["layers"][0]
    assert main(["sweep", "--tree", "cnn-supervised", "--layers", "^conv1", *FAST, "--results", str(results),
                 "--json"]) == 0
    multi = json.loads(capsys.readouterr().out)["cnn-supervised"]["layers"][0]
    assert single["key"] != multi["key"] and single["n_parameters"] != multi["n_parameters"]
    assert len(results.read_text().splitlines()) == 2  # the single-view sweep did not reuse the multi-view row


def test_sweep_uses_the_views_a_trees_role_names_unless_told_otherwise(tmp_path, capsys):
    arguments = ["sweep", "--tree", "cnn-own-heads", "--layers", "^conv1", *FAST, "--json"]
    assert main([*arguments, "--results", str(tmp_path / "own.jsonl")]) == 0
    own = json.loads(capsys.readouterr().out)["cnn-own-heads"]
    assert main([*arguments, "--views", "xu", "--results", str(tmp_path / "xu.jsonl")]) == 0
    single = json.loads(capsys.readouterr().out)["cnn-own-heads"]
    assert (own["views"], single["views"]) == ("xtxu", "xu")  # the manifest's role names xtxu for this tree
    assert own["layers"][0]["n_parameters"] != single["layers"][0]["n_parameters"]


def test_sweep_with_an_unknown_view_exits_2_listing_the_views(capsys):
    assert main(["sweep", "--tree", "cnn-supervised", "--views", "xq"]) == 2
    err = capsys.readouterr().err
    assert "xq" in err and "xxtu" in err


def test_sweep_json_after_two_shards_gathers_them_without_training(tmp_path, capsys):
    results = tmp_path / "cnn.jsonl"
    for shard in ("0/2", "1/2"):
        assert main(["sweep", "--tree", "cnn-supervised", "--layers", "^(conv1|head)", *FAST,
                     "--results", str(results), "--shard", shard]) == 0
    capsys.readouterr()
    assert main(["sweep", "--tree", "cnn-supervised", "--layers", "^(conv1|head)", *FAST, "--results", str(results),
                 "--json"]) == 0
    table = json.loads(capsys.readouterr().out)["cnn-supervised"]
    assert [row["layer"] for row in table["layers"]] == ["conv1.weight", "head.weight"]
    assert not results.exists()  # nothing was left to train, so nothing was appended


def test_sweep_of_a_zoo_with_several_trees_asks_for_one(capsys):
    assert main(["sweep", *FAST]) == 2
    assert "--tree" in capsys.readouterr().err


def test_sweep_of_an_unknown_tree_lists_the_trees(capsys):
    assert main(["sweep", "--tree", "resnet", *FAST]) == 2
    assert "cnn-supervised" in capsys.readouterr().err
