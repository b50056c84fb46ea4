"""The figures the explorer draws (probex.figures): raw-weight map, layer sweep, training curves."""

import numpy as np
import pytest
import torch

from probex.figures import layer_sweep_figure, training_curves_figure, weight_map_figure
from probex.experts.training import EpochLog
from probex.trees import weight_map as weight_map_module
from probex.trees.weight_map import principal_coordinates, weight_map


@pytest.mark.parametrize("shape", [(40, 300), (300, 12)], ids=["wide", "tall"])
def test_principal_coordinates_match_the_svd_up_to_sign(shape):
    values = np.random.default_rng(0).standard_normal(shape)
    coordinates, variance = principal_coordinates(values)
    centred = values - values.mean(axis=0)
    _, singular, axes = np.linalg.svd(centred, full_matrices=False)
    np.testing.assert_allclose(np.abs(coordinates), np.abs(centred @ axes[:2].T), atol=1e-8)
    np.testing.assert_allclose(variance[:2], (singular ** 2 / np.sum(singular ** 2))[:2])


def two_trees(seed: int = 1, d_w: int = 4, d_h: int = 5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(0, 0.1, (20, d_w, d_h)), rng.normal(3, 0.1, (20, d_w, d_h))])


def test_the_weight_map_separates_two_trees_along_its_first_axis_in_each_panel():
    trees = ["a"] * 20 + ["b"] * 20
    figure = weight_map_figure(two_trees(), {"tree found": trees, "true tree": trees}, ids=[f"m{i}" for i in range(40)])
    assert [trace.name for trace in figure.data] == ["a", "b", "a", "b"]
    first, second = figure.data[0].x, figure.data[1].x
    assert max(first) < min(second) or max(second) < min(first)


def test_one_tree_has_one_colour_in_every_panel_when_colours_are_given():
    found, truth = ["tree_0"] * 20 + ["tree_1"] * 20, ["b"] * 20 + ["a"] * 20
    colours = {"tree_0": "#111111", "b": "#111111", "tree_1": "#222222", "a": "#222222"}
    figure = weight_map_figure(two_trees(), {"tree found": found, "true tree": truth}, colours=colours)
    colour = {(trace.legendgroup, trace.marker.color) for trace in figure.data}
    assert colour == {("tree found:tree_0", "#111111"), ("tree found:tree_1", "#222222"),
                      ("true tree:b", "#111111"), ("true tree:a", "#222222")}


def test_a_new_model_is_placed_where_its_own_row_would_be():
    X = two_trees()
    mapped = weight_map(X)
    np.testing.assert_allclose(mapped.place(X[5:6]), mapped.coordinates[5:6], atol=1e-9)


def test_a_large_layer_is_mapped_on_a_random_projection_that_still_separates_the_trees(monkeypatch):
    X = torch.from_numpy(two_trees(d_w=64, d_h=96)).float()  # 6,144 coordinates
    monkeypatch.setattr(weight_map_module, "EXACT_BYTES", 0)
    mapped = weight_map(X)
    assert mapped.method == "random projection to 64 x 64" and mapped.axes.shape == (64 * 64, 2)
    first = mapped.coordinates[:, 0]
    assert max(first[:20]) < min(first[20:]) or max(first[20:]) < min(first[:20])
    np.testing.assert_allclose(mapped.place(X[25:26]), mapped.coordinates[25:26], atol=1e-6)
    figure = weight_map_figure(mapped, {"tree": ["a"] * 20 + ["b"] * 20})
    assert "random projection to 64 x 64" in figure.layout.title.text  # the figure says how it was drawn


def test_a_negligible_second_component_is_labelled_below_one_percent_not_zero():
    X = np.zeros((30, 3, 3))
    X[:, 0, 0] = np.repeat([0.0, 10.0], 15)
    X[:, 1, 1] = np.random.default_rng(0).normal(0, 1e-3, 30)
    figure = weight_map_figure(X, {"tree": ["a"] * 15 + ["b"] * 15})
    assert figure.layout.yaxis.title.text == "PC 2 (<1% of the variance)"


def test_the_layer_sweep_marks_the_best_validation_layer_and_breaks_ties_by_size():
    scores = [{"layer": "conv1", "val": 0.8, "test": 0.7, "n_parameters": 10},
              {"layer": "conv2", "val": 0.9, "test": 0.9, "n_parameters": 500},
              {"layer": "head", "val": 0.9, "test": 0.8, "n_parameters": 50}]
    colours = layer_sweep_figure(scores).data[0].marker.color
    assert [colour == "#d62728" for colour in colours] == [False, False, True]


def test_training_curves_draw_loss_and_validation_and_mark_the_best_epoch():
    history = [EpochLog(epoch=e, epochs=5, train_loss=1.0 / e, val_score=0.5 + 0.1 * min(e, 3), best_epoch=min(e, 3))
               for e in range(1, 6)]
    figure = training_curves_figure(history)
    assert [trace.name for trace in figure.data] == ["training loss", "validation score"]
    assert figure.layout.shapes[0].x0 == 3
