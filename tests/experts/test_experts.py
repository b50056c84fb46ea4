"""ProbeXClassifier and DenseExpert: learning, the tree effect, repeatability, saving, errors.

(The scikit-learn contract of every estimator is tested in test_estimators.py.)
"""

import numpy as np
import pytest

from probex import DenseExpert, ProbeXClassifier, load_expert
from probex.experts.training import EpochLog
from baselines import constant_multilabel_accuracy, majority_class_accuracy
from synthetic import make_population, write_layer_bank

FAST = dict(n_probes=16, proj_dim=16, rep_dim=16, epochs=30)
NAMES = ["cat", "dog", "ship", "tree", "car"]


def to_names(Y) -> list[list[str]]:
    return [[NAMES[j] for j in np.flatnonzero(row)] for row in np.asarray(Y)]


@pytest.fixture(scope="module")
def tree():
    return make_population(700, "tree", seed=0).split(400, 100, 200)


@pytest.fixture(scope="module")
def small():
    return make_population(120, "tree", d_W=12, d_H=10, n_classes=5, seed=3).split(80, 20, 20)


def test_probex_reads_training_classes_within_a_tree(tree):
    train, val, test = tree
    expert = ProbeXClassifier(n_probes=32, proj_dim=32, rep_dim=32, epochs=40).fit(train.X, train.Y, val=(val.X, val.Y))
    assert expert.score(test.X, test.Y) > constant_multilabel_accuracy(train.Y, test.Y) + 0.45


def test_probex_stays_near_chance_on_a_forest():
    train, val, test = make_population(700, "forest", seed=0).split(400, 100, 200)
    expert = ProbeXClassifier(n_probes=32, proj_dim=32, rep_dim=32, epochs=40).fit(train.X, train.Y, val=(val.X, val.Y))
    assert expert.score(test.X, test.Y) < constant_multilabel_accuracy(train.Y, test.Y) + 0.1


def test_fit_returns_self_and_sets_learned_state(small):
    train, val, _ = small
    expert = ProbeXClassifier(**FAST)
    assert expert.fit(train.X, train.Y, val=(val.X, val.Y)) is expert
    assert expert.classes_ == list(range(5))
    assert expert.layer_shapes_ == [(12, 10)]
    assert 1 <= expert.best_epoch_ <= 30 and len(expert.history_) == 30
    assert expert.n_parameters_ == sum(p.numel() for p in expert.network_.parameters())


def test_hyperparameters_are_stored_unchanged():
    expert = ProbeXClassifier(n_probes=500, activation="none")
    assert expert.get_params()["n_probes"] == 500 and expert.activation == "none"
    assert "n_probes=500" in repr(expert)


def test_defaults_just_work(small):
    train, _, test = small
    expert = ProbeXClassifier(epochs=5).fit(train.X, train.Y)
    assert expert.predict(test.X).shape == test.Y.shape


def test_same_seed_same_data_gives_identical_predictions(small):
    train, val, test = small
    first = ProbeXClassifier(**FAST, seed=7).fit(train.X, train.Y, val=(val.X, val.Y))
    second = ProbeXClassifier(**FAST, seed=7).fit(train.X, train.Y, val=(val.X, val.Y))
    assert np.array_equal(first.predict_proba(test.X), second.predict_proba(test.X))


def test_another_seed_gives_another_network(small):
    train, _, test = small
    first = ProbeXClassifier(**FAST, seed=1).fit(train.X, train.Y)
    second = ProbeXClassifier(**FAST, seed=2).fit(train.X, train.Y)
    assert not np.array_equal(first.predict_proba(test.X), second.predict_proba(test.X))


def test_the_kept_epoch_is_the_best_by_validation(small):
    train, val, _ = small
    expert = ProbeXClassifier(**FAST).fit(train.X, train.Y, val=(val.X, val.Y))
    best = max(expert.history_, key=lambda log: (log.val_score, -log.val_loss))
    assert expert.best_epoch_ == best.epoch
    assert expert.score(val.X, val.Y) == pytest.approx(best.val_score)


