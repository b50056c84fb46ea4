"""The layer catalog: which tensors are layers, and the 2-D matrix each one becomes."""

import torch
from safetensors.torch import save_file

from probex.zoo.catalog import architecture_name, layer_catalog, layer_matrix, presented_shape
from probex.zoo.safefile import read_header, read_tensors


def _catalog(tmp_path, tensors):
    path = tmp_path / "model.safetensors"
    save_file(tensors, str(path))
    header = read_header(path)
    return path, header, {info.name: info for info in layer_catalog(header)}


def _matrix(path, header, info):
    return layer_matrix(info, read_tensors(path, info.tensors, header=header))


def test_conv_kernel_is_flattened_with_output_channels_first(tmp_path):
    kernel = torch.randn(5, 3, 2, 4)
    path, header, catalog = _catalog(tmp_path, {"conv.weight": kernel})
    info = catalog["conv.weight"]
    assert (info.shape, info.kind, info.source_shape) == ((5, 24), "conv", ((5, 3, 2, 4),))
    torch.testing.assert_close(_matrix(path, header, info), kernel.reshape(5, 24))
    torch.testing.assert_close(_matrix(path, header, info)[2], kernel[2].flatten())


def test_one_dimensional_tensor_becomes_a_column(tmp_path):
    bias = torch.arange(6, dtype=torch.float32)
    path, header, catalog = _catalog(tmp_path, {"fc.bias": bias})
    assert catalog["fc.bias"].shape == (6, 1) and catalog["fc.bias"].kind == "vector"
    torch.testing.assert_close(_matrix(path, header, catalog["fc.bias"]), bias[:, None])


def test_linear_weight_is_presented_as_stored(tmp_path):
    weight = torch.randn(4, 7)
    path, header, catalog = _catalog(tmp_path, {"fc.weight": weight})
    assert catalog["fc.weight"].kind == "linear"
    torch.testing.assert_close(_matrix(path, header, catalog["fc.weight"]), weight)


def test_leading_singleton_axes_are_dropped_for_embeddings(tmp_path):
    position = torch.randn(1, 5, 8)
    path, header, catalog = _catalog(tmp_path, {"pos_embed": position})
    assert catalog["pos_embed"].shape == (5, 8) and catalog["pos_embed"].kind == "embedding"
    torch.testing.assert_close(_matrix(path, header, catalog["pos_embed"]), position[0])


def test_integer_tensors_scalars_and_empty_tensors_are_not_layers(tmp_path):
    _, _, catalog = _catalog(
        tmp_path,
        {
            "bn.num_batches_tracked": torch.tensor(3, dtype=torch.int64),
            "position_ids": torch.arange(5)[None],
            "logit_scale": torch.tensor(1.0),
            "empty": torch.zeros(0, 4),
            "fc.weight": torch.randn(2, 2),
        },
    )
    assert list(catalog) == ["fc.weight"]


def test_half_and_bfloat16_layers_are_read_as_float32(tmp_path):
    weight = torch.randn(3, 3)
    path, header, catalog = _catalog(tmp_path, {"a": weight.half(), "b": weight.bfloat16()})
    assert catalog["a"].dtype == "F16" and catalog["b"].dtype == "BF16"
    torch.testing.assert_close(_matrix(path, header, catalog["a"]), weight.half().float())
    torch.testing.assert_close(_matrix(path, header, catalog["b"]), weight.bfloat16().float())


def test_lora_factors_are_listed_once_as_their_merged_module(tmp_path):
    _, _, catalog = _catalog(
        tmp_path,
        {"m.to_q.lora.down.weight": torch.randn(2, 5), "m.to_q.lora.up.weight": torch.randn(7, 2), "m.norm.weight": torch.randn(7)},
    )
    assert set(catalog) == {"m.to_q", "m.norm.weight"}
    assert catalog["m.to_q"].source_shape == ((7, 2), (2, 5)) and catalog["m.to_q"].shape == (7, 5)


def test_presented_shape_of_each_rank():
    assert presented_shape((3,)) == ((3, 1), "vector")
    assert presented_shape((3, 4)) == ((3, 4), "linear")
    assert presented_shape((8, 4, 3)) == ((8, 12), "conv")
    assert presented_shape((1, 1, 768)) == ((1, 768), "embedding")
    assert presented_shape(()) is None


def test_architecture_name_differs_when_a_shape_differs(tmp_path):
    _, header_a, _ = _catalog(tmp_path, {"fc.weight": torch.randn(4, 4)})
    first = architecture_name(layer_catalog(header_a))
    (tmp_path / "model.safetensors").unlink()
    _, header_b, _ = _catalog(tmp_path, {"fc.weight": torch.randn(4, 5)})
    assert first != architecture_name(layer_catalog(header_b))
    assert first.startswith("1 layer, 16 weights #")
