"""ModelZoo.open on miniature zoos written exactly in each of the three layouts."""

import json
import shutil

import pytest
import torch
from safetensors.torch import save_file
from zoo_fixtures import (
    UNPICKLED_MARKER,
    truncate_file,
    write_discriminative_zoo,
    write_garbage_header,
    write_generative_zoo,
    write_manifest_zoo,
    write_wrong_sizes,
)

from probex.errors import ZooError
from probex.zoo import ModelRecord, ModelZoo
from probex.storage import safe_name
from probex.zoo.manifest import save_model_file, write_manifest


def _by_id(zoo):
    return {record.id: record for record in zoo.records}


# -- Model-J discriminative: Hugging Face cache folders per split ---------------------------


def test_discriminative_zoo_reads_ids_splits_labels_and_subset_tree(tmp_path):
    written = write_discriminative_zoo(tmp_path, splits={"train": 3, "val": 1, "test": 2}, subset="MAE")
    zoo = ModelZoo.open(tmp_path)
    assert zoo.layout == "modelj-discriminative" and len(zoo) == 6 and zoo.skipped == []
    records = _by_id(zoo)
    for model in written:
        record = records[model.id]
        assert (record.split, record.tree, record.labels) == (model.split, "MAE", model.labels)
        assert record.path == model.path and record.path.name == "model.safetensors"
        assert record.metadata["lr"] == "0.0001" and record.metadata["repo_id"] == f"ProbeX/Model-J__MAE__{model.id}"
        assert record.images == []
    assert zoo.splits == ["train", "val", "test"]
    assert zoo.ids[:3] == ["model_idx_0000", "model_idx_0001", "model_idx_0002"]


def test_discriminative_zoo_never_unpickles_training_args(tmp_path):
    write_discriminative_zoo(tmp_path, splits={"train": 2})
    zoo = ModelZoo.open(tmp_path)
    zoo.bank("classifier.weight", cache=False)
    assert all(record.path.suffix == ".safetensors" for record in zoo.records)
    assert not (tmp_path / UNPICKLED_MARKER).exists()


def test_snapshot_holding_only_a_pickle_is_skipped_with_reason(tmp_path):
    written = write_discriminative_zoo(tmp_path, splits={"train": 2})
    written[0].path.unlink()
    pickle_file = written[0].path.with_name("pytorch_model.bin")
    pickle_file.write_bytes(b"\x80\x04K\x01.")
    zoo = ModelZoo.open(tmp_path)
    assert zoo.ids == ["model_idx_0001"]
    (path, reason), = zoo.skipped
    assert "models--ProbeX--Model-J__MAE__model_idx_0000" in str(path)
    assert "pytorch_model.bin" in reason and "never loads" in reason


def test_split_cache_folder_opened_directly_keeps_its_split(tmp_path):
    write_discriminative_zoo(tmp_path, splits={"val": 2})
    zoo = ModelZoo.open(tmp_path / "val")
    assert zoo.splits == ["val"] and len(zoo) == 2


def test_hf_home_with_hub_folder_is_read(tmp_path):
    write_discriminative_zoo(tmp_path / "download", splits={"train": 2})
    shutil.move(tmp_path / "download" / "train", tmp_path / "home" / "hub")
    zoo = ModelZoo.open(tmp_path / "home")
    assert len(zoo) == 2 and zoo.splits == []


def test_same_model_index_in_two_subsets_gets_qualified_ids(tmp_path):
    write_discriminative_zoo(tmp_path, splits={"train": 2}, subset="DINO")
    write_discriminative_zoo(tmp_path, splits={"train": 2}, subset="ResNet")
    zoo = ModelZoo.open(tmp_path)
    assert sorted(zoo.ids) == ["DINO/model_idx_0000", "DINO/model_idx_0001", "ResNet/model_idx_0000", "ResNet/model_idx_0001"]
    assert zoo.trees == ["DINO", "ResNet"]


def test_refs_main_pointing_nowhere_skips_that_model(tmp_path):
    written = write_discriminative_zoo(tmp_path, splits={"train": 2})
    repo = written[1].path.parents[2]
    (repo / "refs" / "main").write_text("0" * 40)
    zoo = ModelZoo.open(tmp_path)
    assert zoo.ids == ["model_idx_0000"]
    assert "snapshots/" + "0" * 40 in zoo.skipped[0][1]


