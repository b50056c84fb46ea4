"""The bank cache is trusted only when it provably matches the files: every tampering rebuilds it.

Each case edits the cache or a model file the way a careless user, a shared machine or a
crashed process would, then asks for the bank again: the bank returned must equal one built
from the files (``cache=False``), never the tampered values.
"""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from zoo_fixtures import write_manifest_zoo

from probex.zoo import ModelZoo
from probex.zoo.safefile import read_header

LAYER = "block.fc.weight"


def _entry(cache_dir, suffix):
    (path,) = [path for path in cache_dir.glob(f"*{suffix}") if not path.name.startswith(".")]
    return path


def _from_files(zoo_dir, layer=LAYER):
    return ModelZoo.open(zoo_dir).bank(layer, cache=False)


def _assert_same_bank(bank, expected):
    assert bank.ids == expected.ids
    torch.testing.assert_close(bank.X.float(), expected.X.float(), rtol=0, atol=0)


@pytest.fixture
def cached(tmp_path):
    """A zoo whose bank of LAYER is cached; (zoo folder, cache folder)."""
    write_manifest_zoo(tmp_path / "zoo", n_models=6, images_per_model=0, width=8)
    ModelZoo.open(tmp_path / "zoo").bank(LAYER, cache=tmp_path / "cache")
    return tmp_path / "zoo", tmp_path / "cache"


