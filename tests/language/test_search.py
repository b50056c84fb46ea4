"""ModelIndex on the shipped demo jungle's generative tree (read-only) with its shipped aligned expert."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
from safetensors import safe_open
from safetensors.torch import save_file

from probex import jungle, load_expert
from probex.errors import ZooError
from probex.language.search import Hit, ModelIndex, prompt_as_class_name

HELD_OUT_SPLITS = ("val_holdout", "test_holdout")


@pytest.fixture(scope="module")
def zoo():
    return jungle.load()


@pytest.fixture(scope="module")
def expert():
    return load_expert(jungle.expert_dirs()["mini-sd"])


@pytest.fixture(scope="module")
def index(expert, zoo):
    return ModelIndex.build(expert, zoo)


def held_out_concepts(index: ModelIndex) -> list[str]:
    return sorted({record.labels[0] for record in index.records if record.split in HELD_OUT_SPLITS})


def held_out_record(index: ModelIndex):
    return next(record for record in index.records if record.split == "test_holdout")


def test_build_indexes_every_model_of_the_experts_tree_as_unit_rows(index, zoo):
    assert len(index) == len(zoo.select(tree="mini-sd")) == 1600
    assert index.tree == "mini-sd"
    assert index.embeddings.dtype == np.float32 and index.embeddings.shape == (1600, 256)
    np.testing.assert_allclose(np.linalg.norm(index.embeddings, axis=1), 1.0, atol=1e-5)
    assert len(index.classes) == 64 and "red star" in index.classes


def test_held_out_concept_prompts_rank_their_models_first(index):
    concepts = held_out_concepts(index)
    assert len(concepts) == 16
    hits = [index.search(f"a {concept}", k=1)[0] for concept in concepts]
    hit_rate = np.mean([concept in hit.labels for concept, hit in zip(concepts, hits)])
    share = {concept: np.mean([concept in record.labels for record in index.records]) for concept in concepts}
    chance = np.mean(list(share.values()))  # a model drawn at random has the prompt's concept
    print(f"top-1 hit rate of the 16 held-out concepts' prompts over all 1600 models: {hit_rate:.3f} (chance {chance:.3f})")
    assert hit_rate > chance + 0.85


def test_search_ranks_the_best_k_models_with_their_images(index):
    hits = index.search("a red star", k=10)  # its speed: benchmarks/bench_search.py
    assert [hit.rank for hit in hits] == list(range(1, 11))
    assert all(a.score >= b.score for a, b in zip(hits, hits[1:]))
    assert isinstance(hits[0], Hit) and hits[0].images and hits[0].path.is_file()


def test_a_prompt_is_read_as_the_class_name_inside_it():
    assert prompt_as_class_name("a photo of a red star") == "red star"
    assert prompt_as_class_name("A  red star") == "red star"
    assert prompt_as_class_name("red star") == "red star"
    assert prompt_as_class_name("a drawing of a red star", template="a drawing of a {}") == "red star"
    with pytest.raises(ValueError, match="empty"):
        prompt_as_class_name("   ")


def test_prompt_forms_of_one_concept_give_one_ranking(index):
    rankings = [[hit.model_id for hit in index.search(prompt, k=5)] for prompt in ("red star", "a red star", "a photo of a red star")]
    assert rankings[0] == rankings[1] == rankings[2]


def test_top_labels_of_a_held_out_model_contains_its_concept(index):
    record = held_out_record(index)
    for model in (record, record.id, record.path):
        labels = index.top_labels(model, k=5)
        assert len(labels) == 5 and all(isinstance(score, float) for _, score in labels)
        assert record.labels[0] in [label for label, _ in labels]
        assert [score for _, score in labels] == sorted((score for _, score in labels), reverse=True)


def test_top_labels_choose_among_the_given_candidates_only(index):
    record = held_out_record(index)
    candidates = [record.labels[0], "a completely unrelated thing", "zebra"]
    labels = index.top_labels(record.id, candidates=candidates, k=5)
    assert sorted(label for label, _ in labels) == sorted(candidates)
    assert labels[0][0] == record.labels[0]


def test_a_peft_style_lora_upload_encodes_like_the_zoo_file(index, tmp_path):
    record = held_out_record(index)
    with safe_open(str(record.path), "pt") as handle:
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        metadata = handle.metadata()
    peft = {f"base_model.model.{key.replace('.lora.down.weight', '.lora_A.weight').replace('.lora.up.weight', '.lora_B.weight')}": value
            for key, value in tensors.items()}
    upload = tmp_path / "my_lora.safetensors"
    save_file(peft, str(upload), metadata=metadata)
    np.testing.assert_allclose(index.embed_model(upload), index.embed_model(record.id), atol=1e-5)


def test_an_upload_without_the_experts_layers_names_the_file_the_layer_and_its_layers(index, zoo, tmp_path):
    other = next(record for record in zoo.records if record.tree == "cnn-supervised")
    with pytest.raises(ZooError) as error:
        index.top_labels(other.path)
    message = str(error.value)
    assert str(other.path) in message and "unet.down.attn.to_q" in message and "conv1.weight" in message


def test_a_corrupt_upload_raises_zoo_error_with_the_file_name(index, tmp_path):
    upload = tmp_path / "broken.safetensors"
    upload.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(ZooError, match="broken.safetensors"):
        index.top_labels(upload)


def test_neighbours_exclude_the_query_and_carry_training_images(index):
    record = held_out_record(index)
    hits = index.neighbours(record.id, k=5)
    assert len(hits) == 5 and record.id not in [hit.model_id for hit in hits]
    assert all(hit.images for hit in hits)
    same = sum(record.labels[0] in other.labels for other in index.records) - 1
    by_chance = 5 * same / (len(index) - 1)  # of 5 other models drawn at random, how many share its concept
    assert sum(record.labels[0] in hit.labels for hit in hits) >= by_chance + 2.5  # its concept's models are its neighbours


def test_neighbours_of_an_embedding_include_the_model_itself(index):
    record = held_out_record(index)
    hits = index.neighbours(index.embed_model(record.id), k=3)
    assert hits[0].model_id == record.id and hits[0].score == pytest.approx(1.0, abs=1e-5)


def test_neighbours_of_an_unknown_model_raise_zoo_error(index):
    with pytest.raises(ZooError, match="nope"):
        index.neighbours("nope")


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_export_round_trips_ids_metadata_and_embeddings(index, tmp_path, suffix):
    path = index.export(tmp_path / f"embeddings{suffix}")
    frame = pd.read_csv(path) if suffix == ".csv" else pd.read_parquet(path)
    assert list(frame.columns[:6]) == ["id", "split", "tree", "labels", "path", "image"]
    assert list(frame["id"]) == index.ids
    assert frame["image"].iloc[0] == str(index.records[0].images[0])
    embedding_columns = [f"e{i}" for i in range(index.embeddings.shape[1])]
    np.testing.assert_allclose(frame[embedding_columns].to_numpy(), index.embeddings, atol=1e-6)
    assert not list(tmp_path.glob(".*.tmp"))


def test_export_refuses_other_suffixes(index, tmp_path):
    with pytest.raises(Exception, match=r"\.csv or \.parquet"):
        index.export(tmp_path / "embeddings.xlsx")


def test_build_restricts_the_index_to_the_given_splits(expert, zoo):
    held = ModelIndex.build(expert, zoo, splits=list(HELD_OUT_SPLITS))
    assert {record.split for record in held.records} == set(HELD_OUT_SPLITS)
    assert len(held.classes) == 64  # candidates stay the tree's whole vocabulary


def test_an_expert_without_a_tree_indexes_the_models_that_have_its_layers(expert, zoo, index):
    untagged = copy.copy(expert)
    untagged.metadata_ = {}
    found = ModelIndex.build(untagged, zoo.select(split="test_holdout"))
    assert found.tree is None
    assert {record.tree for record in found.records} == {"mini-sd"}
    assert len(found) == len(zoo.select(split="test_holdout", tree="mini-sd"))


def test_build_reports_progress(expert, zoo):
    calls = []
    ModelIndex.build(expert, zoo.select(split="test_holdout"), progress=lambda done, total, message: calls.append((done, total)))
    assert calls and calls[-1][0] == calls[-1][1]


def test_an_expert_whose_tree_the_zoo_does_not_name_indexes_the_models_with_its_layers(expert, zoo):
    elsewhere = copy.copy(expert)
    elsewhere.metadata_ = {"tree": "a-tree-this-zoo-calls-otherwise"}
    found = ModelIndex.build(elsewhere, zoo.select(split="test_holdout"))
    assert {record.tree for record in found.records} == {"mini-sd"}


def test_a_zoo_without_the_experts_layers_raises_zoo_error(expert, zoo):
    with pytest.raises(ZooError, match="unet.down.attn.to_q"):
        ModelIndex.build(expert, zoo.select(tree="cnn-supervised"))


def test_a_prompt_nothing_was_trained_on_is_a_weak_match_and_every_held_out_concept_is_strong(index):
    for prompt in ("a dog", "a car", "a photo of a violin"):
        strength = index.match_strength(prompt)
        assert strength.weak and strength.match < 0.05, (prompt, strength)
        assert "no strong match" in strength.describe()
    for concept in held_out_concepts(index):
        assert not index.match_strength(f"a {concept}").weak, concept


def test_hits_carry_calibrated_scores_that_fall_with_rank(index):
    hits = index.search("a red star", k=20)
    assert all(0.0 <= hit.match <= 1.0 for hit in hits)
    assert [hit.match for hit in hits] == sorted((hit.match for hit in hits), reverse=True)
    assert hits[0].z > 2.5 and [hit.z for hit in hits] == sorted((hit.z for hit in hits), reverse=True)
    assert index.search("a dog", k=1)[0].match < 0.05 < 0.5 < hits[0].match


def test_more_like_a_few_models_of_a_concept_ranks_the_rest_of_that_concept_first(index):
    from probex.language.selection import most_similar

    precisions = []
    for concept in sorted({record.labels[0] for record in index.records})[::8]:  # 8 concepts, seen and held out
        members = [record.id for record in index.records if record.labels[0] == concept]
        chosen = members[:5]
        scores = index.more_like(chosen)
        assert scores.shape == (len(index),)
        top = most_similar(scores, exclude=index.rows(chosen), k=len(members) - 5)
        precisions.append(np.mean([index.records[row].labels[0] == concept for row in top]))
    chance = 20 / (len(index) - 5)  # 20 more models of the concept among the rest
    assert np.mean(precisions) >= 0.6 > 20 * chance, (precisions, chance)
    with pytest.raises(ZooError, match="not in this index"):
        index.more_like(["no-such-model"])
