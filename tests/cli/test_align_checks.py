"""``probex align`` checks what it can before training: concepts, output folder, text encoder; figures it cannot
measure are printed as n/a, never a traceback after the training."""

from pathlib import Path

import pytest
from safetensors import safe_open
from safetensors.torch import save_file

from probex.cli import main
from probex.experts.base import load_expert
from tests.zoo.zoo_fixtures import write_generative_zoo

TINY_LAYER = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
SPLITS = {"train": 16, "val": 2, "test": 2, "val_holdout": 4, "test_holdout": 8}
UNSEEN = ("1", "goldfish")  # an ImageNet class no training model of the fixture has


def relabel(path: Path, class_id: str) -> None:
    """Give a model file another ``imagenet_class_id`` (as if it had been trained on another class)."""
    with safe_open(str(path), framework="pt") as handle:
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        metadata = dict(handle.metadata())
    metadata["imagenet_class_id"] = class_id
    save_file(tensors, str(path), metadata=metadata)


def zoo_with_unseen_test_concepts(root: Path, how_many: int) -> Path:
    written = write_generative_zoo(root, splits=SPLITS, images_per_model=0)
    for model in [model for model in written if model.split == "test"][-how_many:]:
        relabel(model.path, UNSEEN[0])
    return root


@pytest.fixture
def private_cache(tmp_path, monkeypatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("PROBEX_CACHE", str(cache))
    return cache


def no_bank_was_built(cache: Path) -> bool:
    return not (cache / "banks").exists() or not any((cache / "banks").iterdir())


def test_a_test_concept_without_training_models_is_left_out_with_a_note_and_unmeasurable_figures_read_n_a(
        tmp_path, private_cache, capsys):
    zoo = zoo_with_unseen_test_concepts(tmp_path / "zoo", how_many=1)
    assert main(["align", str(zoo), "--layers", TINY_LAYER, "--epochs", "2"]) == 0
    captured = capsys.readouterr()
    assert "note: 1 test model(s) of 1 concept(s) with no training model ('goldfish')" in captured.err
    assert "left out of in-distribution scoring" in captured.err
    lines = {line.split("  ")[1].strip(): line for line in captured.out.splitlines() if line.startswith("  ") and "  " in line[2:]}
    assert float(lines["in-distribution top-1"].split()[-2]) >= 0.0
    # the one test model left is the only model of its concept: a one-class AUC has no negatives to rank
    assert "n/a" in lines["one-class AUC (kNN)"] and "not measurable" in lines["one-class AUC (kNN)"]


def test_no_test_concept_with_training_models_is_refused_before_any_bank_is_built(tmp_path, private_cache, capsys):
    zoo = zoo_with_unseen_test_concepts(tmp_path / "zoo", how_many=SPLITS["test"])
    assert main(["align", str(zoo), "--layers", TINY_LAYER, "--epochs", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no test model's concept has training models" in err and "'goldfish'" in err
    assert no_bank_was_built(private_cache)


def test_an_out_folder_holding_other_files_is_refused_before_training_and_left_intact(tmp_path, private_cache, capsys):
    zoo = write_generative_zoo(tmp_path / "zoo", splits=SPLITS, images_per_model=0)[0].path.parents[2]
    mine = tmp_path / "my-results"
    mine.mkdir()
    (mine / "thesis.tex").write_text("months of work")
    assert main(["align", str(zoo), "--layers", TINY_LAYER, "--epochs", "2", "--out", str(mine)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--out" in err and "not written by probex" in err
    assert (mine / "thesis.tex").read_text() == "months of work" and no_bank_was_built(private_cache)


def test_an_out_folder_that_is_a_file_or_unwritable_is_refused_before_training(tmp_path, private_cache, capsys):
    zoo = write_generative_zoo(tmp_path / "zoo", splits=SPLITS, images_per_model=0)[0].path.parents[2]
    (tmp_path / "a-file").write_text("x")
    assert main(["align", str(zoo), "--layers", TINY_LAYER, "--out", str(tmp_path / "a-file")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert main(["align", str(zoo), "--layers", TINY_LAYER, "--out", str(tmp_path / "a-file" / "expert")]) == 2
    assert "cannot create" in capsys.readouterr().err
    assert no_bank_was_built(private_cache)


def test_a_previous_expert_in_out_is_replaced(tmp_path, private_cache, capsys):
    zoo = write_generative_zoo(tmp_path / "zoo", splits=SPLITS, images_per_model=0)[0].path.parents[2]
    out = tmp_path / "expert"
    assert main(["align", str(zoo), "--layers", TINY_LAYER, "--epochs", "1", "--out", str(out)]) == 0
    assert main(["align", str(zoo), "--layers", TINY_LAYER, "--epochs", "2", "--out", str(out), "--no-activation"]) == 0
    assert load_expert(out).activation == "none"


def test_an_unknown_text_encoder_is_refused_before_any_bank_is_built(tmp_path, private_cache, capsys):
    zoo = write_generative_zoo(tmp_path / "zoo", splits=SPLITS, images_per_model=0)[0].path.parents[2]
    spec = "open_clip:no-such-model/openai"  # well formed, so only loading it finds it unknown
    assert main(["align", str(zoo), "--layers", TINY_LAYER, "--text-encoder", spec]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--text-encoder {spec}" in err
    assert no_bank_was_built(private_cache)
