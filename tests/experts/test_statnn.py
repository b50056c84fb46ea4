"""StatNN features and the StatNN baselines: gradient-boosted trees and the torch learners."""

import json

import numpy as np
import pytest
import torch

from probex import ParameterError, ProbeXClassifier, StatNNClassifier, StatNNNetworkClassifier, load_expert, statnn_features
from probex.experts.statnn import STATISTICS
from baselines import constant_multilabel_accuracy
from synthetic import make_population


@pytest.fixture(scope="module")
def population():
    return make_population(300, "tree", d_W=12, d_H=10, n_classes=5, seed=4).split(200, 40, 60)


@pytest.fixture(scope="module")
def baselines(population):
    """Test scores of a constant predictor (each class's majority in training) and of ProbeX."""
    train, val, test = population
    probex = ProbeXClassifier(n_probes=16, proj_dim=16, rep_dim=16, epochs=30).fit(train.X, train.Y, val=(val.X, val.Y))
    return {"constant": constant_multilabel_accuracy(train.Y, test.Y), "probex": probex.score(test.X, test.Y)}


def test_features_are_mean_variance_and_five_quantiles_per_tensor():
    weights, bias = torch.randn(6, 5, 4), torch.randn(6, 5, 1)
    features = statnn_features([weights, bias]).numpy()
    assert features.shape == (6, 2 * len(STATISTICS))
    flat = weights.reshape(6, -1).double().numpy()
    expected = np.column_stack([flat.mean(1), flat.var(1), *np.quantile(flat, [0, 0.25, 0.5, 0.75, 1], axis=1)])
    assert np.allclose(features[:, :7], expected, atol=1e-5)


@pytest.mark.parametrize("make", [lambda: StatNNClassifier(max_iter=30),
                                  lambda: StatNNNetworkClassifier(model="linear", epochs=60),
                                  lambda: StatNNNetworkClassifier(model="mlp", epochs=60)],
                         ids=["gbt", "linear", "mlp"])
def test_statnn_learns_something_but_less_than_the_weights_tell(make, population, baselines):
    train, val, test = population
    expert = make().fit(train.X, train.Y, val=(val.X, val.Y))
    assert expert.predict(test.X).shape == test.Y.shape
    score = expert.score(test.X, test.Y)
    assert baselines["constant"] + 0.1 < score < baselines["probex"] - 0.1


@pytest.mark.parametrize("make", [lambda: StatNNClassifier(max_iter=20),
                                  lambda: StatNNNetworkClassifier(model="mlp", epochs=10)], ids=["gbt", "mlp"])
def test_saved_statnn_predicts_identically_without_pickle(make, population, tmp_path):
    train, _, test = population
    expert = make().fit(train.X, train.Y)
    expert.save(tmp_path / "statnn")
    assert sorted(p.name for p in (tmp_path / "statnn").iterdir()) == [".probex-artifact.json", "config.json", "model.safetensors"]
    loaded = load_expert(tmp_path / "statnn")
    assert type(loaded) is type(expert) and loaded.get_params() == expert.get_params()
    assert np.array_equal(loaded.predict_proba(test.X), expert.predict_proba(test.X))


@pytest.mark.parametrize("model, now", [("gbt", StatNNClassifier), ("linear", StatNNNetworkClassifier)])
def test_a_statnn_saved_before_the_split_loads_as_its_new_class(model, now, population, tmp_path):
    """Configs written when StatNNClassifier(model="gbt"|"linear"|"mlp") was one class still load."""
    train, _, test = population
    expert = (StatNNClassifier(max_iter=20) if model == "gbt" else StatNNNetworkClassifier(model=model, epochs=5))
    expert.fit(train.X, train.Y).save(tmp_path / "statnn")
    config_path = tmp_path / "statnn" / "config.json"
    config = json.loads(config_path.read_text())
    config["class"] = "StatNNClassifier"
    config["params"] = {"model": model, "hidden": 256, "max_iter": 20, "epochs": 5, "lr": 1e-3, "weight_decay": 1e-5,
                        "batch_size": 64, "patience": None, "classes": None, "device": "auto", "seed": 0}
    config_path.write_text(json.dumps(config))
    loaded = load_expert(tmp_path / "statnn")
    assert type(loaded) is now
    assert np.array_equal(loaded.predict_proba(test.X), expert.predict_proba(test.X))


def test_statnn_refuses_an_unknown_model(population):
    with pytest.raises(ParameterError, match="model must be one of 'linear', 'mlp'; got 'forest'"):
        StatNNNetworkClassifier(model="forest").fit(population[0].X, population[0].Y)


@pytest.mark.parametrize("make", [lambda: StatNNClassifier(max_iter=5), lambda: StatNNNetworkClassifier(epochs=2)],
                         ids=["gbt", "mlp"])
def test_statnn_checks_the_tensor_shapes_seen_in_fit(make, population):
    train, _, test = population
    expert = make().fit(train.X, train.Y)
    with pytest.raises(ValueError, match=r"expected per-model shape \(12, 10\)"):
        expert.predict(test.X[:, :5])
