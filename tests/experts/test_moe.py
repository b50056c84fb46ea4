"""MixtureOfExperts: one expert per tree on its own layer, routing first, save/load, adding a tree."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from probex.errors import ProbeXError
from probex.estimator import NotFittedError
from probex.experts.classifier import ProbeXClassifier
from probex.experts.moe import MixtureOfExperts
from probex.trees.router import TreeRouter
from baselines import constant_multilabel_accuracy, multilabel_matrix

TREES = {  # tree -> (layer shape, root seed, its classes)
    "a": ((24, 16), 1, ["cat", "dog", "fox", "owl"]),
    "b": ((24, 16), 2, ["car", "bus", "van", "cab"]),
    "c": ((16, 12), 3, ["oak", "elm", "fir", "yew"]),
}
SPLITS = {"train": 24, "val": 8, "test": 8}


def fine_tuned_layer(tree: str, labels: list[str], generator: torch.Generator) -> torch.Tensor:
    """The tree's root plus a rank-1 update per class the model was fine-tuned on (times a
    per-model strength, like a learning rate), plus noise."""
    shape, root_seed, classes = TREES[tree]
    root = torch.randn(shape, generator=torch.Generator().manual_seed(root_seed))
    updates = torch.Generator().manual_seed(root_seed + 50)
    strength = 0.1 + 0.1 * torch.rand(1, generator=generator)
    weights = root.clone()
    for name in classes:
        update = torch.outer(torch.randn(shape[0], generator=updates), torch.randn(shape[1], generator=updates))
        if name in labels:
            weights += strength * update
    return weights + 0.1 * torch.randn(shape, generator=generator)


def write_labelled_zoo(root, trees=("a", "b", "c"), seed=0):
    """A probex-manifest zoo with train/val/test splits; trees a and b share an architecture."""
    from probex.zoo.manifest import save_model_file, write_manifest
    from probex.zoo.records import ModelRecord

    generator = torch.Generator().manual_seed(seed)
    records = []
    for tree in trees:
        classes = TREES[tree][2]
        for split, count in SPLITS.items():
            for i in range(count):
                picks = torch.randperm(len(classes), generator=generator)[:2].tolist()
                labels = sorted(classes[j] for j in picks)
                weights = fine_tuned_layer(tree, labels, generator)
                tensors = ({"head.weight": weights} if tree == "c"
                           else {"fc1.weight": weights, "fc1.bias": weights[:, :1].clone()})
                model_id = f"{tree}-{split}-{i:02d}"
                path = save_model_file(root / f"{model_id}.safetensors", tensors, id=model_id, split=split,
                                       tree=tree, labels=labels)
                records.append(ModelRecord(id=model_id, path=path, split=split, tree=tree, labels=labels))
    write_manifest(root, records, name="labelled")
    from probex.zoo import ModelZoo

    return ModelZoo.open(root)


def small_expert() -> ProbeXClassifier:
    return ProbeXClassifier(n_probes=8, proj_dim=8, rep_dim=8, epochs=25, batch_size=16, seed=0)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    return write_labelled_zoo(tmp_path_factory.mktemp("labelled"))


@pytest.fixture(scope="module")
def mixture(zoo):
    return MixtureOfExperts(TreeRouter(), expert=small_expert()).fit(zoo, layers=["fc1.weight", "fc1.bias"])


def state_of(expert) -> dict[str, torch.Tensor]:
    return {name: tensor.clone() for name, tensor in expert.network_.state_dict().items()}


def test_fit_trains_one_expert_per_tree_found(mixture):
    assert mixture.router_.n_trees_ == 3
    assert sorted(mixture.router_.tree_truth_.values()) == ["a", "b", "c"]
    assert set(mixture.experts_) == set(mixture.router_.tree_names_)


def test_each_tree_keeps_its_best_validation_layer(mixture):
    truth = {name: tree for name, tree in mixture.router_.tree_truth_.items()}
    for name, scores in mixture.layer_scores_.items():
        if truth[name] == "c":
            assert list(scores) == ["head.weight"]  # the only candidate its architecture has
        else:
            assert set(scores) == {"fc1.weight", "fc1.bias"}
        assert mixture.layers_[name] == max(scores, key=scores.get)


def test_predict_routes_then_asks_the_trees_expert(mixture, zoo):
    test = zoo.select(split="test")
    predictions, trees = mixture.predict(test, return_trees=True)
    assert [mixture.router_.tree_truth_[tree] for tree in trees] == [record.tree for record in test.records]
    for prediction, record in zip(predictions, test.records):
        assert set(prediction) <= set(TREES[record.tree][2])


def test_score_table_has_a_row_per_tree_and_an_overall_model_weighted_row(mixture, zoo):
    table = mixture.score_table(zoo.select(split="test"))
    per_tree, overall = table[:-1], table[-1]
    assert [row["models"] for row in per_tree] == [8, 8, 8]
    assert overall["tree"] == "overall" and overall["unrouted"] == 0
    assert overall["score"] == pytest.approx(sum(row["score"] for row in per_tree) / 3)
    constant = max(constant_multilabel_accuracy(  # the best constant predictor of each tree's classes
        multilabel_matrix([r.labels for r in zoo.select(tree=tree, split="train").records], TREES[tree][2]),
        multilabel_matrix([r.labels for r in zoo.select(tree=tree, split="test").records], TREES[tree][2])) for tree in TREES)
    assert all(row["score"] > constant + 0.2 for row in per_tree)


def test_saved_and_loaded_mixture_predicts_identically(mixture, zoo, tmp_path):
    mixture.save(tmp_path / "moe")
    loaded = MixtureOfExperts.load(tmp_path / "moe")
    test = zoo.select(split="test")
    assert loaded.predict(test) == mixture.predict(test)
    assert loaded.layers_ == mixture.layers_
    for name, expert in mixture.experts_.items():
        for key, tensor in state_of(expert).items():
            assert torch.equal(tensor, state_of(loaded.experts_[name])[key])


def test_a_mixture_manifest_naming_a_folder_outside_its_experts_is_refused(mixture, tmp_path):
    mixture.save(tmp_path / "moe")
    manifest_path = tmp_path / "moe" / "mixture.json"
    manifest = json.loads(manifest_path.read_text())
    for hostile in ["../../elsewhere", "/etc", "experts/../../x"]:
        manifest["experts"][0]["folder"] = hostile
        manifest_path.write_text(json.dumps(manifest))
        with pytest.raises(ProbeXError, match="not one this mixture's save"):
            MixtureOfExperts.load(tmp_path / "moe")
    del manifest["experts"][0]["layer"]
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(ProbeXError, match="damaged mixture manifest"):
        MixtureOfExperts.load(tmp_path / "moe")


def test_adding_a_tree_leaves_the_other_experts_bit_identical(zoo, tmp_path):
    known = zoo.select(tree=["a", "b"])
    mixture = MixtureOfExperts(TreeRouter(), expert=small_expert()).fit(known, layers="fc1.weight")
    before = {name: state_of(expert) for name, expert in mixture.experts_.items()}
    new_tree = zoo.select(tree="c")
    c_train = new_tree.select(split="train").bank("head.weight")
    assert mixture.predict(new_tree.select(split="test")) == [None] * 8  # unknown before
    expert_c = small_expert().fit(c_train)
    mixture.add_tree("c", expert_c, layer="head.weight", members=c_train)
    for name, state in before.items():
        assert all(torch.equal(state[key], tensor) for key, tensor in state_of(mixture.experts_[name]).items())
    predictions, trees = mixture.predict(new_tree.select(split="test"), return_trees=True)
    assert trees == ["c"] * 8 and all(prediction is not None for prediction in predictions)
    mixture.save(tmp_path / "grown")  # and still bit-identical after a round trip
    loaded = MixtureOfExperts.load(tmp_path / "grown")
    for name, state in before.items():
        assert all(torch.equal(state[key], tensor) for key, tensor in state_of(loaded.experts_[name]).items())


def test_model_of_an_unknown_tree_gets_no_prediction_and_is_reported(mixture, caplog):
    stranger = torch.randn(2, 24, 16, generator=torch.Generator().manual_seed(123)) * 3
    with caplog.at_level(logging.WARNING, logger="probex.experts.moe"):
        assert mixture.predict(stranger) == [None, None]
    assert "2 of 2 models belong to no known tree" in caplog.text


def test_a_mixture_assembled_from_trained_experts_predicts_without_fit(mixture, zoo):
    assembled = MixtureOfExperts.from_experts(mixture.router_, mixture.experts_, layers=mixture.layers_)
    test = zoo.select(split="test")
    assert assembled.predict(test) == mixture.predict(test)


def test_assembling_needs_a_fitted_router_and_experts_of_its_trees(mixture):
    with pytest.raises(NotFittedError):
        MixtureOfExperts.from_experts(TreeRouter(), mixture.experts_)
    with pytest.raises(NotFittedError):
        MixtureOfExperts.from_experts(mixture.router_, {"tree_0": small_expert()})
    with pytest.raises(ProbeXError, match="no tree 'tree_9'"):
        MixtureOfExperts.from_experts(mixture.router_, {"tree_9": mixture.experts_["tree_0"]})


def test_fit_leaves_the_router_it_was_given_unfitted(zoo):
    router = TreeRouter()
    fitted = MixtureOfExperts(router, expert=small_expert()).fit(zoo.select(tree="c"), layers="head.weight")
    assert fitted.router_.n_trees_ == 1 and fitted.router_ is not router
    assert not router.__sklearn_is_fitted__()


def test_a_fitted_router_is_used_as_given(mixture, zoo):
    reused = MixtureOfExperts(mixture.router_, expert=small_expert()).fit(zoo.select(tree="c"), layers="head.weight")
    assert reused.router_ is mixture.router_
    assert set(reused.experts_) == {name for name, truth in mixture.router_.tree_truth_.items() if truth == "c"}


def test_adding_a_tree_the_router_cannot_place_asks_for_its_members(mixture):
    grown = MixtureOfExperts.from_experts(mixture.router_, dict(mixture.experts_), layers=dict(mixture.layers_))
    with pytest.raises(ProbeXError, match="members"):
        grown.add_tree("d", small_expert(), layer="fc1.weight")


def test_predict_before_fit_says_what_to_do():
    with pytest.raises(NotFittedError, match="fit"):
        MixtureOfExperts(TreeRouter()).predict(torch.randn(2, 3, 3))