def test_early_stopping_ends_training_after_patience_epochs(small):
    train, val, _ = small
    expert = ProbeXClassifier(**{**FAST, "epochs": 200}, patience=3).fit(train.X, train.Y, val=(val.X, val.Y))
    assert len(expert.history_) == expert.best_epoch_ + 3 < 200


def test_progress_callback_is_called_after_every_epoch(small):
    train, val, _ = small
    calls = []
    ProbeXClassifier(**FAST).fit(train.X, train.Y, val=(val.X, val.Y), progress=lambda d, t, log: calls.append((d, t, log)))
    assert [c[0] for c in calls] == list(range(1, 31)) and all(c[1] == 30 for c in calls)
    assert isinstance(calls[-1][2], EpochLog) and "val" in str(calls[-1][2])


def test_label_name_lists_are_predicted_as_names(small):
    train, _, test = small
    expert = ProbeXClassifier(**FAST).fit(train.X, to_names(train.Y))
    assert expert.classes_ == sorted(NAMES)
    predicted = expert.predict(test.X)
    assert isinstance(predicted, list) and all(set(p) <= set(NAMES) for p in predicted)
    assert expert.score(test.X, to_names(test.Y)) > constant_multilabel_accuracy(train.Y, test.Y) + 0.1


def test_single_label_classification(small):
    train, val, test = small
    single = lambda pop: (pop.Y[:, 0] + 2 * pop.Y[:, 1]).long().numpy()  # 4 classes from 2 concepts, about balanced
    expert = DenseExpert(epochs=60).fit(train.X, single(train), val=(val.X, single(val)))
    assert expert.predict_proba(test.X).sum(axis=1) == pytest.approx(np.ones(len(test.X)), abs=1e-5)
    assert expert.score(test.X, single(test)) > majority_class_accuracy(single(train), single(test)) + 0.2


def test_a_layer_bank_brings_its_labels(small):
    train, _, test = small
    to_bank = lambda pop: write_layer_bank(pop.X, "blocks.3.attn.q.weight", labels=to_names(pop.Y))
    expert = ProbeXClassifier(**FAST).fit(to_bank(train))
    assert expert.score(to_bank(test)) > constant_multilabel_accuracy(train.Y, test.Y) + 0.1


def test_several_layers_are_encoded_side_by_side(small):
    train, val, test = small
    second = lambda pop: pop.X[:, :6, :4] * 2.0
    expert = ProbeXClassifier(**FAST).fit([train.X, second(train)], train.Y, val=([val.X, second(val)], val.Y))
    assert expert.layer_shapes_ == [(12, 10), (6, 4)]
    assert expert.encode([test.X, second(test)]).shape == (len(test.X), 16 + 16)


def test_dense_expert_reports_its_parameter_count(small):
    train, _, _ = small
    expert = DenseExpert(epochs=3).fit(train.X, train.Y)
    assert expert.n_parameters_ == 12 * 10 * 5 + 5


@pytest.mark.parametrize("make", [lambda: ProbeXClassifier(**FAST), lambda: DenseExpert(epochs=10)])
def test_saved_and_loaded_experts_predict_identically(make, small, tmp_path):
    train, val, test = small
    expert = make().fit(train.X, train.Y, val=(val.X, val.Y))
    expert.save(tmp_path / "expert")
    loaded = load_expert(tmp_path / "expert")
    assert type(loaded) is type(expert) and loaded.get_params() == expert.get_params()
    assert np.array_equal(loaded.predict_proba(test.X), expert.predict_proba(test.X))
    assert loaded.best_epoch_ == expert.best_epoch_ and len(loaded.history_) == len(expert.history_)


