"""The router and the weight map read LoRA banks as factors and agree with the merged matrices within 1e-4."""

import numpy as np
import pytest
from lora_zoo import write_lora_zoo

from probex.trees import weight_map as weight_map_module
from probex.trees.distances import distances_to_models, exact_gram
from probex.trees.router import TreeRouter
from probex.trees.weight_map import weight_map
from probex.zoo import ModelZoo
from probex.zoo.stack import MatrixStack

LAYER = "unet.wide.attn.to_v"


@pytest.fixture(scope="module")
def bank(tmp_path_factory):
    root = tmp_path_factory.mktemp("lora")
    write_lora_zoo(root, n_models=40, trees=("sd-a", "sd-b", "sd-c"), layers={LAYER: (40, 48)})
    return ModelZoo.open(root).bank(LAYER, cache=False)


def _relative(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


def test_the_exact_gram_matrix_from_factors_equals_the_merged_one(bank):
    rows = np.arange(0, len(bank), 2)
    assert bank.rank ** 2 * (40 + 48) < 40 * 48  # the factored formula is the one used here
    assert _relative(exact_gram(bank.stack, rows), exact_gram(bank.X.reshape(len(bank), -1), rows)) < 1e-6


@pytest.mark.parametrize("max_coordinates", [4096, 256], ids=["exact", "coordinate subset"])
def test_router_trees_centres_and_distances_from_factors_equal_the_merged_ones(bank, max_coordinates):
    factored = TreeRouter(max_coordinates=max_coordinates).fit(bank)
    merged = TreeRouter(max_coordinates=max_coordinates).fit(bank.X)
    assert factored.n_trees_ == merged.n_trees_ == 3
    assert np.array_equal(factored.labels_, merged.labels_)
    for mine, theirs in zip(factored.centers_, merged.centers_):
        assert _relative(mine, theirs) < 1e-4
    routed, distances = factored.route(bank, return_distance=True)
    routed_merged, distances_merged = merged.route(bank.X, return_distance=True)
    assert routed == routed_merged and _relative(distances, distances_merged) < 1e-4
    assert factored.score(bank) == 1.0


def _same_map(a, b):
    assert a.method == b.method
    assert _relative(a.coordinates, b.coordinates) < 1e-4 and _relative(a.variance, b.variance) < 1e-4


def test_the_weight_map_from_factors_equals_the_merged_one(bank):
    factored, merged = weight_map(bank), weight_map(bank.X)
    assert factored.method == "exact"
    _same_map(factored, merged)


def test_large_layers_are_mapped_through_the_same_random_projection_factored_or_not(bank, monkeypatch):
    monkeypatch.setattr(weight_map_module, "EXACT_FLOPS", 0)
    monkeypatch.setattr(weight_map_module, "EXACT_BYTES", 0)
    factored, merged = weight_map(bank), weight_map(bank.X)
    assert factored.method == "random projection to 40 x 48"
    _same_map(factored, merged)
    monkeypatch.undo()
    exact = weight_map(bank.X).coordinates[:, 0]
    assert abs(np.corrcoef(exact, factored.coordinates[:, 0])[0, 1]) > 0.9  # the projection keeps the main axis


@pytest.mark.parametrize("exact", [True, False], ids=["exact", "random projection"])
def test_models_are_placed_on_the_map_where_they_are_drawn_factored_or_merged(bank, monkeypatch, exact):
    if not exact:
        monkeypatch.setattr(weight_map_module, "EXACT_FLOPS", 0)
        monkeypatch.setattr(weight_map_module, "EXACT_BYTES", 0)
    factored, merged = weight_map(bank), weight_map(bank.X)
    some = bank.stack.view(np.arange(3, 9))
    for mapped in (factored, merged):
        assert _relative(mapped.place(some), mapped.coordinates[3:9]) < 1e-4
    assert _relative(factored.place(some), merged.place(bank.X[3:9])) < 1e-4
    assert _relative(factored.centred(bank), merged.centred(bank.X)) < 1e-4


def test_distances_to_an_upload_from_factors_equal_the_merged_ones(bank):
    upload = bank.stack.view([7])
    factored = distances_to_models(bank.stack, upload)
    merged = np.linalg.norm(bank.X.reshape(len(bank), -1).double().numpy()
                            - bank.X[7].reshape(1, -1).double().numpy(), axis=1)[:, None]
    assert factored.shape == (len(bank), 1) and factored[7, 0] < 1e-3 * merged.max()
    assert _relative(factored, merged) < 1e-4
    assert _relative(distances_to_models(bank.stack, MatrixStack(bank.X[7:8])), merged) < 1e-4
