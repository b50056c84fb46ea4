"""ModelZoo: selecting sub-zoos, vocabularies, catalogs, architectures and asking for layers."""

import pytest
import torch
from zoo_fixtures import write_discriminative_zoo, write_manifest_zoo

from probex.errors import ZooError
from probex.zoo import LayerInfo, ModelZoo


@pytest.fixture
def manifest_zoo(tmp_path):
    written = write_manifest_zoo(tmp_path, n_models=8, trees=("vit-a", "vit-b"), splits=("train", "train", "val", "test"))
    return ModelZoo.open(tmp_path), written


def test_select_by_split_keeps_only_that_split(manifest_zoo):
    zoo, written = manifest_zoo
    train = zoo.select(split="train")
    assert train.ids == [model.id for model in written if model.split == "train"] and len(train) == 4
    assert train.root == zoo.root and train.layout == zoo.layout


def test_select_accepts_lists_and_combines_split_and_tree(manifest_zoo):
    zoo, written = manifest_zoo
    chosen = zoo.select(split=["val", "test"], tree="vit-a")
    assert chosen.ids == [m.id for m in written if m.split in ("val", "test") and m.tree == "vit-a"]
    assert set(chosen.trees) == {"vit-a"}


def test_select_by_ids_keeps_their_order(manifest_zoo):
    zoo, written = manifest_zoo
    ids = [written[5].id, written[1].id]
    assert zoo.select(ids=ids).ids == ids


@pytest.mark.parametrize("kwargs, message", [({"split": "valid"}, "available splits: train, val, test"), ({"tree": "vit-c"}, "vit-a, vit-b"), ({"ids": ["vit-a/ft-9999"]}, "closest")])
def test_select_of_something_absent_raises_naming_what_exists(manifest_zoo, kwargs, message):
    zoo, _ = manifest_zoo
    with pytest.raises(ZooError, match=message):
        zoo.select(**kwargs)


def test_label_names_are_the_sorted_vocabulary(manifest_zoo):
    zoo, written = manifest_zoo
    assert zoo.label_names == sorted({label for model in written for label in model.labels})


def test_catalog_lists_usable_layers_of_a_record(manifest_zoo):
    zoo, written = manifest_zoo
    catalog = zoo.catalog(written[2].id)
    assert all(isinstance(info, LayerInfo) for info in catalog)
    assert {info.name: info.shape for info in catalog} == {"stem.weight": (4, 18), "block.fc.weight": (4, 4), "block.fc.bias": (4, 1)}
    assert zoo.catalog() == catalog


def test_architectures_separate_models_whose_layers_differ(tmp_path):
    write_discriminative_zoo(tmp_path, splits={"train": 3}, subset="MAE")
    write_discriminative_zoo(tmp_path, splits={"train": 2}, subset="ResNet", first_index=10)
    architectures = ModelZoo.open(tmp_path).architectures()
    assert sorted(len(group) for group in architectures.values()) == [2, 3]
    assert sorted(tuple(group.trees) for group in architectures.values()) == [("MAE",), ("ResNet",)]
    assert all("layers" in name and "#" in name for name in architectures)


def test_missing_layer_names_the_file_and_close_layer_names(manifest_zoo):
    zoo, written = manifest_zoo
    with pytest.raises(ZooError, match=r"model\.safetensors.*'block\.fc\.weights' missing; closest available: block\.fc\.weight"):
        zoo.bank("block.fc.weights", cache=False)


def test_bank_across_architectures_says_to_split_by_architecture(tmp_path):
    write_discriminative_zoo(tmp_path, splits={"train": 1}, subset="MAE")
    write_discriminative_zoo(tmp_path, splits={"train": 1}, subset="ResNet", first_index=10)
    with pytest.raises(ZooError, match="architectures"):
        ModelZoo.open(tmp_path).bank("classifier.weight", cache=False)


def test_bank_of_one_split_holds_only_that_split(manifest_zoo):
    zoo, written = manifest_zoo
    bank = zoo.bank("block.fc.weight", split="val", cache=False)
    expected = [model for model in written if model.split == "val"]
    assert bank.ids == [model.id for model in expected]
    torch.testing.assert_close(bank.X, torch.stack([model.tensors["block.fc.weight"] for model in expected]))


def test_open_reports_header_progress(tmp_path):
    write_manifest_zoo(tmp_path, n_models=5, images_per_model=0)
    calls = []
    ModelZoo.open(tmp_path, progress=lambda done, total, message: calls.append((done, total)))
    assert calls[-1] == (5, 5) and len(calls) == 5


def test_record_lookup_by_id(manifest_zoo):
    zoo, written = manifest_zoo
    assert zoo.record(written[3].id).path == written[3].path
    assert written[3].id in zoo
    with pytest.raises(ZooError, match="no model"):
        zoo.record("nope")
