"""LoRA banks keep their factors (padded to one rank), banks keep the files' dtype, and splits are views of one cached bank."""

import json

import numpy as np
import pytest
import torch
from lora_zoo import merged_update, write_lora_zoo

from probex.zoo import ModelZoo
from probex.zoo.factored import LoraFactors, inner_products
from probex.zoo.manifest import save_model_file, write_manifest
from probex.zoo.records import ModelRecord

LAYER = "unet.down.attn.to_q"


@pytest.fixture(scope="module")
def lora_zoo(tmp_path_factory):
    root = tmp_path_factory.mktemp("lora")
    return root, write_lora_zoo(root, n_models=24, ranks=(2, 4, 3))


def test_a_lora_bank_holds_factors_padded_with_zeros_to_the_largest_rank(lora_zoo, tmp_path):
    root, written = lora_zoo
    bank = ModelZoo.open(root).bank(LAYER, cache=tmp_path / "cache")
    assert bank.is_factored and bank.rank == 4 and bank.shape == (48, 96)
    factors = bank.factors
    assert factors.B.shape == (24, 48, 4) and factors.A.shape == (24, 4, 96) and factors.scale.shape == (24,)
    for row, record in enumerate(written):
        rank = int(record.metadata["rank"])
        assert torch.all(factors.B[row, :, rank:] == 0) and torch.all(factors.A[row, rank:] == 0)
        assert factors.scale[row] == pytest.approx(float(record.metadata["lora_alpha"]) / rank)


def test_merging_a_factored_bank_gives_each_files_scaled_update(lora_zoo):
    root, written = lora_zoo
    bank = ModelZoo.open(root).bank(LAYER, cache=False)
    X = bank.X
    assert X.dtype == torch.float32 and X.shape == (24, 48, 96)
    for row, record in enumerate(written):
        expected = merged_update(record.path, LAYER, float(record.metadata["lora_alpha"]))
        torch.testing.assert_close(X[row].double(), expected, rtol=1e-5, atol=1e-6)


def test_inner_products_of_factors_equal_those_of_the_merged_updates(lora_zoo):
    root, _ = lora_zoo
    factors = ModelZoo.open(root).bank(LAYER, cache=False).factors
    merged = factors.B.double() @ factors.A.double() * factors.scale.double()[:, None, None]
    flat = merged.reshape(len(factors), -1)
    torch.testing.assert_close(inner_products(factors), flat @ flat.T, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(factors.squared_norms(), (flat ** 2).sum(1), rtol=1e-10, atol=1e-10)


def test_a_factored_bank_from_the_cache_equals_the_one_built(lora_zoo, tmp_path):
    root, _ = lora_zoo
    built = ModelZoo.open(root).bank(LAYER, cache=tmp_path / "cache")
    loaded = ModelZoo.open(root).bank(LAYER, cache=tmp_path / "cache")
    assert loaded.ids == built.ids and loaded.is_factored
    for name in ("B", "A", "scale"):
        torch.testing.assert_close(getattr(loaded.factors, name), getattr(built.factors, name), rtol=0, atol=0)


def test_float16_lora_files_stay_float16_in_memory_and_on_disk(tmp_path):
    written = write_lora_zoo(tmp_path / "zoo", n_models=6, dtype=torch.float16)
    bank = ModelZoo.open(tmp_path / "zoo").bank(LAYER, cache=tmp_path / "cache")
    assert bank.dtype == torch.float16 and bank.factors.B.dtype == torch.float16
    assert {np.load(path).dtype for path in (tmp_path / "cache").glob("*.[AB].npy")} == {np.dtype(np.float16)}
    for row, record in enumerate(written):
        expected = merged_update(record.path, LAYER, float(record.metadata["lora_alpha"]))
        torch.testing.assert_close(bank.X[row].double(), expected, rtol=1e-5, atol=1e-5)


def test_float16_dense_files_stay_float16_unless_float32_is_asked_for(tmp_path):
    records = []
    for index in range(3):
        path = tmp_path / f"m{index}.safetensors"
        save_model_file(path, {"w": torch.randn(5, 7).half()}, id=f"m{index}")
        records.append(ModelRecord(id=f"m{index}", path=path))
    write_manifest(tmp_path, records, name="half")
    zoo = ModelZoo.open(tmp_path)
    assert zoo.bank("w", cache=False).dtype == torch.float16
    assert zoo.bank("w", dtype=torch.float32, cache=False).dtype == torch.float32


def test_splits_trees_and_selections_are_views_of_one_cached_bank(lora_zoo, tmp_path):
    root, written = lora_zoo
    zoo = ModelZoo.open(root)
    cache = tmp_path / "cache"
    train = zoo.bank(LAYER, split="train", cache=cache)
    test = zoo.bank(LAYER, split="test", cache=cache)
    tree = zoo.select(tree="sd-b").bank(LAYER, cache=cache)
    chosen = zoo.select(ids=[written[5].id, written[2].id]).bank(LAYER, cache=cache)
    assert len(list(cache.glob("*.json"))) == 1 and len(list(cache.glob("*.B.npy"))) == 1
    assert train.ids == [r.id for r in written if r.split == "train"] and test.ids == [r.id for r in written if r.split == "test"]
    assert tree.ids == [r.id for r in written if r.tree == "sd-b"] and chosen.ids == [written[5].id, written[2].id]
    assert {len(bank.stack.storage) for bank in (train, test, tree, chosen)} == {len(written)}  # views, not copies
    whole = zoo.bank(LAYER, cache=cache)
    assert whole[[1, 3]].stack.storage is whole.stack.storage
    torch.testing.assert_close(chosen.X, whole.X[[5, 2]])
    assert json.loads(next(cache.glob("*.json")).read_text())["ids"] == [r.id for r in written]


def test_a_factored_bank_is_forty_times_smaller_than_merged_at_1280_by_1280_rank_16():
    factors = LoraFactors(torch.zeros(1, 1280, 16), torch.zeros(1, 16, 1280))
    assert 1280 * 1280 * 4 / factors.nbytes > 39


def test_a_lora_that_merges_beyond_float32_is_skipped_and_one_whose_factors_only_look_large_is_kept(tmp_path):
    up_big, down_big = torch.zeros(8, 2), torch.zeros(2, 6)
    up_big[:, 0], down_big[0] = 1e20, 1e20  # merges to 1e40: beyond float32
    up_fine, down_fine = torch.zeros(8, 2), torch.zeros(2, 6)
    up_fine[:, 0], down_fine[1] = 1e20, 1e20  # each factor is large, but their product is exactly 0
    records = []
    for name, (up, down) in {"big": (up_big, down_big), "fine": (up_fine, down_fine),
                             "plain": (torch.ones(8, 2), torch.ones(2, 6))}.items():
        path = tmp_path / "models" / f"{name}.safetensors"
        tensors = {"unet.x.lora.up.weight": up, "unet.x.lora.down.weight": down}
        save_model_file(path, tensors, id=name, split="train", tree="t", labels=[], metadata={})
        records.append(ModelRecord(id=name, path=path, split="train", tree="t", labels=[], metadata={}))
    write_manifest(tmp_path, records, name="range")
    bank = ModelZoo.open(tmp_path).bank("unet.x", cache=False)
    assert [record.id for record in bank.records] == ["fine", "plain"]
    assert [(model_id, "float32 range" in reason) for model_id, reason in bank.skipped] == [("big", True)]
    assert torch.all(bank.X[0] == 0)
