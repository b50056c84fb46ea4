"""LoRA key styles, pairing and scaling: every style arrives as one matrix X = s B A named by its module."""

import json
import math

import pytest
import torch
from safetensors.torch import save_file

from probex.errors import ZooError
from probex.zoo.catalog import layer_catalog, layer_matrix
from probex.zoo import ModelZoo
from probex.zoo.lora import find_lora_pairs, lora_factors, lora_scaling, merge_lora, metadata_alpha, parse_lora_key
from probex.zoo.safefile import read_header, read_tensors

ATTN = "unet.down_blocks.2.attentions.1.transformer_blocks.0.attn2"


def _factors(out=6, rank=3, inputs=5, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(out, rank, generator=generator), torch.randn(rank, inputs, generator=generator)


def _merged_from_file(tmp_path, tensors, metadata=None):
    """Write a checkpoint, then read its only layer through the catalog as a bank would."""
    path = tmp_path / "lora.safetensors"
    save_file(tensors, str(path), metadata=metadata)
    header = read_header(path)
    (info,) = layer_catalog(header)
    stored = read_tensors(path, info.tensors, header=header)
    return info, layer_matrix(info, stored, scaling=lora_scaling(header.metadata))


def test_processor_and_newer_diffusers_keys_name_the_same_module():
    old = parse_lora_key(f"{ATTN}.processor.to_q_lora.down.weight")
    new = parse_lora_key(f"{ATTN}.to_q.lora.down.weight")
    assert old[1] == new[1] == f"{ATTN}.to_q"
    assert (old[0], new[0]) == ("diffusers-processor", "diffusers")


def test_processor_to_out_is_named_like_diffusers_to_out_0():
    assert parse_lora_key(f"{ATTN}.processor.to_out_lora.up.weight")[1] == f"{ATTN}.to_out.0"
    assert parse_lora_key(f"{ATTN}.to_out.0.lora.up.weight")[1] == f"{ATTN}.to_out.0"


def test_peft_keys_drop_the_wrapper_prefix_and_adapter_name():
    assert parse_lora_key("base_model.model.layers.0.q_proj.lora_A.weight")[1:] == ("layers.0.q_proj", "base_model.model.layers.0.q_proj", "down")
    assert parse_lora_key("base_model.model.layers.0.q_proj.lora_B.default.weight")[3] == "up"


def test_plain_weights_are_not_lora_keys():
    assert parse_lora_key(f"{ATTN}.to_q.weight") is None
    assert parse_lora_key("lora_unet_x.alpha") is None


@pytest.mark.parametrize("style", ["processor", "diffusers", "text-encoder"])
def test_diffusers_pair_merges_to_up_times_down_without_alpha(tmp_path, style):
    up, down = _factors()
    keys = {
        "processor": (f"{ATTN}.processor.to_q_lora.down.weight", f"{ATTN}.processor.to_q_lora.up.weight"),
        "diffusers": (f"{ATTN}.to_q.lora.down.weight", f"{ATTN}.to_q.lora.up.weight"),
        "text-encoder": ("text_encoder.layers.0.q_proj.lora_linear_layer.down.weight", "text_encoder.layers.0.q_proj.lora_linear_layer.up.weight"),
    }[style]
    info, merged = _merged_from_file(tmp_path, {keys[0]: down, keys[1]: up})
    assert info.kind == "lora" and info.shape == (6, 5)
    assert info.name == ("text_encoder.layers.0.q_proj" if style == "text-encoder" else f"{ATTN}.to_q")
    torch.testing.assert_close(merged, up @ down)


def test_peft_pair_merges_b_times_a(tmp_path):
    up, down = _factors(out=4, rank=2, inputs=7)
    info, merged = _merged_from_file(
        tmp_path, {"base_model.model.encoder.q_proj.lora_A.weight": down, "base_model.model.encoder.q_proj.lora_B.weight": up}
    )
    assert info.name == "encoder.q_proj" and info.source_shape == ((4, 2), (2, 7))
    torch.testing.assert_close(merged, up @ down)


def test_kohya_pair_is_scaled_by_its_alpha_over_rank(tmp_path):
    up, down = _factors(rank=4)
    module = "lora_unet_down_blocks_2_attentions_1_transformer_blocks_0_attn2_to_q"
    info, merged = _merged_from_file(
        tmp_path,
        {f"{module}.lora_down.weight": down, f"{module}.lora_up.weight": up, f"{module}.alpha": torch.tensor(2.0)},
    )
    assert info.name == module and info.tensors[-1] == f"{module}.alpha"
    torch.testing.assert_close(merged, (2.0 / 4) * (up @ down))


def test_kohya_conv_lora_flattens_kernel_with_output_channels_first(tmp_path):
    generator = torch.Generator().manual_seed(1)
    down = torch.randn(2, 3, 3, 3, generator=generator)  # [r, in, kh, kw]
    up = torch.randn(5, 2, 1, 1, generator=generator)  # [out, r, 1, 1]
    info, merged = _merged_from_file(tmp_path, {"lora_unet_conv_in.lora_down.weight": down, "lora_unet_conv_in.lora_up.weight": up})
    assert info.shape == (5, 27)
    torch.testing.assert_close(merged, up.reshape(5, 2) @ down.reshape(2, 27))


def test_file_metadata_alpha_scales_pairs_without_an_alpha_tensor(tmp_path):
    up, down = _factors(rank=3)
    _, merged = _merged_from_file(
        tmp_path, {f"{ATTN}.to_q.lora.down.weight": down, f"{ATTN}.to_q.lora.up.weight": up}, metadata={"lora_alpha": "6"}
    )
    torch.testing.assert_close(merged, 2.0 * (up @ down))


def test_half_precision_factors_merge_in_float32(tmp_path):
    up, down = _factors()
    _, merged = _merged_from_file(tmp_path, {"m.lora_A.weight": down.half(), "m.lora_B.weight": up.half()})
    assert merged.dtype == torch.float32
    torch.testing.assert_close(merged, up.half().float() @ down.half().float())


def test_factor_without_partner_is_reported_as_unpaired_not_a_layer():
    pairs, others, unpaired = find_lora_pairs(["a.lora.down.weight", "b.lora.down.weight", "b.lora.up.weight", "c.weight"])
    assert [pair.module for pair in pairs] == ["b"]
    assert unpaired == ["a.lora.down.weight"] and others == ["c.weight"]


def test_factors_whose_ranks_disagree_raise_zoo_error_naming_the_layer():
    with pytest.raises(ZooError, match="my.layer.*up \\(6, 3\\).*down \\(2, 5\\)"):
        merge_lora(torch.zeros(6, 3), torch.zeros(2, 5), name="my.layer")


def test_unreadable_metadata_alpha_is_ignored():
    assert metadata_alpha({"lora_alpha": "nan"}) is None
    assert metadata_alpha({"lora_alpha": "four"}) is None
    assert metadata_alpha({"network_alpha": "8"}) == 8.0


# -- the scale from PEFT's and diffusers' LoRA configs ------------------------------------------


def write_peft_snapshot(root, tensors, config):
    """A PEFT adapter in the Hugging Face cache layout: adapter_model.safetensors + adapter_config.json."""
    snapshot = root / "models--alice--peft-lora" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (root / "models--alice--peft-lora" / "refs").mkdir()
    (root / "models--alice--peft-lora" / "refs" / "main").write_text("abc123")
    save_file(tensors, str(snapshot / "adapter_model.safetensors"), metadata={"format": "pt"})
    (snapshot / "adapter_config.json").write_text(json.dumps(config))
    return ModelZoo.open(root)


PEFT_CONFIG = {"peft_type": "LORA", "r": 8, "lora_alpha": 32, "target_modules": ["q_proj", "v_proj"],
               "base_model_name_or_path": "google/vit-base-patch16-224", "use_rslora": False, "use_dora": False}


def peft_pair(module="encoder.layer.0.q_proj", rank=8, seed=0):
    up, down = _factors(out=6, rank=rank, inputs=5, seed=seed)
    return up, down, {f"base_model.model.{module}.lora_A.weight": down, f"base_model.model.{module}.lora_B.weight": up}


def test_a_peft_adapter_with_alpha_32_and_rank_8_merges_at_scale_4(tmp_path):
    up, down, tensors = peft_pair()
    zoo = write_peft_snapshot(tmp_path, tensors, PEFT_CONFIG)

    bank = zoo.bank("encoder.layer.0.q_proj", cache=False)

    expected = torch.zeros(6, 5)
    for i in range(6):  # by hand: X_ij = (32 / 8) * sum_k B_ik A_kj
        for j in range(5):
            expected[i, j] = 4.0 * sum(float(up[i, k]) * float(down[k, j]) for k in range(8))
    torch.testing.assert_close(bank.X[0], expected)


def test_rslora_scales_by_alpha_over_the_square_root_of_the_rank(tmp_path):
    up, down, tensors = peft_pair()
    zoo = write_peft_snapshot(tmp_path, tensors, {**PEFT_CONFIG, "use_rslora": True})

    bank = zoo.bank("encoder.layer.0.q_proj", cache=False)

    torch.testing.assert_close(bank.X[0], (32 / math.sqrt(8)) * (up @ down))


def test_alpha_pattern_gives_a_module_its_own_alpha(tmp_path):
    up_q, down_q, tensors = peft_pair("encoder.layer.0.q_proj", seed=1)
    up_v, down_v, more = peft_pair("encoder.layer.0.v_proj", seed=2)
    zoo = write_peft_snapshot(tmp_path, {**tensors, **more}, {**PEFT_CONFIG, "alpha_pattern": {"v_proj": 8}})

    torch.testing.assert_close(zoo.bank("encoder.layer.0.q_proj", cache=False).X[0], 4.0 * (up_q @ down_q))
    torch.testing.assert_close(zoo.bank("encoder.layer.0.v_proj", cache=False).X[0], 1.0 * (up_v @ down_v))


def test_diffusers_lora_adapter_metadata_sets_the_scale(tmp_path):
    up, down = _factors(rank=4)
    keys = {f"{ATTN}.to_q.lora_A.weight": down, f"{ATTN}.to_q.lora_B.weight": up}
    config = json.dumps({"r": 4, "lora_alpha": 8, "use_rslora": False, "use_dora": False})
    _, merged = _merged_from_file(tmp_path, keys, metadata={"lora_adapter_metadata": config})
    torch.testing.assert_close(merged, 2.0 * (up @ down))


def test_a_pipeline_files_metadata_is_read_per_component(tmp_path):
    up, down = _factors(rank=4)
    config = json.dumps({"unet.r": 4, "unet.lora_alpha": 16, "text_encoder.r": 4, "text_encoder.lora_alpha": 4})
    _, merged = _merged_from_file(
        tmp_path, {f"unet.{ATTN}.to_q.lora.down.weight": down, f"unet.{ATTN}.to_q.lora.up.weight": up},
        metadata={"lora_adapter_metadata": config})
    torch.testing.assert_close(merged, 4.0 * (up @ down))


def test_an_unreadable_lora_config_is_refused_rather_than_guessed(tmp_path):
    up, down = _factors()
    with pytest.raises(ZooError, match="lora_adapter_metadata: the LoRA config is not valid JSON"):
        _merged_from_file(tmp_path, {"m.lora_A.weight": down, "m.lora_B.weight": up}, metadata={"lora_adapter_metadata": "{r: 4"})


def test_dora_layers_are_listed_but_refused_with_the_reason(tmp_path):
    up, down, tensors = peft_pair()
    tensors["base_model.model.encoder.layer.0.q_proj.lora_magnitude_vector"] = torch.ones(6)
    zoo = write_peft_snapshot(tmp_path, tensors, {**PEFT_CONFIG, "use_dora": True})

    (info,) = zoo.catalog()
    assert (info.name, info.kind, info.shape) == ("encoder.layer.0.q_proj", "dora", (6, 5))
    with pytest.raises(ZooError, match="DoRA layer.*base model's weight W0"):
        zoo.bank("encoder.layer.0.q_proj", cache=False)


def test_a_dora_config_refuses_even_without_magnitude_tensors(tmp_path):
    _, _, tensors = peft_pair()
    zoo = write_peft_snapshot(tmp_path, tensors, {**PEFT_CONFIG, "use_dora": True})
    with pytest.raises(ZooError, match="DoRA"):
        zoo.bank("encoder.layer.0.q_proj", cache=False)


def test_peft_embedding_pairs_become_the_transposed_update_of_the_embedding(tmp_path):
    generator = torch.Generator().manual_seed(3)
    A, B = torch.randn(8, 11, generator=generator), torch.randn(5, 8, generator=generator)  # [r, vocab], [dim, r]
    zoo = write_peft_snapshot(tmp_path, {"base_model.model.embed_tokens.lora_embedding_A": A,
                                         "base_model.model.embed_tokens.lora_embedding_B": B}, PEFT_CONFIG)

    (info,) = zoo.catalog()
    bank = zoo.bank("embed_tokens", cache=False)

    assert (info.kind, info.shape) == ("lora-embedding", (11, 5))
    torch.testing.assert_close(bank.X[0], 4.0 * (B @ A).T)


def test_lora_factors_give_b_a_and_the_scale_that_multiply_to_the_matrix(tmp_path):
    up, down, tensors = peft_pair()
    zoo = write_peft_snapshot(tmp_path, tensors, PEFT_CONFIG)
    record = zoo.records[0]
    (info,) = zoo.catalog()

    B, A, scale = lora_factors(info, read_tensors(record.path, info.tensors), lora_scaling(record.metadata))

    assert scale == 4.0 and torch.equal(B, up) and torch.equal(A, down)
