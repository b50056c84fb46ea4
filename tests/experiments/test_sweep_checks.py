"""What a sweep checks before its first layer trains: layer names, the results file, the concepts of an alignment."""

from pathlib import Path

import pytest

from probex import jungle
from probex.errors import ProbeXError, ZooError
from probex.experiments.sweep import check_alignment_concepts, sweep_layers
from probex.zoo import ModelZoo
from tests.zoo.zoo_fixtures import write_generative_zoo

FAST = {"epochs": 2, "patience": 2, "seed": 0}


@pytest.fixture(scope="module")
def cnn_tree():
    return jungle.load().select(tree="cnn-supervised")


def test_an_unknown_layer_in_the_list_is_refused_before_the_known_ones_train(cnn_tree, tmp_path):
    results = tmp_path / "sweep.jsonl"
    with pytest.raises(ZooError, match="no layer 'head.wieght'"):
        sweep_layers(cnn_tree, layers=["head.weight", "head.wieght"], params=FAST, results=results)
    assert not results.exists()  # head.weight did not train first


def test_a_results_file_that_is_not_a_sweeps_own_is_never_appended_to(cnn_tree, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    with pytest.raises(ProbeXError, match="not a probex sweep results file"):
        sweep_layers(cnn_tree, layers=["head.weight"], params=FAST, results=notes)
    assert notes.read_text() == "my notes\n"


def test_a_results_path_under_a_file_is_refused_before_training(cnn_tree, tmp_path):
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(ProbeXError, match="is a file, not a folder"):
        sweep_layers(cnn_tree, layers=["head.weight"], params=FAST, results=tmp_path / "a-file" / "sweep.jsonl")


def test_the_demo_jungles_generative_tree_passes_the_alignment_checks_without_notes():
    assert check_alignment_concepts(jungle.load().select(tree="mini-sd")) == []


def _zoo(root: Path, labels: dict[str, list[str]]) -> ModelZoo:
    """A generative zoo whose models of each split carry the given concepts (as our own files' ``concept``)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    written = write_generative_zoo(root, splits={split: len(names) for split, names in labels.items()}, images_per_model=0)
    names = [name for split in labels for name in labels[split]]
    for model, name in zip(written, names):
        with safe_open(str(model.path), framework="pt") as handle:
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
            metadata = {k: v for k, v in handle.metadata().items() if k != "imagenet_class_id"}
        save_file(tensors, str(model.path), metadata={**metadata, **({"concept": name} if name else {})})
    return ModelZoo.open(root)


def test_alignment_checks_note_what_is_measured_on_less_and_refuse_what_cannot_be_measured(tmp_path):
    zoo = _zoo(tmp_path / "a", {"train": ["cat", "dog", "cat"], "test": ["cat", "owl"], "val_holdout": ["fox"],
                                "test_holdout": ["fox", "dog"]})
    notes = check_alignment_concepts(zoo)
    assert any("1 test model(s) of 1 concept(s) with no training model ('owl')" in note for note in notes)
    assert any("val_holdout holds 1 concept(s)" in note for note in notes)
    assert any("test_holdout concept(s) also have training models (e.g. 'dog')" in note for note in notes)
    with pytest.raises(ZooError, match="no test model's concept has training models"):
        check_alignment_concepts(_zoo(tmp_path / "b", {"train": ["cat", "dog"], "test": ["owl"], "val_holdout": ["fox"],
                                                       "test_holdout": ["fox"]}))
    with pytest.raises(ZooError, match="at least 2"):
        check_alignment_concepts(_zoo(tmp_path / "c", {"train": ["cat", "cat"], "test": ["cat"], "val_holdout": ["fox"],
                                                       "test_holdout": ["fox"]}))
    with pytest.raises(ZooError, match="test_holdout model"):
        check_alignment_concepts(_zoo(tmp_path / "d", {"train": ["cat", "dog"], "test": ["cat"], "val_holdout": ["fox"],
                                                       "test_holdout": [""]}))
