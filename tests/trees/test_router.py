"""TreeRouter: trees found without being told, routing, unknown trees, options, scale shortcut."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest
import torch

from probex.errors import ProbeXError
from probex.estimator import NotFittedError
from probex.trees.router import TreeRouter
from probex.zoo import LayerBank
from synthetic import write_layer_bank


@lru_cache(maxsize=None)  # the banks are written once and never changed by a test
def grow_tree(name: str, n: int, shape=(24, 16), root_seed=0, seed=1, update=0.3, noise=0.05,
              layer="fc.weight", scale=1.0) -> LayerBank:
    """Models fine-tuned from one root: root + a rank-2 update per model + noise (times ``scale``),
    written as safetensors files and read back as a LayerBank."""
    root = torch.randn(shape, generator=torch.Generator().manual_seed(root_seed))
    generator = torch.Generator().manual_seed(seed)
    A = torch.randn(n, shape[0], 2, generator=generator)
    B = torch.randn(n, 2, shape[1], generator=generator)
    X = root + update * (A @ B) / 2**0.5 + noise * torch.randn(n, *shape, generator=generator)
    return write_layer_bank(X * scale, layer, ids=[f"{name}_{seed}_{i:03d}" for i in range(n)], trees=[name] * n)


def concat(*banks: LayerBank) -> LayerBank:
    return write_layer_bank(torch.cat([b.X for b in banks]), banks[0].layer, ids=sum((b.ids for b in banks), []),
                            trees=sum((b.trees for b in banks), []))


@lru_cache(maxsize=None)
def forest(seed: int) -> list[LayerBank]:
    """Trees a and b share an architecture (different roots); tree c has another layer shape."""
    same_architecture = concat(grow_tree("a", 30, root_seed=1, seed=seed),
                               grow_tree("b", 25, root_seed=2, seed=seed + 1))
    other = grow_tree("c", 20, shape=(16, 12), root_seed=3, seed=seed + 2, layer="head.weight")
    return [same_architecture, other]


@pytest.fixture(scope="module")
def fitted() -> TreeRouter:
    return TreeRouter().fit(forest(seed=10))


def test_finds_three_trees_without_being_told(fitted):
    assert fitted.n_trees_ == 3
    assert sorted(fitted.tree_truth_.values()) == ["a", "b", "c"]
    truth = np.array(fitted.true_trees_)
    for k, name in enumerate(fitted.tree_names_):
        assert set(truth[fitted.labels_ == k]) == {fitted.tree_truth_[name]}


def test_other_architecture_is_a_separate_tree_before_clustering(fitted):
    assert [a.shape for a in fitted.architectures_] == [(24, 16), (16, 12)]
    assert len(fitted.architectures_[1].tree_indices) == 1


def test_routes_held_out_models_with_accuracy_one(fitted):
    held_out = forest(seed=100)
    assert fitted.score(held_out) == 1.0
    routed = fitted.route(held_out)
    assert all(tree is not None for tree in routed)


def test_model_from_a_tree_not_in_fit_is_unknown(fitted):
    new_root = grow_tree("d", 5, root_seed=9, seed=5)
    assert fitted.route(new_root) == [None] * 5
    both = concat(new_root, grow_tree("a", 5, root_seed=1, seed=6))
    assert fitted.score(both) == 1.0
    truth = ["d"] * 5 + ["a"] * 5
    routed = fitted.route(both)
    assert fitted.score_routes(routed, truth) == 1.0  # routes computed once, scored without routing again
    assert fitted.score_routes(routed[5:] + routed[:5], truth) == 0.0  # every route against the wrong truth


def test_model_of_an_unseen_architecture_is_unknown(fitted):
    assert fitted.route(torch.randn(3, 7, 5)) == [None] * 3


def test_route_can_return_the_distance_to_the_nearest_centre(fitted):
    names, distances = fitted.route(grow_tree("a", 4, root_seed=1, seed=7), return_distance=True)
    assert names == ["tree_0"] * 4
    assert np.all(distances <= fitted.radii_[0])
    assert np.all(distances > 0)


def test_l1_metric_routes_held_out_models_like_l2():
    router = TreeRouter(metric="l1").fit(forest(seed=10))
    assert router.n_trees_ == 3
    assert router.score(forest(seed=100)) == 1.0
    assert router.route(grow_tree("d", 3, root_seed=9, seed=5)) == [None] * 3


def test_l1_radii_are_in_l1_units_and_larger_than_l2(fitted):
    router = TreeRouter(metric="l1").fit(forest(seed=10))
    assert np.all(router.radii_ > fitted.radii_)


def test_threshold_above_every_merge_gives_one_tree_per_architecture():
    router = TreeRouter(threshold=1e9).fit(forest(seed=10))
    assert router.n_trees_ == 2


def test_threshold_below_the_tree_merges_splits_more(fitted):
    within = np.sort(fitted.architectures_[0].linkage[:, 2])[-2]  # highest merge inside a tree
    router = TreeRouter(threshold=within * 0.9).fit(forest(seed=10))
    assert router.n_trees_ > 3
    assert router.architectures_[0].cut_height == pytest.approx(within * 0.9)


def test_n_trees_option_sets_the_trees_per_architecture():
    router = TreeRouter(n_trees=1).fit(forest(seed=10))
    assert router.n_trees_ == 2
    assert TreeRouter(n_trees=2).fit(forest(seed=10)).n_trees_ == 4


def test_fit_is_deterministic():
    first, second = TreeRouter().fit(forest(seed=10)), TreeRouter().fit(forest(seed=10))
    np.testing.assert_array_equal(first.labels_, second.labels_)
    np.testing.assert_array_equal(first.architectures_[0].linkage, second.architectures_[0].linkage)
    for a, b in zip(first.centers_, second.centers_):
        assert torch.equal(a, b)


def test_tree_names_follow_first_appearance(fitted):
    assert fitted.tree_names_ == ["tree_0", "tree_1", "tree_2"]
    assert fitted.labels_[0] == 0


def test_one_tree_is_not_split_by_the_gap_rule():
    assert TreeRouter().fit(grow_tree("a", 60, root_seed=1)).n_trees_ == 1


def test_ward_keeps_an_outlier_in_its_tree_where_average_makes_it_a_tree():
    population = concat(grow_tree("a", 30, root_seed=1), grow_tree("b", 30, root_seed=2, seed=3),
                        grow_tree("a", 1, root_seed=1, seed=77, update=1.2))
    assert TreeRouter(method="ward").fit(population).n_trees_ == 2
    assert TreeRouter(method="average").fit(population).n_trees_ == 3


def test_subset_of_coordinates_is_confirmed_and_matches_exact():
    population = concat(grow_tree("a", 20, shape=(64, 64), root_seed=1),
                        grow_tree("b", 20, shape=(64, 64), root_seed=2, seed=3))
    shortcut = TreeRouter(max_coordinates=512).fit(population)
    exact = TreeRouter(max_coordinates=64 * 64).fit(population)
    assert shortcut.architectures_[0].strategy == "subset, confirmed"
    assert exact.architectures_[0].strategy == "exact"
    np.testing.assert_array_equal(shortcut.labels_, exact.labels_)


def test_subset_path_centres_and_radii_match_the_exact_path():
    population = concat(grow_tree("a", 20, shape=(64, 64), root_seed=1),
                        grow_tree("b", 12, shape=(64, 64), root_seed=2, seed=3))
    shortcut = TreeRouter(max_coordinates=512).fit(population)
    exact = TreeRouter(max_coordinates=64 * 64).fit(population)
    for fast, slow in zip(shortcut.centers_, exact.centers_):
        torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(shortcut.radii_, exact.radii_, rtol=1e-4)
    assert shortcut.nearest_ids_ == exact.nearest_ids_


def test_more_trees_than_cells_of_the_single_read_are_found_like_the_exact_path():
    from probex.trees.cell_sums import MAX_CELLS

    trees = [grow_tree(f"t{k}", 6, shape=(64, 64), root_seed=20 + k, seed=k) for k in range(MAX_CELLS + 2)]
    population = concat(*trees)
    shortcut = TreeRouter(max_coordinates=512).fit(population)
    exact = TreeRouter(max_coordinates=64 * 64).fit(population)
    assert shortcut.architectures_[0].strategy == "subset, confirmed"
    assert shortcut.n_trees_ == MAX_CELLS + 2
    np.testing.assert_array_equal(shortcut.labels_, exact.labels_)
    for fast, slow in zip(shortcut.centers_, exact.centers_):
        torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-6)


def test_subset_path_with_more_models_than_max_linkage_models_matches_the_exact_path():
    population = concat(grow_tree("a", 20, shape=(64, 64), root_seed=1),
                        grow_tree("b", 16, shape=(64, 64), root_seed=2, seed=3))
    shortcut = TreeRouter(max_coordinates=512, max_linkage_models=15).fit(population)
    exact = TreeRouter(max_coordinates=64 * 64).fit(population)
    assert len(shortcut.architectures_[0].linkage_rows) == 15
    np.testing.assert_array_equal(shortcut.labels_, exact.labels_)
    np.testing.assert_allclose(shortcut.radii_, exact.radii_, rtol=1e-4)


def test_subset_that_misses_the_difference_falls_back_to_exact():
    # two trees whose roots differ only in the first 2 rows (128 of 4096 coordinates)
    a = grow_tree("a", 20, shape=(64, 64), root_seed=1, update=0.05)
    b = grow_tree("b", 20, shape=(64, 64), root_seed=1, seed=3, update=0.05)
    shifted = b.X.clone()
    shifted[:, :2] += 8.0
    b = write_layer_bank(shifted, b.layer, ids=b.ids, trees=b.trees)
    router = TreeRouter(max_coordinates=256, random_state=0).fit(concat(a, b))
    blocks_hit_rows = router.architectures_[0].strategy
    assert blocks_hit_rows == "exact after a failed subset confirmation"
    assert router.n_trees_ == 2


def test_memory_mapped_float16_population_is_clustered(tmp_path):
    population = concat(grow_tree("a", 20, shape=(64, 64), root_seed=1),
                        grow_tree("b", 20, shape=(64, 64), root_seed=2, seed=3))
    mapped = np.memmap(tmp_path / "X.f16", dtype=np.float16, mode="w+", shape=(40, 64, 64))
    mapped[:] = population.X.numpy().astype(np.float16)
    mapped.flush()
    reader = np.memmap(tmp_path / "X.f16", dtype=np.float16, mode="r", shape=(40, 64, 64))
    router = TreeRouter(max_coordinates=512).fit(reader)
    assert router.n_trees_ == 2
    assert router.route(reader[:5]) == ["tree_0"] * 5


def test_more_models_than_max_linkage_models_join_the_nearest_tree(fitted):
    router = TreeRouter(max_linkage_models=20).fit(forest(seed=10))
    np.testing.assert_array_equal(router.labels_, fitted.labels_)
    assert len(router.architectures_[0].linkage_rows) == 20


def test_add_tree_routes_its_models_and_keeps_the_others():
    router = TreeRouter().fit(forest(seed=10))
    centres_before = [c.clone() for c in router.centers_]
    router.add_tree("d", grow_tree("d", 10, root_seed=9, seed=5))
    assert router.route(grow_tree("d", 3, root_seed=9, seed=6)) == ["d"] * 3
    assert router.route(grow_tree("a", 2, root_seed=1, seed=7)) == ["tree_0"] * 2
    assert all(torch.equal(a, b) for a, b in zip(centres_before, router.centers_))


def test_save_and_load_route_identically(tmp_path, fitted):
    fitted.save(tmp_path / "router")
    loaded = TreeRouter.load(tmp_path / "router")
    held_out = forest(seed=100) + [grow_tree("d", 3, root_seed=9, seed=5)]
    assert loaded.route(held_out) == fitted.route(held_out)
    assert loaded.tree_truth_ == fitted.tree_truth_
    assert loaded.get_params() == fitted.get_params()


def test_route_before_fit_says_to_fit():
    with pytest.raises(NotFittedError, match="fit"):
        TreeRouter().route(torch.randn(2, 3, 3))


def test_unknown_method_is_refused():
    with pytest.raises(ProbeXError, match="method must be one of 'ward'"):
        TreeRouter(method="centroid").fit(torch.randn(4, 3, 3))


def test_tree_table_lists_sizes_and_nearest_models(fitted):
    table = fitted.tree_table()
    assert [row["size"] for row in table] == [30, 25, 20]
    assert [row["true_tree"] for row in table] == ["a", "b", "c"]
    assert table[0]["nearest_model"].startswith("a_")


def test_dendrogram_colours_links_by_tree_and_grey_above_the_cut(fitted):
    data = fitted.dendrogram(0)
    colours = set(data.scipy["color_list"])
    assert colours == {data.tree_colors["tree_0"], data.tree_colors["tree_1"], "#9e9e9e"}
    assert len(data.leaf_ids) == 55
    assert set(zip(data.leaf_trees, data.leaf_true_trees)) == {("tree_0", "a"), ("tree_1", "b")}


def test_dendrogram_is_truncated_above_max_leaves(fitted):
    data = fitted.dendrogram(0, max_leaves=10)
    assert data.truncated
    assert len(data.leaf_ids) == 10
    assert sum(data.leaf_sizes) == 55


def test_distances_of_models_very_near_a_far_away_centre_stay_accurate():
    # within-tree spread 1e-5 of the distance between roots: float32 cancellation territory
    near = grow_tree("a", 10, root_seed=1, update=1e-4, noise=1e-5, scale=100.0)
    far = grow_tree("b", 10, root_seed=2, seed=3, update=1e-4, noise=1e-5, scale=100.0)
    router = TreeRouter().fit(concat(near, far))
    _, distances = router.route(near, return_distance=True)
    exact = (near.X.double() - router.centers_[0].double()).flatten(1).norm(dim=1).numpy()
    np.testing.assert_allclose(distances, exact, rtol=0.01)


# ---------------------------------------------------------------- on a ModelZoo on disk
def write_forest_zoo(root, seed: int = 10, sizes=(12, 10, 8)):
    """A probex-manifest zoo: trees a and b share an architecture (fc1 + bias), tree c has a head layer."""
    from probex.zoo.manifest import save_model_file, write_manifest
    from probex.zoo.records import ModelRecord

    a = grow_tree("a", sizes[0], root_seed=1, seed=seed)
    b = grow_tree("b", sizes[1], root_seed=2, seed=seed + 1)
    c = grow_tree("c", sizes[2], shape=(16, 12), root_seed=3, seed=seed + 2)
    records = []
    for bank in (a, b, c):
        for model_id, weights, tree in zip(bank.ids, bank.X, bank.trees):
            tensors = ({"head.weight": weights} if tree == "c"
                       else {"fc1.weight": weights, "fc1.bias": weights[:, 0].clone()})
            path = save_model_file(root / "models" / f"{model_id}.safetensors", tensors, id=model_id, tree=tree)
            records.append(ModelRecord(id=model_id, path=path, tree=tree))
    write_manifest(root, records, name="forest")
    return root


def test_on_a_model_zoo_each_architecture_clusters_its_largest_layer(tmp_path):
    from probex.zoo import ModelZoo

    zoo = ModelZoo.open(write_forest_zoo(tmp_path / "zoo"))
    router = TreeRouter().fit(zoo)
    assert router.n_trees_ == 3
    assert sorted(a.layer for a in router.architectures_) == ["fc1.weight", "head.weight"]
    truth = [record.tree for record in zoo.records]
    assert [router.tree_truth_[router.tree_names_[k]] for k in router.labels_] == truth


def test_on_a_model_zoo_held_out_models_route_with_accuracy_one(tmp_path):
    from probex.zoo import ModelZoo

    router = TreeRouter().fit(ModelZoo.open(write_forest_zoo(tmp_path / "fit")))
    held_out = ModelZoo.open(write_forest_zoo(tmp_path / "held_out", seed=100, sizes=(4, 4, 4)))
    assert router.score(held_out) == 1.0


def test_on_a_model_zoo_a_layer_name_picks_the_layer(tmp_path):
    from probex.zoo import ModelZoo

    router = TreeRouter(layer="fc1.bias").fit(ModelZoo.open(write_forest_zoo(tmp_path / "zoo")))
    assert sorted(a.layer for a in router.architectures_) == ["fc1.bias", "head.weight"]
