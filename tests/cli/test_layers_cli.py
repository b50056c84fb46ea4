"""``probex layers``: layer names with the paper's numbers in Model-J zoos."""

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "zoo"))  # the zoo builders live beside the zoo tests

import torch  # noqa: E402
from modelj_architectures import resnet101_tensors, sd_unet_lora_tensors, vit_b16_tensors, write_modelj_repo, write_sd_model  # noqa: E402

from probex.cli import main  # noqa: E402


def numbered(out: str) -> dict[int, str]:
    return {int(number): name for number, name in re.findall(r"^\s+(\d+)\s+(\S+)", out, re.MULTILINE)}


def test_layers_of_a_modelj_sd_zoo_show_the_papers_numbers(tmp_path, capsys):
    write_sd_model(tmp_path, "train", 0, sd_unet_lora_tensors(torch.Generator().manual_seed(0)))

    assert main(["layers", str(tmp_path)]) == 0

    out = capsys.readouterr().out
    assert "128 layers; first column: the paper's layer number" in out
    assert numbered(out)[46] == "unet.down_blocks.2.attentions.1.transformer_blocks.0.attn2.to_q"


def test_layers_of_modelj_vit_and_resnet_trees(tmp_path, capsys):
    write_modelj_repo(tmp_path, "train", "SupViT", 0, vit_b16_tensors(torch.Generator().manual_seed(1)))
    write_modelj_repo(tmp_path, "train", "ResNet", 1, resnet101_tensors(torch.Generator().manual_seed(2)))

    assert main(["layers", str(tmp_path), "--tree", "SupViT", "--paper"]) == 0
    vit = numbered(capsys.readouterr().out)
    assert main(["layers", str(tmp_path), "--tree", "ResNet", "--paper"]) == 0
    resnet = numbered(capsys.readouterr().out)

    assert len(vit) == 74 and vit[59] == "vit.encoder.layer.7.attention.output.dense.weight"
    assert vit[64] == "vit.encoder.layer.8.attention.attention.value.weight"
    assert len(resnet) == 105 and resnet[59] == "resnet.encoder.stages.2.layers.19.layer.0.convolution.weight"
    assert resnet[67] == "resnet.encoder.stages.2.layers.20.layer.2.convolution.weight"


def test_zoo_bank_accepts_the_papers_number(tmp_path, capsys):
    generator = torch.Generator().manual_seed(3)
    for index in range(2):
        write_sd_model(tmp_path, "train", index, sd_unet_lora_tensors(generator))

    assert main(["zoo", "bank", str(tmp_path), "46", "--cache-dir", str(tmp_path / "cache")]) == 0

    assert "unet.down_blocks.2.attentions.1.transformer_blocks.0.attn2.to_q: 2 models" in capsys.readouterr().out


def test_layers_of_the_demo_jungle_list_names_without_numbers(capsys):
    assert main(["layers", "--tree", "cnn-supervised"]) == 0
    out = capsys.readouterr().out
    assert "conv1.weight" in out and "first column" not in out
