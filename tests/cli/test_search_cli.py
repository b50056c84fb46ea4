"""``probex search | zero-shot | export | align``, in-process, on the shipped jungle (read-only), user zoos and tiny zoos."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from probex import ModelZoo, jungle, load_expert
from probex.cli import main
from probex.experiments.harness import chance_levels
from probex.zoo import ALIGNED, CLASSIFIER

from tests.user_zoo import copy_as_user_zoo
from tests.zoo.zoo_fixtures import write_generative_zoo, write_manifest_zoo

TINY_LAYER = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"


@pytest.fixture(scope="module")
def held_out_model():
    zoo = jungle.load()
    return next(record for record in zoo.records if record.tree == "mini-sd" and record.split == "test_holdout")


def table_rows(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("  ") and line.strip()[:1].isdigit()]


def test_search_prints_ranked_models_with_concepts_splits_and_images(capsys):
    aligned = jungle.load().trees_with_role(ALIGNED)[0]
    assert main(["search", "a pink circle", "-k", "3", "--tree", aligned]) == 0
    out = capsys.readouterr().out
    assert f"3 best of 3,100 models for 'a pink circle', from 1 of 1 trees answering: {aligned} (aligned)" in out
    rows = table_rows(out)
    assert [row.split()[0] for row in rows] == ["1", "2", "3"]
    assert all("pink circle" in row and "aligned: " in row and "training_images" in row and row.rstrip().endswith(".png")
               for row in rows)
    assert "weak match" not in out


def test_search_covers_every_tree_with_an_expert_by_default(capsys):
    zoo = jungle.load()
    assert main(["search", "a blue heart", "-k", "12"]) == 0
    out = capsys.readouterr().out
    answering = len(zoo.trees_with_role(CLASSIFIER)) + len(zoo.trees_with_role(ALIGNED))
    assert f"from {answering} of {len(zoo.trees)} trees answering" in out
    rows = table_rows(out)
    assert len(rows) == 12 and {row.split()[3] for row in rows} == set(zoo.trees_with_role(CLASSIFIER, ALIGNED))
    assert any("predicted to be trained on blue heart, p = 1.00" in row for row in rows)
    assert "cannot answer" in out and "weak match" not in out


def test_search_json_lists_the_hits_of_the_given_zoo(capsys):
    assert main(["search", str(jungle.SHIPPED), "red star", "-k", "6", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["prompt"] == "red star" and result["weak"] is False and result["note"] is None
    assert [hit["rank"] for hit in result["hits"]] == [1, 2, 3, 4, 5, 6]
    assert all("red star" in hit["labels"] and 0.5 <= hit["score"] <= 1 for hit in result["hits"])
    assert all(hit["images"] for hit in result["hits"] if hit["method"] == "aligned")
    readings = {tree["tree"]: tree for tree in result["trees"]}
    assert all(reading["read_as"][0] == ["red star", 1.0] for reading in readings.values() if reading["method"])


@pytest.mark.parametrize("concept", ["blue heart", "orange star", "yellow ring"])
def test_search_finds_a_classifier_concepts_models_in_every_tree(concept, capsys):
    """Acceptance 1 through the CLI for a few concepts (tests/language/test_zoo_search.py covers all 24)."""
    zoo = jungle.load()
    assert concept in zoo.select(tree=zoo.trees_with_role(CLASSIFIER)).label_names
    assert main(["search", f"a {concept}", "-k", "30", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)["hits"]
    classifier = [hit for hit in hits if hit["method"] == "classifier"]
    assert {hit["tree"] for hit in classifier} == set(zoo.trees_with_role(CLASSIFIER))
    assert sum(concept in hit["labels"] for hit in classifier) / len(classifier) >= 0.95
    assert any(hit["labels"] == [concept] for hit in hits if hit["method"] == "aligned")


def test_a_prompt_no_tree_knows_is_flagged_weak(capsys):
    """Acceptance 2 (CLI): "a dog" ends with the weak-match note, naming what each tree read it as."""
    assert main(["search", "a dog", "-k", "5"]) == 0
    out = capsys.readouterr().out
    note = out.strip().splitlines()[-1]
    assert note.startswith("weak match: no strong match for 'a dog'") and "nearest known class" in note
    assert "closeness 0.00" in out


@pytest.fixture(scope="module")
def classifier_user_zoo(tmp_path_factory):
    """One classifier tree of the shipped jungle (test models) saved as a user's zoo, with its expert under the new name."""
    tree = jungle.load().trees_with_role(CLASSIFIER)[0]
    out = copy_as_user_zoo(jungle.SHIPPED, tmp_path_factory.mktemp("user-classifiers"), {tree: "mine"}, per_split={"test": 30})
    shutil.copytree(jungle.expert_dirs()[tree], out / "experts" / "mine")
    return out