def test_malicious_chosen_targets_are_never_evaluated(tmp_path):
    marker = tmp_path / "evaluated"
    repo = tmp_path / "train" / "models--ProbeX--Model-J__MAE__model_idx_0007"
    (repo / "snapshots" / "abc").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc")
    payload = f"__import__('pathlib').Path({str(marker)!r}).touch()"
    save_file({"w": torch.ones(2, 2)}, str(repo / "snapshots" / "abc" / "model.safetensors"), metadata={"dataset_chosen_targets": payload})
    zoo = ModelZoo.open(tmp_path)
    assert len(zoo) == 0 and "dataset_chosen_targets" in zoo.skipped[0][1]
    assert not marker.exists()


def test_integer_chosen_targets_are_read_as_cifar100_indices(tmp_path):
    written = write_discriminative_zoo(tmp_path, splits={"train": 1})
    tensors = written[0].tensors
    written[0].path.unlink()  # replace the symlink by a file with index labels
    save_file(tensors, str(written[0].path), metadata={"dataset_chosen_targets": "[0, 47, 99]"})
    assert ModelZoo.open(tmp_path).records[0].labels == ["apple", "maple_tree", "worm"]


# -- Model-J generative: {split}/model_idx_XXXX/pytorch_lora_weights.safetensors -----------


def test_generative_zoo_reads_ids_splits_labels_and_images(tmp_path):
    root = tmp_path / "Model-J__SD_200"
    written = write_generative_zoo(root, images_per_model=3)
    zoo = ModelZoo.open(root)
    assert zoo.layout == "modelj-generative" and len(zoo) == len(written) == 7
    assert set(zoo.splits) == {"train", "val", "test", "val_holdout", "test_holdout"}
    records = _by_id(zoo)
    for model in written:
        record = records[model.id]
        assert (record.split, record.labels, record.images) == (model.split, model.labels, model.images)
        assert record.tree == "SD_200" and record.metadata["imagenet_class_id"] == model.metadata["imagenet_class_id"]
    assert {tuple(record.labels) for record in zoo.records} == {("golden retriever",), ("tench",), ("pizza",), ("African elephant",)}


def test_generative_tree_is_generic_without_a_modelj_folder_or_base_model(tmp_path):
    write_generative_zoo(tmp_path / "loras", splits={"train": 1})
    assert ModelZoo.open(tmp_path / "loras").trees == ["generative"]


def test_generative_repo_in_the_hf_cache_is_opened_at_its_snapshot(tmp_path):
    repo = tmp_path / "cache" / "models--ProbeX--Model-J__SD_1k"
    write_generative_zoo(repo / "snapshots" / "f00d", splits={"train": 2, "test": 1})
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("f00d")
    for root in (tmp_path / "cache", repo):
        zoo = ModelZoo.open(root)
        assert zoo.layout == "modelj-generative" and len(zoo) == 3 and zoo.trees == ["SD_1k"]


def test_generative_split_folder_opened_directly(tmp_path):
    write_generative_zoo(tmp_path, splits={"val_holdout": 2})
    zoo = ModelZoo.open(tmp_path / "val_holdout")
    assert zoo.splits == ["val_holdout"] and len(zoo) == 2


def test_generative_unknown_class_id_is_skipped_with_reason(tmp_path):
    written = write_generative_zoo(tmp_path, splits={"train": 2}, images_per_model=0)
    save_file(written[0].tensors, str(written[0].path), metadata={"imagenet_class_id": "n99999999"})
    zoo = ModelZoo.open(tmp_path)
    assert zoo.ids == [written[1].id]
    assert zoo.skipped[0][0] == written[0].path and "n99999999" in zoo.skipped[0][1]


def test_generative_model_folder_without_weights_is_skipped(tmp_path):
    written = write_generative_zoo(tmp_path, splits={"train": 2}, images_per_model=0)
    written[0].path.unlink()
    zoo = ModelZoo.open(tmp_path)
    assert zoo.ids == [written[1].id] and "pytorch_lora_weights.safetensors" in zoo.skipped[0][1]


# -- our manifest ---------------------------------------------------------------------------


