"""The paper's offline ablations: training subsets, which text encoders count as available, the tables' Markdown."""

import time

import numpy as np

from probex.cli import main
from probex.experiments.ablations import (NO_FIGURE, _fraction_sizes, _training_subset, ablations_markdown,
                                          text_encoder_availability)
from probex.zoo import ModelZoo


def test_training_fractions_become_distinct_increasing_model_counts():
    assert _fraction_sizes(210, (0.1, 0.25, 0.5, 1.0)) == [21, 52, 105, 210]
    assert _fraction_sizes(8, (0.1, 0.2, 1.0)) == [2, 8]  # at least 2 models; equal counts trained once


def test_a_training_subset_is_a_seeded_random_choice_of_distinct_models(small_jungle):
    bank = ModelZoo.open(small_jungle).select(tree="cnn-supervised").bank("conv1.weight", split="train")
    first, again, other = (_training_subset(bank, 10, seed) for seed in (0, 0, 1))
    ids = [record.id for record in first.records]
    assert len(set(ids)) == 10 and ids == [record.id for record in again.records]
    assert ids != [record.id for record in other.records]
    assert ids != [record.id for record in bank.records[:10]]  # not simply the first models
    position = [record.id for record in bank.records].index(ids[3])
    assert np.array_equal(first.X[3].numpy(), bank.X[position].numpy())
    assert _training_subset(bank, len(bank), 0) is bank


def test_an_open_clip_encoder_whose_weights_are_not_here_is_unavailable_without_reaching_for_the_network():
    started = time.perf_counter()
    found = text_encoder_availability(("minilm", "open_clip:ViT-L-14/openai"), device="cpu")
    assert found["minilm"] is None
    assert "not on this machine" in found["open_clip:ViT-L-14/openai"]
    assert time.perf_counter() - started < 30  # no download attempts with retries (about 40 s offline)


def test_a_local_weights_file_that_is_not_a_checkpoint_is_unavailable_and_says_why(tmp_path):
    broken = tmp_path / "open_clip_model.safetensors"
    broken.write_bytes(b"not a safetensors file")
    found = text_encoder_availability((f"open_clip:ViT-B-32/{broken}",), device="cpu")
    assert str(broken) in found[f"open_clip:ViT-B-32/{broken}"]


def test_two_available_text_encoders_make_a_table_and_the_paper_cells_say_they_carry_no_figure():
    ablations = {"aligned_tree": "sd", "training_size": {}, "text_encoder": {
        "layer": "q", "available": ["minilm", "open_clip:X/y.safetensors"], "unavailable": {},
        "rows": [{"setting": "minilm", "in_distribution": 0.5, "score": 0.25, "n_parameters": 10},
                 {"setting": "open_clip:X/y.safetensors", "in_distribution": 0.75, "score": 0.5, "n_parameters": 12}]}}
    markdown = "\n".join(ablations_markdown(ablations))
    assert "| text encoder | in-distribution | zero-shot | params | paper |" in markdown
    assert f"| open_clip:X/y.safetensors | 0.750 | 0.500 | 12 | {NO_FIGURE} |" in markdown
    assert "Only" not in markdown


def test_a_text_encoder_that_is_no_spec_is_a_one_line_user_error(small_jungle, tmp_path, capsys):
    assert main(["report", str(small_jungle), "--out", str(tmp_path / "out"), "--text-encoder", "clip"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "--text-encoder" in error[0] and "'clip' is not a text encoder" in error[0]