def test_a_failed_save_leaves_the_previous_expert_intact(small, tmp_path, monkeypatch):
    train, _, test = small
    expert = ProbeXClassifier(**FAST).fit(train.X, train.Y)
    expert.save(tmp_path / "expert")
    before = load_expert(tmp_path / "expert").predict_proba(test.X)

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("probex.experts.base.save_file", broken_save)
    with pytest.raises(OSError):
        ProbeXClassifier(**FAST, seed=5).fit(train.X, train.Y).save(tmp_path / "expert")
    assert np.array_equal(load_expert(tmp_path / "expert").predict_proba(test.X), before)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["expert"]


def test_loading_something_else_says_what_it_is(tmp_path):
    with pytest.raises(ValueError, match="not a saved expert"):
        load_expert(tmp_path)


# -- bad input: a ValueError that says what was expected and what was given -------------

def test_wrong_rank_is_refused(small):
    train, _, _ = small
    with pytest.raises(ValueError, match=r"expected shape \[N, d_W, d_H\].*got a tensor of shape \(80, 120\)"):
        ProbeXClassifier(**FAST).fit(train.X.reshape(80, -1), train.Y)


def test_predicting_on_another_layer_shape_is_refused(small):
    train, _, test = small
    expert = ProbeXClassifier(**FAST).fit(train.X, train.Y)
    with pytest.raises(ValueError, match=r"expected per-model shape \(12, 10\) as in fit; got \(12, 9\)"):
        expert.predict(test.X[:, :, :9])


def test_nan_and_inf_weights_are_refused_naming_the_models(small):
    train, _, _ = small
    X = train.X.clone()
    X[3, 0, 0] = float("nan")
    X[17, 2, 1] = float("inf")
    with pytest.raises(ValueError, match=r"NaN or Inf in the weights of 2 model\(s\): #3, #17"):
        ProbeXClassifier(**FAST).fit(X, train.Y)


def test_labels_of_the_wrong_width_are_refused(small):
    train, _, test = small
    expert = ProbeXClassifier(**FAST).fit(train.X, train.Y)
    with pytest.raises(ValueError, match="expected 5 label columns.*got 4"):
        expert.score(test.X, test.Y[:, :4])


def test_validation_labels_of_the_wrong_width_are_refused(small):
    train, val, _ = small
    with pytest.raises(ValueError, match="val y: expected 5 label columns"):
        ProbeXClassifier(**FAST).fit(train.X, train.Y, val=(val.X, val.Y[:, :3]))


def test_as_many_labels_as_models_are_required(small):
    train, _, _ = small
    with pytest.raises(ValueError, match="labels for 79 models given for 80 models"):
        ProbeXClassifier(**FAST).fit(train.X, train.Y[:79])


def test_the_layer_names_and_metadata_are_saved_with_the_expert(small, tmp_path):
    X, y = small[0].X, small[0].Y
    bank = write_layer_bank(X, "blocks.3.attn.q.weight", labels=to_names(y), root=tmp_path / "zoo")
    expert = ProbeXClassifier(epochs=2).fit(bank)
    assert expert.layers_ == ["blocks.3.attn.q.weight"]
    expert.save(tmp_path / "expert", metadata={"tree": "A", "val": 0.9})
    loaded = load_expert(tmp_path / "expert")
    assert loaded.layers_ == ["blocks.3.attn.q.weight"]
    assert loaded.metadata_ == {"tree": "A", "val": 0.9}
    assert ProbeXClassifier(epochs=2).fit(X, y).layers_ is None  # raw tensors carry no names


def test_an_expert_saved_in_half_precision_is_half_the_size_and_predicts_alike(small, tmp_path):
    train, _, test = small
    expert = ProbeXClassifier(n_probes=128, proj_dim=128, rep_dim=128, epochs=3).fit(train.X, train.Y)
    expert.save(tmp_path / "full")
    expert.save(tmp_path / "half", half=True)
    full_size = (tmp_path / "full" / "model.safetensors").stat().st_size
    half_size = (tmp_path / "half" / "model.safetensors").stat().st_size
    assert half_size < 0.55 * full_size
    loaded = load_expert(tmp_path / "half")
    assert np.abs(loaded.predict_proba(test.X) - expert.predict_proba(test.X)).max() < 1e-2