def test_manifest_zoo_reads_every_field(tmp_path):
    written = write_manifest_zoo(tmp_path, n_models=6, images_per_model=2)
    zoo = ModelZoo.open(tmp_path)
    assert zoo.layout == "probex-manifest" and zoo.name == "mini" and zoo.description == "a test zoo"
    assert zoo.ids == [model.id for model in written]
    for record, model in zip(zoo.records, written):
        assert (record.path, record.split, record.tree, record.labels, record.images) == (
            model.path, model.split, model.tree, model.labels, model.images
        )
        assert record.metadata == {"lr": "0.001", "epochs": "5"}


def test_manifest_without_optional_fields_gives_empty_ones(tmp_path):
    save_file({"w": torch.ones(2, 2)}, str(tmp_path / "a.safetensors"))
    (tmp_path / "probex_zoo.json").write_text(json.dumps({"format": "probex-zoo", "version": 1, "models": [{"id": "a", "path": "a.safetensors"}]}))
    (record,) = ModelZoo.open(tmp_path).records
    assert (record.split, record.tree, record.labels, record.images, record.metadata) == (None, None, [], [], {})


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"path": "a.safetensors"}, "model entry 0.*\"id\""),
        ({"id": "a", "path": "a.safetensors", "labels": "cat"}, "model 'a'.*labels"),
        ({"id": "a", "path": "a.safetensors", "colour": "red"}, "unknown keys.*colour"),
    ],
)
def test_malformed_manifest_entry_raises_naming_the_entry(tmp_path, entry, message):
    (tmp_path / "probex_zoo.json").write_text(json.dumps({"format": "probex-zoo", "version": 1, "models": [entry]}))
    with pytest.raises(ZooError, match=message):
        ModelZoo.open(tmp_path)


def _zoo_with_roles(folder, trees: dict) -> None:
    save_file({"w": torch.ones(2, 2)}, str(folder / "a.safetensors"))
    (folder / "probex_zoo.json").write_text(json.dumps({"format": "probex-zoo", "version": 1, "trees": trees,
                                                        "models": [{"id": "a", "path": "a.safetensors", "tree": "t"}]}))


def test_a_tree_role_may_name_the_probe_views_its_experts_read(tmp_path):
    from probex.zoo.records import TreeRole

    _zoo_with_roles(tmp_path, {"t": {"role": "classifier", "views": "xu+xtxu"}})
    role = ModelZoo.open(tmp_path).role("t")
    assert role.views == "xu+xtxu" and role.to_json() == {"role": "classifier", "views": "xu+xtxu"}
    assert TreeRole("classifier").to_json() == {"role": "classifier"}  # no views: ProbeX's own, not written


@pytest.mark.parametrize("views", ["../x", "", 3, ["xu"]])
def test_a_tree_role_with_views_that_are_not_view_names_is_refused(tmp_path, views):
    _zoo_with_roles(tmp_path, {"t": {"role": "classifier", "views": views}})
    with pytest.raises(ZooError, match="tree 't'.*views"):
        ModelZoo.open(tmp_path)


def test_newer_manifest_version_asks_to_upgrade(tmp_path):
    (tmp_path / "probex_zoo.json").write_text(json.dumps({"format": "probex-zoo", "version": 99, "models": []}))
    with pytest.raises(ZooError, match="upgrade probex"):
        ModelZoo.open(tmp_path)


def test_manifest_writer_output_reopens_to_the_same_records(tmp_path):
    images = tmp_path / "m1" / "training_images"
    images.mkdir(parents=True)
    (images / "0.png").write_bytes(b"png")
    path = save_model_file(
        tmp_path / "m1" / "model.safetensors", {"fc.weight": torch.ones(3, 2)}, id="m1", split="train", tree="t", labels=["cat"], metadata={"lr": 0.1}
    )
    record = ModelRecord(id="m1", path=path, split="train", tree="t", labels=["cat"], metadata={"lr": "0.1"}, images=[images / "0.png"])
    write_manifest(tmp_path, [record], name="written")
    (reopened,) = ModelZoo.open(tmp_path).records
    assert (reopened.id, reopened.path, reopened.split, reopened.tree, reopened.labels, reopened.images) == (
        "m1", path, "train", "t", ["cat"], [images / "0.png"]
    )
    assert reopened.header.metadata["labels"] == '["cat"]' and reopened.metadata["lr"] == "0.1"


