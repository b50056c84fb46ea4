"""``probex search | zero-shot | export | align``, in-process, on the shipped jungle (read-only) and tiny zoos."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from probex import ModelZoo, jungle, load_expert
from probex.cli import main
from probex.experiments.harness import chance_levels

from tests.zoo.zoo_fixtures import write_generative_zoo, write_manifest_zoo

TINY_LAYER = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"


@pytest.fixture(scope="module")
def held_out_model():
    zoo = jungle.load()
    return next(record for record in zoo.records if record.tree == "mini-sd" and record.split == "test_holdout")


def table_rows(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("  ") and line.strip()[:1].isdigit()]


def test_search_prints_ranked_models_with_concepts_splits_and_images(capsys):
    assert main(["search", "a pink circle", "-k", "3"]) == 0
    out = capsys.readouterr().out
    assert "3 of 1600 models of tree mini-sd for 'a pink circle'" in out
    rows = table_rows(out)
    assert [row.split()[0] for row in rows] == ["1", "2", "3"]
    assert all("pink circle" in row and "training_images" in row and row.rstrip().endswith(".png") for row in rows)


def test_search_json_lists_the_hits_of_the_given_zoo(capsys):
    assert main(["search", str(jungle.SHIPPED), "red star", "-k", "2", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert [hit["rank"] for hit in hits] == [1, 2]
    assert all(hit["labels"] == ["red star"] and hit["images"] and hit["tree"] == "mini-sd" for hit in hits)


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
