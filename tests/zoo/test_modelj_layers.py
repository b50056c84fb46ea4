"""Model-J checkpoints read as the paper's official code reads them: ResNet conv matrices and layer numbers."""

from __future__ import annotations

import pytest
import torch
from modelj_architectures import resnet101_tensors, sd_unet_lora_tensors, vit_b16_tensors, write_modelj_repo, write_sd_model

from probex.errors import ZooError
from probex.zoo import ModelZoo
from probex.zoo.catalog import layer_catalog
from probex.zoo.modelj_layers import modelj_family, paper_layer_names
from probex.zoo.safefile import read_header

STEM = "resnet.embedder.embedder.convolution.weight"
CONV_3X3 = "resnet.encoder.stages.2.layers.5.layer.1.convolution.weight"
CONV_1X1 = "resnet.encoder.stages.2.layers.19.layer.0.convolution.weight"  # the paper's ResNet layer 59


def official_matrix(weight: torch.Tensor) -> torch.Tensor:
    """The official ProbeX loader's matrix of a Model-J ResNet weight (is_resnet=True), as its probex_datasets.py computes it."""
    if len(weight.squeeze().shape) == 4:
        return weight.squeeze().reshape(-1, weight.squeeze().shape[0]).squeeze()
    if weight.dim() > 2:
        return weight.squeeze()
    if weight.dim() == 1:
        return weight.unsqueeze(1)
    return weight


@pytest.fixture
def resnet_zoo(tmp_path):
    generator = torch.Generator().manual_seed(0)
    written = {}
    for index, split in enumerate(["train", "train", "val"]):
        tensors = resnet101_tensors(generator)
        write_modelj_repo(tmp_path, split, "ResNet", index, tensors)
        written[f"model_idx_{index:04d}"] = tensors
    return ModelZoo.open(tmp_path), written


@pytest.mark.parametrize("layer", [STEM, CONV_3X3, CONV_1X1])
def test_modelj_resnet_banks_hold_the_official_loaders_matrices(resnet_zoo, layer):
    zoo, written = resnet_zoo

    bank = zoo.bank(layer, cache=False)

    for model_id, matrix in zip(bank.ids, bank.X):
        assert torch.equal(matrix, official_matrix(written[model_id][layer]))


def test_the_stem_and_3x3_convs_are_in_k_k_by_out_and_1x1_convs_out_by_in(resnet_zoo):
    zoo, written = resnet_zoo
    catalog = {info.name: info for info in zoo.catalog()}
    stem_out = written["model_idx_0000"][STEM].shape[0]
    assert (catalog[STEM].shape, catalog[STEM].kind) == ((3 * 7 * 7, stem_out), "conv-modelj")
    out, inp = written["model_idx_0000"][CONV_3X3].shape[:2]
    assert catalog[CONV_3X3].shape == (inp * 9, out)
    assert catalog[CONV_1X1].shape == tuple(written["model_idx_0000"][CONV_1X1].shape[:2])


def test_the_out_first_layout_is_available_by_an_explicit_option(resnet_zoo):
    zoo, written = resnet_zoo

    bank = zoo.bank(CONV_3X3, conv_layout="out-first", cache=False)

    weight = written[bank.ids[0]][CONV_3X3]
    assert torch.equal(bank.X[0], weight.reshape(weight.shape[0], -1))
    assert {info.name: info.kind for info in zoo.catalog(conv_layout="out-first")}[STEM] == "conv"


def test_cached_banks_of_the_two_layouts_are_kept_apart(resnet_zoo, tmp_path):
    zoo, _ = resnet_zoo
    official = zoo.bank(CONV_3X3, cache=tmp_path / "cache")
    out_first = zoo.bank(CONV_3X3, conv_layout="out-first", cache=tmp_path / "cache")
    again = zoo.bank(CONV_3X3, cache=tmp_path / "cache")
    out, inp = out_first.shape[0], out_first.shape[1] // 9
    assert (official.shape, out_first.shape) == ((inp * 9, out), (out, inp * 9))
    assert torch.equal(again.X, official.X) and len(list((tmp_path / "cache").glob("*.npy"))) == 2


def test_other_zoos_keep_the_out_first_layout(tmp_path):
    generator = torch.Generator().manual_seed(1)
    tensors = resnet101_tensors(generator)
    path = tmp_path / "plain.safetensors"
    from safetensors.torch import save_file

    save_file(tensors, str(path))  # a ResNet without Model-J's metadata: someone's own fine-tune
    header = read_header(path)
    catalog = {info.name: info for info in layer_catalog(header)}
    assert modelj_family(header) is None
    assert catalog[CONV_3X3].kind == "conv" and catalog[CONV_3X3].shape[0] == tensors[CONV_3X3].shape[0]


# -- the paper's layer numbers ---------------------------------------------------------------


def test_vit_layer_numbers_match_the_paper(tmp_path):
    path = write_modelj_repo(tmp_path, "train", "SupViT", 0, vit_b16_tensors(torch.Generator().manual_seed(2)))
    names = paper_layer_names(read_header(path))
    assert len(names) == 74
    assert names[0] == "classifier.weight" and names[1] == "vit.embeddings.position_embeddings"
    assert names[59] == "vit.encoder.layer.7.attention.output.dense.weight"
    assert names[64] == "vit.encoder.layer.8.attention.attention.value.weight"


def test_resnet_layer_numbers_match_the_paper(tmp_path):
    path = write_modelj_repo(tmp_path, "train", "ResNet", 0, resnet101_tensors(torch.Generator().manual_seed(3)))
    names = paper_layer_names(read_header(path))
    assert len(names) == 105
    assert names[:2] == ["classifier.1.weight", STEM]
    assert names[59] == CONV_1X1
    assert names[67] == "resnet.encoder.stages.2.layers.20.layer.2.convolution.weight"


def test_sd_lora_layer_numbers_match_the_paper(tmp_path):
    path = write_sd_model(tmp_path, "train", 0, sd_unet_lora_tensors(torch.Generator().manual_seed(4)))
    names = paper_layer_names(read_header(path))
    assert len(names) == 128
    assert names[0] == "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_k"
    assert names[46] == "unet.down_blocks.2.attentions.1.transformer_blocks.0.attn2.to_q"


def test_a_bank_and_a_sweep_accept_the_papers_number(tmp_path):
    generator = torch.Generator().manual_seed(5)
    for index, split in enumerate(["train", "train", "val"]):
        write_sd_model(tmp_path, split, index, sd_unet_lora_tensors(generator))
    zoo = ModelZoo.open(tmp_path)

    by_number = zoo.bank("46", cache=False)
    by_int = zoo.bank(46, cache=False)

    name = "unet.down_blocks.2.attentions.1.transformer_blocks.0.attn2.to_q"
    assert by_number.layer == by_int.layer == name
    assert torch.equal(by_number.X, zoo.bank(name, cache=False).X)


def test_a_number_outside_the_list_or_in_a_zoo_that_is_not_modelj_is_a_clear_error(tmp_path):
    from zoo_fixtures import write_manifest_zoo

    write_sd_model(tmp_path / "sd", "train", 0, sd_unet_lora_tensors(torch.Generator().manual_seed(6)))
    with pytest.raises(ZooError, match="no paper layer 128; this file holds paper layers 0..127"):
        ModelZoo.open(tmp_path / "sd").layer_name("128")
    write_manifest_zoo(tmp_path / "own")
    with pytest.raises(ZooError, match="layer numbers name layers only in Model-J checkpoints"):
        ModelZoo.open(tmp_path / "own").bank("3")