def test_images_shared_by_several_models_are_written_and_read_as_lists_of_files(tmp_path):
    shared = tmp_path / "class_images"
    shared.mkdir()
    for name in ("cat-0.png", "cat-1.png", "dog-0.png"):
        (shared / name).write_bytes(b"png")
    records = []
    for model_id, images in (("m1", ["cat-0.png", "cat-1.png"]), ("m2", ["dog-0.png", "cat-0.png"])):
        path = save_model_file(tmp_path / f"{model_id}.safetensors", {"fc.weight": torch.ones(3, 2)}, id=model_id)
        records.append(ModelRecord(id=model_id, path=path, images=[shared / name for name in images]))
    write_manifest(tmp_path, records, name="shared")
    entries = json.loads((tmp_path / "probex_zoo.json").read_text())["models"]
    assert entries[1]["images"] == ["class_images/dog-0.png", "class_images/cat-0.png"]
    reopened = ModelZoo.open(tmp_path).records
    assert [record.images for record in reopened] == [record.images for record in records]


def test_images_shared_per_label_are_each_models_classes_images_in_label_order(tmp_path):
    from probex.zoo.manifest import class_images_folder

    for label, count in (("red star", 2), ("dog", 1), ("../cat", 1)):  # a label never becomes a path unsanitised
        folder = class_images_folder(tmp_path / "shared", label)
        folder.mkdir(parents=True)
        for number in range(count):
            (folder / f"{number}.png").write_bytes(b"png")
    entries = []
    for model_id, labels in (("m1", ["dog", "red star"]), ("m2", ["../cat", "unknown"])):
        save_file({"w": torch.ones(2, 2)}, str(tmp_path / f"{model_id}.safetensors"))
        entries.append({"id": model_id, "path": f"{model_id}.safetensors", "labels": labels,
                        "images": {"per_label": "shared"}})
    (tmp_path / "probex_zoo.json").write_text(json.dumps({"format": "probex-zoo", "version": 1, "models": entries}))
    first, second = ModelZoo.open(tmp_path).records
    assert [image.relative_to(tmp_path / "shared").as_posix() for image in first.images] == \
        ["dog/0.png", f"{safe_name('red star')}/0.png", f"{safe_name('red star')}/1.png"]
    assert len(second.images) == 1 and second.images[0].resolve().is_relative_to((tmp_path / "shared").resolve())


@pytest.mark.parametrize("images", [["x.png", 3], {"per_label": ""}, {"per_label": "x", "more": "y"}, 7])
def test_a_manifest_images_entry_that_is_neither_folder_nor_file_list_is_an_error(tmp_path, images):
    save_file({"w": torch.ones(2, 2)}, str(tmp_path / "a.safetensors"))
    entry = {"id": "a", "path": "a.safetensors", "images": images}
    (tmp_path / "probex_zoo.json").write_text(json.dumps({"format": "probex-zoo", "version": 1, "models": [entry]}))
    with pytest.raises(ZooError, match="images.*list of image files"):
        ModelZoo.open(tmp_path)


# -- detection and robustness ----------------------------------------------------------------


def test_folder_with_no_zoo_raises_saying_what_was_looked_for(tmp_path):
    (tmp_path / "readme.txt").write_text("nothing here")
    with pytest.raises(ZooError, match="probex_zoo.json.*pytorch_lora_weights.safetensors.*models--"):
        ModelZoo.open(tmp_path)


def test_missing_folder_raises_zoo_error(tmp_path):
    with pytest.raises(ZooError, match="no such folder"):
        ModelZoo.open(tmp_path / "absent")


def test_three_corrupt_files_among_200_are_skipped_and_named(tmp_path):
    written = write_generative_zoo(tmp_path, splits={"train": 150, "val": 50}, images_per_model=0)
    broken = {written[3].path: truncate_file, written[70].path: write_garbage_header, written[170].path: write_wrong_sizes}
    for path, corrupt in broken.items():
        corrupt(path)
    zoo = ModelZoo.open(tmp_path)
    assert len(zoo) == 197
    assert {path for path, _ in zoo.skipped} == set(broken)
    assert all(reason for _, reason in zoo.skipped)
    assert not set(zoo.ids) & {written[i].id for i in (3, 70, 170)}
    bank = zoo.bank("unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q", cache=False)
    assert len(bank) == 197
