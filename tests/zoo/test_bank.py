"""LayerBank: stacking one layer of many models, and its on-disk cache."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from zoo_fixtures import write_discriminative_zoo, write_generative_zoo, write_manifest_zoo

from probex.errors import ZooError
from probex.zoo import LayerBank, ModelZoo, bank_build
from probex.zoo.bank import default_cache_dir

LAYER = "block.fc.weight"
LORA_LAYER = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k"


def _expected(written, layer=LAYER):
    return torch.stack([model.tensors[layer] for model in written])


def _cache_files(cache_dir, suffix):
    return sorted(path for path in cache_dir.glob(f"*{suffix}") if not path.name.startswith("."))


# -- what a bank holds -----------------------------------------------------------------------


def test_bank_stacks_conv_layers_flattened_with_ids_and_labels_aligned(tmp_path):
    written = write_discriminative_zoo(tmp_path / "zoo", splits={"train": 3, "test": 2})
    bank = ModelZoo.open(tmp_path / "zoo").bank("vit.embeddings.patch_embeddings.projection.weight", cache=tmp_path / "cache")
    assert bank.X.shape == (5, 8, 12) and bank.shape == (8, 12) and len(bank) == 5
    by_id = {model.id: model for model in written}
    for row, model_id in enumerate(bank.ids):
        kernel = by_id[model_id].tensors["vit.embeddings.patch_embeddings.projection.weight"]
        torch.testing.assert_close(bank.X[row], kernel.reshape(8, 12))
        assert bank.labels[row] == by_id[model_id].labels and bank.splits[row] == by_id[model_id].split
    assert bank.trees == ["MAE"] * 5 and bank.layer == "vit.embeddings.patch_embeddings.projection.weight"


def test_lora_bank_holds_each_pair_merged(tmp_path):
    written = write_generative_zoo(tmp_path, splits={"train": 3}, style="processor", images_per_model=0)
    bank = ModelZoo.open(tmp_path).bank(LORA_LAYER, cache=False)
    processor = LORA_LAYER.replace(".to_k", ".processor.to_k_lora")
    down, up = f"{processor}.down.weight", f"{processor}.up.weight"
    expected = torch.stack([model.tensors[up] @ model.tensors[down] for model in written])
    assert bank.shape == (8, 6) and bank.info.kind == "lora"
    torch.testing.assert_close(bank.X, expected)


def test_label_matrix_marks_each_models_classes(tmp_path):
    written = write_manifest_zoo(tmp_path, n_models=5, images_per_model=0)
    bank = ModelZoo.open(tmp_path).bank(LAYER, cache=False)
    Y, classes = bank.label_matrix()
    assert classes == bank.label_names and Y.shape == (5, len(classes)) and Y.dtype == torch.float32
    for row, model in enumerate(written):
        assert {classes[c] for c in torch.nonzero(Y[row]).flatten().tolist()} == set(model.labels)
    Y2, classes2 = bank.label_matrix(["green star", "no such class"])
    assert classes2 == ["green star", "no such class"] and Y2[:, 1].sum() == 0
    assert Y2[:, 0].tolist() == [float("green star" in model.labels) for model in written]


def test_bank_indexing_by_mask_positions_and_slice(tmp_path):
    write_manifest_zoo(tmp_path, n_models=6, images_per_model=0)
    bank = ModelZoo.open(tmp_path).bank(LAYER, cache=False)
    mask = torch.tensor([True, False, True, False, False, True])
    assert bank[mask].ids == [bank.ids[i] for i in (0, 2, 5)]
    torch.testing.assert_close(bank[mask].X, bank.X[mask])
    assert bank[[4, 1]].ids == [bank.ids[4], bank.ids[1]]
    torch.testing.assert_close(bank[[4, 1]].X, bank.X[[4, 1]])
    assert bank[1:4].ids == bank.ids[1:4] and isinstance(bank[1:4], LayerBank)
    assert len(bank[[]]) == 0
    with pytest.raises(TypeError, match=r"bank\[\[i\]\]"):
        bank[0]


def test_bank_select_by_split_tree_and_ids(tmp_path):
    written = write_manifest_zoo(tmp_path, n_models=8, images_per_model=0)
    bank = ModelZoo.open(tmp_path).bank(LAYER, cache=False)
    assert bank.select(split="val").ids == [m.id for m in written if m.split == "val"]
    assert bank.select(tree=["vit-b"], split="train").ids == [m.id for m in written if m.tree == "vit-b" and m.split == "train"]
    assert bank.select(ids=[written[3].id, written[0].id]).ids == [written[3].id, written[0].id]
    with pytest.raises(ZooError, match="no model"):
        bank.select(ids=["absent"])


# -- the cache ------------------------------------------------------------------------------


def test_bank_of_1000_models_is_reused_from_cache_without_reading_model_files(tmp_path, monkeypatch):
    written = write_manifest_zoo(tmp_path / "zoo", n_models=1000, images_per_model=0, width=3)
    zoo = ModelZoo.open(tmp_path / "zoo")
    reads = []
    first = zoo.bank(LAYER, cache=tmp_path / "cache", progress=lambda done, total, message: reads.append(message))
    assert len(first) == 1000 and len(reads) == 1000
    torch.testing.assert_close(first.X, _expected(written))

    def no_reads(*args, **kwargs):
        raise AssertionError("a model file was read although the bank is cached")

    monkeypatch.setattr(bank_build, "read_tensors", no_reads)
    messages = []
    again = ModelZoo.open(tmp_path / "zoo").bank(LAYER, cache=tmp_path / "cache",
                                                 progress=lambda done, total, message: messages.append(message))
    assert messages == ["loaded from cache"]
    assert again.ids == first.ids
    torch.testing.assert_close(again.X, _expected(written))
    assert len(_cache_files(tmp_path / "cache", ".npy")) == 1 and len(_cache_files(tmp_path / "cache", ".json")) == 1


def _file_mapped_at(address):
    """The file the process has memory-mapped at ``address`` (from /proc/self/maps), or None."""
    for line in open("/proc/self/maps"):
        fields = line.split()
        low, high = (int(part, 16) for part in fields[0].split("-"))
        if low <= address < high:
            return fields[5] if len(fields) > 5 else None
    return None


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="reads the process memory map, a Linux file")
def test_reused_bank_is_memory_mapped_from_the_cache_file(tmp_path):
    write_manifest_zoo(tmp_path / "zoo", n_models=3, images_per_model=0)
    zoo = ModelZoo.open(tmp_path / "zoo")
    zoo.bank(LAYER, cache=tmp_path / "cache")
    reused = zoo.bank(LAYER, cache=tmp_path / "cache")
    (array,) = _cache_files(tmp_path / "cache", ".npy")
    assert _file_mapped_at(reused.X.data_ptr()) == str(array)


def test_changed_model_file_builds_a_new_bank(tmp_path):
    written = write_manifest_zoo(tmp_path / "zoo", n_models=3, images_per_model=0)
    zoo = ModelZoo.open(tmp_path / "zoo")
    zoo.bank(LAYER, cache=tmp_path / "cache")
    replaced = {name: tensor * 0 + 7 for name, tensor in written[1].tensors.items()}
    save_file(replaced, str(written[1].path))
    os.utime(written[1].path, ns=(0, os.stat(written[1].path).st_mtime_ns + 10**9))
    rebuilt = ModelZoo.open(tmp_path / "zoo").bank(LAYER, cache=tmp_path / "cache")
    assert torch.all(rebuilt.X[1] == 7)
    torch.testing.assert_close(rebuilt.X[0], written[0].tensors[LAYER])


def test_float16_bank_is_stored_in_half_the_bytes(tmp_path):
    written = write_manifest_zoo(tmp_path / "zoo", n_models=4, images_per_model=0, width=16)
    zoo = ModelZoo.open(tmp_path / "zoo")
    full = zoo.bank(LAYER, cache=tmp_path / "cache")
    half = zoo.bank(LAYER, dtype=torch.float16, cache=tmp_path / "cache")
    assert half.X.dtype == torch.float16 and full.X.dtype == torch.float32
    torch.testing.assert_close(half.X, _expected(written).half())
    sizes = sorted(path.stat().st_size for path in _cache_files(tmp_path / "cache", ".npy"))
    assert sizes[0] - 128 < (sizes[1] - 128) / 2 + 1  # .npy headers are 128 bytes here


def test_writing_into_a_cached_bank_leaves_the_cache_unchanged(tmp_path):
    written = write_manifest_zoo(tmp_path / "zoo", n_models=3, images_per_model=0)
    zoo = ModelZoo.open(tmp_path / "zoo")
    zoo.bank(LAYER, cache=tmp_path / "cache")
    reused = zoo.bank(LAYER, cache=tmp_path / "cache")
    reused.X.mul_(0)  # experts may normalise in place: the memory map is copy-on-write
    torch.testing.assert_close(zoo.bank(LAYER, cache=tmp_path / "cache").X, _expected(written))


def test_cache_false_writes_no_file(tmp_path, monkeypatch):
    monkeypatch.setenv("PROBEX_CACHE", str(tmp_path / "cache"))
    write_manifest_zoo(tmp_path / "zoo", n_models=2, images_per_model=0)
    ModelZoo.open(tmp_path / "zoo").bank(LAYER, cache=False)
    assert not (tmp_path / "cache").exists()


def test_default_cache_folder_follows_probex_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PROBEX_CACHE", str(tmp_path / "pc"))
    assert default_cache_dir() == tmp_path / "pc" / "banks"
    write_manifest_zoo(tmp_path / "zoo", n_models=2, images_per_model=0)
    ModelZoo.open(tmp_path / "zoo").bank(LAYER)
    assert len(_cache_files(tmp_path / "pc" / "banks", ".npy")) == 1


def test_truncated_cache_array_is_not_trusted(tmp_path):
    written = write_manifest_zoo(tmp_path / "zoo", n_models=3, images_per_model=0)
    zoo = ModelZoo.open(tmp_path / "zoo")
    zoo.bank(LAYER, cache=tmp_path / "cache")
    (array,) = _cache_files(tmp_path / "cache", ".npy")
    array.write_bytes(array.read_bytes()[:-20])
    reads = []
    rebuilt = zoo.bank(LAYER, cache=tmp_path / "cache", progress=lambda done, total, message: reads.append(message))
    assert len(reads) == 3 and "loaded from cache" not in reads
    torch.testing.assert_close(rebuilt.X, _expected(written))


_KILLED_BUILD = textwrap.dedent(
    """
    import os, signal, sys
    from probex.zoo import ModelZoo
    import probex.zoo.bank_cache as bank_cache

    zoo_dir, cache_dir, when = sys.argv[1:4]

    def kill_midway(done, total, message):
        if done == total // 2:
            os.kill(os.getpid(), signal.SIGKILL)

    if when == "before-index":  # the array is complete and renamed; die as the index is written
        real_temporary_path = bank_cache.temporary_path
        def temporary_path(target):
            if str(target).endswith(".json"):
                os.kill(os.getpid(), signal.SIGKILL)
            return real_temporary_path(target)
        bank_cache.temporary_path = temporary_path
    zoo = ModelZoo.open(zoo_dir)
    zoo.bank("block.fc.weight", cache=cache_dir, progress=kill_midway if when == "midway" else None)
    """
)


@pytest.mark.parametrize("when", ["midway", "before-index"])
def test_kill_during_cache_write_leaves_no_cache_a_later_call_trusts(tmp_path, when):
    written = write_manifest_zoo(tmp_path / "zoo", n_models=40, images_per_model=0)
    cache_dir = tmp_path / "cache"
    result = subprocess.run([sys.executable, "-c", _KILLED_BUILD, str(tmp_path / "zoo"), str(cache_dir), when], capture_output=True, timeout=120)
    assert result.returncode == -signal.SIGKILL, result.stderr.decode()
    assert _cache_files(cache_dir, ".json") == []
    if when == "before-index":
        assert len(_cache_files(cache_dir, ".npy")) == 1  # an array with no index: present, not trusted
    else:
        assert list(cache_dir.glob(".*.tmp"))  # the killed build's temporary array
    reads = []
    bank = ModelZoo.open(tmp_path / "zoo").bank(LAYER, cache=cache_dir, progress=lambda done, total, message: reads.append(message))
    assert len(reads) == 40 and "loaded from cache" not in reads
    torch.testing.assert_close(bank.X, _expected(written))
    assert len(_cache_files(cache_dir, ".json")) == 1
    assert list(cache_dir.glob(".*.tmp")) == []  # the next build removed what the killed one left


# -- values that cannot be banked -------------------------------------------------------------


def test_model_with_nan_in_the_layer_is_left_out_and_listed(tmp_path):
    written = write_manifest_zoo(tmp_path / "zoo", n_models=4, images_per_model=0)
    poisoned = dict(written[2].tensors)
    poisoned[LAYER] = poisoned[LAYER].clone()
    poisoned[LAYER][0, 1] = float("nan")
    poisoned[LAYER][1, 1] = float("inf")
    save_file(poisoned, str(written[2].path))
    zoo = ModelZoo.open(tmp_path / "zoo")
    for cache in (False, tmp_path / "cache", tmp_path / "cache"):  # in memory, built, then from the cache
        bank = zoo.bank(LAYER, cache=cache)
        assert bank.ids == [written[i].id for i in (0, 1, 3)]
        assert bank.skipped == [(written[2].id, f"layer '{LAYER}' has 2 NaN/Inf values")]
        torch.testing.assert_close(bank.X, _expected([written[i] for i in (0, 1, 3)]))
    assert zoo.bank("block.fc.bias", cache=False).skipped == []


def test_every_model_non_finite_raises(tmp_path):
    save_file({"w": torch.full((2, 2), float("nan"))}, str(tmp_path / "a.safetensors"))
    (tmp_path / "probex_zoo.json").write_text(json.dumps({"format": "probex-zoo", "version": 1, "models": [{"id": "a", "path": "a.safetensors"}]}))
    with pytest.raises(ZooError, match="NaN/Inf"):
        ModelZoo.open(tmp_path).bank("w", cache=tmp_path / "cache")
    assert _cache_files(tmp_path / "cache", ".npy") == []


def test_values_beyond_float16_range_raise_asking_for_float32(tmp_path):
    save_file({"w": torch.full((2, 2), 1e6)}, str(tmp_path / "a.safetensors"))
    (tmp_path / "probex_zoo.json").write_text(json.dumps({"format": "probex-zoo", "version": 1, "models": [{"id": "a", "path": "a.safetensors"}]}))
    with pytest.raises(ZooError, match="float32"):
        ModelZoo.open(tmp_path).bank("w", dtype=torch.float16, cache=False)


def test_unsupported_dtype_raises(tmp_path):
    write_manifest_zoo(tmp_path, n_models=1, images_per_model=0)
    with pytest.raises(ZooError, match="float16"):
        ModelZoo.open(tmp_path).bank(LAYER, dtype=torch.bfloat16, cache=False)


def test_npy_cache_is_a_plain_numpy_file(tmp_path):
    written = write_manifest_zoo(tmp_path / "zoo", n_models=2, images_per_model=0)
    ModelZoo.open(tmp_path / "zoo").bank(LAYER, cache=tmp_path / "cache")
    (array,) = _cache_files(tmp_path / "cache", ".npy")
    (index,) = _cache_files(tmp_path / "cache", ".json")
    np.testing.assert_allclose(np.load(array), _expected(written).numpy())
    assert json.loads(index.read_text())["ids"] == [model.id for model in written]
