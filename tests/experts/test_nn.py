"""The ProbeX encoder and the paper's two propositions, checked numerically."""

import pytest
import torch

from probex import ProbeX
from probex.experts.nn import DenseNetwork, ProbeXNetwork


def _dense_apply(weights, bias, layers):
    return sum(torch.einsum("kij,nij->nk", W.double(), X.double()) for W, X in zip(weights, layers)) + bias.double()


def test_probex_maps_a_batch_of_matrices_to_representations():
    encoder = ProbeX(d_W=20, d_H=12, n_probes=8, proj_dim=6, rep_dim=5)
    assert encoder(torch.randn(7, 20, 12)).shape == (7, 5)


def test_probex_sizes_are_clipped_to_the_layer():
    encoder = ProbeX(d_W=10, d_H=4, n_probes=128, proj_dim=128, rep_dim=128)
    assert (encoder.n_probes, encoder.proj_dim, encoder.rep_dim) == (4, 10, 40)


@pytest.mark.parametrize("shape", [(12, 27), (12, 48), (48, 216), (64, 512), (768, 768), (2048, 1024)])
def test_default_sizes_scale_with_the_layer_and_keep_probex_smaller_than_dense(shape):
    from probex.experts.nn import DenseNetwork, ProbeXNetwork, default_sizes

    d_W, d_H = shape
    probex, dense = ProbeXNetwork([shape], 24), DenseNetwork([shape], 24)
    encoder = probex.encoders[0]
    assert (encoder.n_probes, encoder.proj_dim, encoder.rep_dim) == default_sizes(d_W, d_H)
    encoder_weights = encoder.probes.numel() + encoder.projection.weight.numel() + encoder.encoder.weight.numel()
    assert encoder_weights <= 2 * d_W * d_H  # the budget: twice the layer
    # 24 outputs: ProbeX about 12 times smaller than Dense (biases and its head weigh more on tiny layers)
    assert probex.n_parameters() * (10 if d_W * d_H >= 10_000 else 5) < dense.n_parameters()
    if min(shape) >= 1024:
        assert default_sizes(d_W, d_H) == (128, 128, 128)  # the paper's sizes on large layers


def test_probex_rejects_an_unknown_activation():
    with pytest.raises(ValueError, match="activation"):
        ProbeX(8, 8, activation="tanh")


def test_encoder_depth_adds_blocks_after_the_representation():
    shallow = ProbeX(16, 16, n_probes=4, proj_dim=4, rep_dim=8)
    deep = ProbeX(16, 16, n_probes=4, proj_dim=4, rep_dim=8, encoder_depth=3)
    extra = sum(p.numel() for p in deep.parameters()) - sum(p.numel() for p in shallow.parameters())
    assert extra == 2 * (8 * 8 + 8)


def test_proposition_2_linear_probex_equals_its_tucker_dense_expert():
    torch.manual_seed(0)
    network = ProbeXNetwork([(24, 16), (10, 6)], out_dim=5, n_probes=7, proj_dim=9, rep_dim=11, activation="none")
    for encoder in network.encoders:  # a non-trivial input normalisation must fold in too
        encoder.normalize.center.normal_()
        encoder.normalize.scale.fill_(0.37)
    layers = [torch.randn(32, 24, 16), torch.randn(32, 10, 6)]
    weights, bias = network.dense_equivalent()
    assert weights[0].shape == (5, 24, 16) and weights[1].shape == (5, 10, 6)
    difference = (network(layers).double() - _dense_apply(weights, bias, layers)).abs().max()
    assert difference < 1e-4


def test_proposition_2_does_not_hold_with_relu():
    network = ProbeXNetwork([(8, 8)], out_dim=2, activation="relu")
    with pytest.raises(ValueError, match="linear ProbeX"):
        network.dense_equivalent()


def test_proposition_1_a_linear_probing_network_expresses_any_dense_expert():
    torch.manual_seed(1)
    weight, bias = torch.randn(4, 12, 9), torch.randn(4)
    network = ProbeXNetwork.from_dense(weight, bias)
    X = torch.randn(16, 12, 9)
    difference = (network([X]).double() - _dense_apply([weight], bias, [X])).abs().max()
    assert difference < 1e-4
    recovered, recovered_bias = network.dense_equivalent()
    assert torch.allclose(recovered[0], weight, atol=1e-5) and torch.allclose(recovered_bias, bias, atol=1e-5)


def test_dense_network_has_one_weight_per_input_and_output():
    network = DenseNetwork([(12, 9)], out_dim=4)
    assert network.n_parameters() == 12 * 9 * 4 + 4