def test_search_on_a_classifier_only_user_zoo(classifier_user_zoo, capsys):
    """Acceptance 4 (CLI): no aligned tree and no aligned expert; the classifier tree answers."""
    assert main(["search", str(classifier_user_zoo), "a red star", "-k", "5"]) == 0
    out = capsys.readouterr().out
    assert "from 1 of 1 trees answering: mine (classifier)" in out
    rows = table_rows(out)
    assert len(rows) == 5 and all("predicted to be trained on red star" in row for row in rows)


def test_search_with_a_given_expert_narrows_to_its_tree(capsys):
    aligned = jungle.load().trees_with_role(ALIGNED)[0]
    assert main(["search", "red star", "-k", "2", "--expert", str(jungle.expert_dirs()[aligned])]) == 0
    rows = table_rows(capsys.readouterr().out)
    assert len(rows) == 2 and all(row.split()[3] == aligned and "red star" in row for row in rows)


@pytest.mark.parametrize("extra, message", [(["--tree", "nope"], "no tree 'nope'"),
                                            (["--tree", "a,b", "--expert", str(jungle.SHIPPED / "experts")],
                                             "answers for one tree")])
def test_search_user_errors_exit_2_in_one_line(extra, message, capsys):
    if "--expert" in extra:
        extra[-1] = str(next(iter(jungle.expert_dirs().values())))
    assert main(["search", "a red star", *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_zero_shot_prints_the_models_concept_first(held_out_model, capsys):
    assert main(["zero-shot", str(held_out_model.path), "-k", "3"]) == 0
    out = capsys.readouterr().out
    assert "the 64 class names of tree mini-sd" in out
    rows = table_rows(out)
    assert len(rows) == 3 and rows[0].split(maxsplit=2)[2] == held_out_model.labels[0]


def test_zero_shot_chooses_among_the_given_labels(held_out_model, tmp_path, capsys):
    concept = held_out_model.labels[0]
    assert main(["zero-shot", str(held_out_model.path), "--labels", f"zebra,{concept},blue moon"]) == 0
    rows = table_rows(capsys.readouterr().out)
    assert [row.split(maxsplit=2)[2] for row in rows][0] == concept and len(rows) == 3
    labels_file = tmp_path / "labels.txt"
    labels_file.write_text(f"zebra\n\n{concept}\n", encoding="utf-8")
    assert main(["zero-shot", str(held_out_model.path), "--labels-file", str(labels_file)]) == 0
    rows = table_rows(capsys.readouterr().out)
    assert [row.split(maxsplit=2)[2] for row in rows] == [concept, "zebra"]


def test_zero_shot_of_a_corrupt_file_exits_2_naming_it(tmp_path, capsys):
    upload = tmp_path / "not_a_model.safetensors"
    upload.write_bytes(b"this is not safetensors at all")
    assert main(["zero-shot", str(upload)]) == 2
    err = capsys.readouterr().err
    assert "not_a_model.safetensors" in err and "Traceback" not in err


def test_zero_shot_of_an_unrelated_model_names_the_missing_layer(capsys):
    other = next(record for record in jungle.load().records if record.tree == "cnn-supervised")
    assert main(["zero-shot", str(other.path)]) == 2
    err = capsys.readouterr().err
    assert str(other.path) in err and "unet.down.attn.to_q" in err and "missing" in err


def test_export_writes_every_model_with_its_embedding(tmp_path, capsys):
    out = tmp_path / "jungle.csv"
    assert main(["export", str(out)]) == 0
    assert f"wrote 1600 models x 256 dimensions of tree mini-sd to {out}" in capsys.readouterr().out
    frame = pd.read_csv(out)
    assert len(frame) == 1600 and "e255" in frame.columns and frame["image"].str.endswith(".png").all()


def test_export_to_an_unknown_suffix_exits_2(tmp_path, capsys):
    assert main(["export", str(tmp_path / "jungle.xlsx")]) == 2
    assert ".csv or .parquet" in capsys.readouterr().err


def test_search_on_a_zoo_without_an_aligned_expert_asks_for_one(tmp_path, capsys):
    write_manifest_zoo(tmp_path / "zoo")
    assert main(["search", str(tmp_path / "zoo"), "a red star"]) == 2
    err = capsys.readouterr().err
    assert "--expert" in err and "Traceback" not in err


def test_a_missing_expert_folder_exits_2(tmp_path, capsys):
    assert main(["search", "a red star", "--expert", str(tmp_path / "nowhere")]) == 2
    assert "nowhere" in capsys.readouterr().err


@pytest.fixture(scope="module")
def tiny_generative_zoo(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-sd") / "SD_tiny"
    write_generative_zoo(root, splits={"train": 16, "val": 2, "test": 8, "val_holdout": 4, "test_holdout": 8}, images_per_model=1)
    return root


def test_align_prints_every_figure_with_its_chance_level_and_saves(tiny_generative_zoo, tmp_path, capsys):
    out = tmp_path / "expert"
    assert main(["align", str(tiny_generative_zoo), "--layers", TINY_LAYER, "--epochs", "2", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "activation ReLU" in text
    zoo = ModelZoo.open(tiny_generative_zoo)
    concepts = {split: {record.labels[0] for record in zoo.select(split=split)} for split in ("train", "test_holdout")}
    expected = chance_levels(len(concepts["train"]), len(concepts["test_holdout"]))
    for figure, key in (("in-distribution top-1", "in_distribution"), ("zero-shot top-1 (held out)", "zero_shot"),
                        ("kNN (k=1)", "knn"), ("one-class AUC (kNN)", "occ_knn"),
                        ("one-class AUC (Ledoit-Wolf)", "occ_ledoit_wolf"), ("retrieval precision@1", "retrieval"),
                        ("prompt search top-1", "search_top1")):
        line = next(line for line in text.splitlines() if figure in line)
        value, chance = (float(number) for number in line.split()[-2:])
        assert 0.0 <= value <= 1.0 and chance == pytest.approx(expected[key], abs=5e-4), (figure, line)
    expert = load_expert(out)
    assert expert.layers_ == [TINY_LAYER] and expert.activation == "relu" and "zero_shot" in expert.metadata_


def test_align_no_activation_trains_the_linear_probex(tiny_generative_zoo, tmp_path, capsys):
    out = tmp_path / "linear"
    assert main(["align", str(tiny_generative_zoo), "--layers", TINY_LAYER, "--epochs", "1", "--no-activation",
                 "--out", str(out)]) == 0
    assert "activation none (linear ProbeX)" in capsys.readouterr().out
    assert load_expert(out).activation == "none"


def test_align_views_trains_a_multiview_aligner(tiny_generative_zoo, tmp_path, capsys):
    out = tmp_path / "multiview"
    assert main(["align", str(tiny_generative_zoo), "--layers", TINY_LAYER, "--epochs", "1", "--views", "xu+xxtu",
                 "--out", str(out)]) == 0
    assert "views xu+xxtu" in capsys.readouterr().out
    assert load_expert(out).views == "xu+xxtu"


def test_align_without_held_out_splits_exits_2_saying_what_it_needs(tmp_path, capsys):
    write_manifest_zoo(tmp_path / "zoo", trees=("vit-a",))
    assert main(["align", str(tmp_path / "zoo"), "--layers", "block.fc.weight"]) == 2
    err = capsys.readouterr().err
    assert "val_holdout" in err and "Traceback" not in err


def test_align_with_an_unknown_layer_exits_2_listing_layers(tiny_generative_zoo, capsys):
    assert main(["align", str(tiny_generative_zoo), "--layers", "nope"]) == 2
    err = capsys.readouterr().err
    assert "'nope'" in err and TINY_LAYER in err


def test_an_unquoted_prompt_exits_2_asking_to_quote_it(capsys):
    assert main(["search", "red", "star"]) == 2
    err = capsys.readouterr().err
    assert "quote" in err and '"red star"' in err