def test_an_array_edited_in_place_with_its_size_and_mtime_kept_is_rebuilt(cached):
    zoo_dir, cache_dir = cached
    array_path = _entry(cache_dir, ".npy")
    stat = os.stat(array_path)
    array = np.load(array_path, mmap_mode="r+")
    array[2, 0, 0] += 1.0
    array.flush()
    del array
    os.utime(array_path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    _assert_same_bank(ModelZoo.open(zoo_dir).bank(LAYER, cache=cache_dir), _from_files(zoo_dir))


def test_an_array_swapped_for_another_banks_array_of_the_same_shape_is_rebuilt(tmp_path):
    write_manifest_zoo(tmp_path / "a", n_models=6, images_per_model=0, width=8, seed=1)
    write_manifest_zoo(tmp_path / "b", n_models=6, images_per_model=0, width=8, seed=2)
    ModelZoo.open(tmp_path / "a").bank(LAYER, cache=tmp_path / "ca")
    ModelZoo.open(tmp_path / "b").bank(LAYER, cache=tmp_path / "cb")
    mine, other = _entry(tmp_path / "ca", ".npy"), _entry(tmp_path / "cb", ".npy")
    assert mine.stat().st_size == other.stat().st_size
    mine.write_bytes(other.read_bytes())
    _assert_same_bank(ModelZoo.open(tmp_path / "a").bank(LAYER, cache=tmp_path / "ca"), _from_files(tmp_path / "a"))


@pytest.mark.parametrize("checksum", ["left as it was", "removed"])
def test_an_index_whose_ids_are_permuted_is_rebuilt(cached, checksum):
    zoo_dir, cache_dir = cached
    index_path = _entry(cache_dir, ".json")
    index = json.loads(index_path.read_text())
    index["ids"] = index["ids"][1:] + index["ids"][:1]
    if checksum == "removed":
        index.pop("checksum", None)
    index_path.write_text(json.dumps(index))
    _assert_same_bank(ModelZoo.open(zoo_dir).bank(LAYER, cache=cache_dir), _from_files(zoo_dir))


def test_an_unknown_id_in_the_index_is_a_rebuild_not_a_key_error(cached):
    zoo_dir, cache_dir = cached
    index_path = _entry(cache_dir, ".json")
    index = json.loads(index_path.read_text())
    index["ids"][3] = "nobody/model_9999"
    index_path.write_text(json.dumps(index))
    _assert_same_bank(ModelZoo.open(zoo_dir).bank(LAYER, cache=cache_dir), _from_files(zoo_dir))


def _rewrite_with_new_values(path, metadata_padding=""):
    """Save the model again with other values (and, with padding, a longer header: offsets shift)."""
    tensors = {name: tensor * 0 + 7 for name, tensor in load_file(str(path)).items()}
    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        metadata = dict(handle.metadata() or {})
    metadata["note"] = metadata_padding
    save_file(tensors, str(path), metadata=metadata)


@pytest.mark.parametrize("cache", ["cached", "in memory"])
def test_a_model_file_rewritten_after_the_zoo_was_opened_is_read_with_its_new_header(tmp_path, cache):
    written = write_manifest_zoo(tmp_path / "zoo", n_models=4, images_per_model=0, width=8)
    zoo = ModelZoo.open(tmp_path / "zoo")  # headers read now
    _rewrite_with_new_values(written[1].path, metadata_padding="x" * 300)
    bank = zoo.bank(LAYER, cache=tmp_path / "cache" if cache == "cached" else False)
    assert torch.all(bank.X[1] == 7)
    torch.testing.assert_close(bank.X[0], written[0].tensors[LAYER])
    _assert_same_bank(ModelZoo.open(tmp_path / "zoo").bank(LAYER, cache=tmp_path / "cache"), _from_files(tmp_path / "zoo"))


def test_a_model_edited_in_place_with_its_size_and_mtime_restored_rebuilds_the_bank(cached):
    zoo_dir, cache_dir = cached
    path = sorted(zoo_dir.glob("models/*/model.safetensors"))[2]
    stat = os.stat(path)
    header = read_header(path)
    info = header.tensors[LAYER]
    with open(path, "r+b") as handle:  # the same file, the same bytes count: only the layer's values change
        handle.seek(header.data_offset + info.start)
        handle.write(torch.full(tuple(info.shape), 7.0).numpy().tobytes())
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (stat.st_size, stat.st_mtime_ns, stat.st_ino)
    bank = ModelZoo.open(zoo_dir).bank(LAYER, cache=cache_dir)
    _assert_same_bank(bank, _from_files(zoo_dir))
    assert any(torch.all(row == 7) for row in bank.X)


def test_a_tampered_lora_factor_array_is_rebuilt(tmp_path):
    from lora_zoo import write_lora_zoo

    write_lora_zoo(tmp_path / "zoo", n_models=8)
    layer = "unet.down.attn.to_q"
    ModelZoo.open(tmp_path / "zoo").bank(layer, cache=tmp_path / "cache")
    (down,) = [path for path in (tmp_path / "cache").glob("*.A.npy")]
    array = np.load(down, mmap_mode="r+")
    array[0, 0, 0] = 123.0
    array.flush()
    del array
    _assert_same_bank(ModelZoo.open(tmp_path / "zoo").bank(layer, cache=tmp_path / "cache"), _from_files(tmp_path / "zoo", layer))


_KILLED_MIDWAY = """
import os, signal, sys
from probex.zoo import ModelZoo

def kill_midway(done, total, message):
    if done == total // 2:
        os.kill(os.getpid(), signal.SIGKILL)

ModelZoo.open(sys.argv[1]).bank("block.fc.weight", cache=sys.argv[2], progress=kill_midway)
"""


def test_temporaries_left_by_a_killed_build_are_removed_by_the_next_build(tmp_path):
    write_manifest_zoo(tmp_path / "zoo", n_models=20, images_per_model=0, width=8)
    result = subprocess.run([sys.executable, "-c", _KILLED_MIDWAY, str(tmp_path / "zoo"), str(tmp_path / "cache")],
                            capture_output=True, timeout=120)
    assert result.returncode == -signal.SIGKILL, result.stderr.decode()
    assert [path for path in (tmp_path / "cache").iterdir() if path.name.startswith(".")]  # what the kill left
    bank = ModelZoo.open(tmp_path / "zoo").bank(LAYER, cache=tmp_path / "cache")
    _assert_same_bank(bank, _from_files(tmp_path / "zoo"))
    assert [path for path in (tmp_path / "cache").iterdir() if path.name.startswith(".")] == []
