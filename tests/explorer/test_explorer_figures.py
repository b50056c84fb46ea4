"""The figures the explorer draws (probex.figures): raw-weight map, layer sweep, training curves."""

import numpy as np
import pytest

from probex.figures import layer_sweep_figure, training_curves_figure, weight_map_figure
from probex.experts.training import EpochLog
from probex.trees.weight_map import principal_coordinates


@pytest.mark.parametrize("shape", [(40, 300), (300, 12)], ids=["wide", "tall"])
def test_principal_coordinates_match_the_svd_up_to_sign(shape):
    values = np.random.default_rng(0).standard_normal(shape)
    coordinates, variance = principal_coordinates(values)
    centred = values - values.mean(axis=0)
    _, singular, axes = np.linalg.svd(centred, full_matrices=False)
    np.testing.assert_allclose(np.abs(coordinates), np.abs(centred @ axes[:2].T), atol=1e-8)
    np.testing.assert_allclose(variance[:2], (singular ** 2 / np.sum(singular ** 2))[:2])


def test_the_weight_map_separates_two_trees_along_its_first_axis_in_each_panel():
    rng = np.random.default_rng(1)
    X = np.concatenate([rng.normal(0, 0.1, (20, 4, 5)), rng.normal(3, 0.1, (20, 4, 5))])
    trees = ["a"] * 20 + ["b"] * 20
    figure = weight_map_figure(X, {"tree found": trees, "true tree": trees}, ids=[f"m{i}" for i in range(40)])
    assert [trace.name for trace in figure.data] == ["a", "b", "a", "b"]
    first, second = figure.data[0].x, figure.data[1].x
    assert max(first) < min(second) or max(second) < min(first)


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
