"""StatNN features and the StatNN baseline."""

import numpy as np
import pytest
import torch

from probex import StatNNClassifier, load_expert, statnn_features
from probex.experts.statnn import STATISTICS
from baselines import constant_multilabel_accuracy
from synthetic import make_population


@pytest.fixture(scope="module")
def population():
    return make_population(300, "tree", d_W=12, d_H=10, n_classes=5, seed=4).split(200, 40, 60)


def test_features_are_mean_variance_and_five_quantiles_per_tensor():
    weights, bias = torch.randn(6, 5, 4), torch.randn(6, 5, 1)
    features = statnn_features([weights, bias]).numpy()
    assert features.shape == (6, 2 * len(STATISTICS))
    flat = weights.reshape(6, -1).double().numpy()
    expected = np.column_stack([flat.mean(1), flat.var(1), *np.quantile(flat, [0, 0.25, 0.5, 0.75, 1], axis=1)])
    assert np.allclose(features[:, :7], expected, atol=1e-5)


@pytest.mark.parametrize("model", ["gbt", "linear", "mlp"])
def test_statnn_learns_something_but_less_than_the_weights_tell(model, population):
    train, val, test = population
    expert = StatNNClassifier(model=model, epochs=60, max_iter=30).fit(train.X, train.Y, val=(val.X, val.Y))
    assert expert.predict(test.X).shape == test.Y.shape
    assert expert.score(test.X, test.Y) > constant_multilabel_accuracy(train.Y, test.Y) + 0.1


@pytest.mark.parametrize("model", ["gbt", "mlp"])
def test_saved_statnn_predicts_identically_without_pickle(model, population, tmp_path):
    train, _, test = population
    expert = StatNNClassifier(model=model, epochs=10, max_iter=20).fit(train.X, train.Y)
    expert.save(tmp_path / "statnn")
    assert sorted(p.name for p in (tmp_path / "statnn").iterdir()) == ["config.json", "model.safetensors"]
    loaded = load_expert(tmp_path / "statnn")
    assert np.array_equal(loaded.predict_proba(test.X), expert.predict_proba(test.X))


def test_statnn_refuses_an_unknown_model(population):
    with pytest.raises(ValueError, match="model must be one of"):
        StatNNClassifier(model="forest").fit(population[0].X, population[0].Y)


def test_statnn_checks_the_tensor_shapes_seen_in_fit(population):
    train, _, test = population
    expert = StatNNClassifier(max_iter=5).fit(train.X, train.Y)
    with pytest.raises(ValueError, match=r"expected per-model shape \(12, 10\)"):
        expert.predict(test.X[:, :5])
