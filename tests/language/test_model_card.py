"""Model-card drafts: YAML front matter in the Hub's convention, then a body that says it is a prediction."""

import pytest
import yaml

from probex.language.model_card import ModelCardFacts, Neighbour, draft_model_card


def facts(**changes) -> ModelCardFacts:
    base = dict(model_id="uploads/my-lora", base_model="mini-sd", relation="adapter", tree="mini-sd",
                predictions=[("red star", 0.97), ("red cross", 0.41)], prediction_kind="top zero-shot labels",
                confidence_name="match", neighbours=[Neighbour("mini-sd/model_idx_0007", 0.93, ["red star"])],
                expert="ProbeXAligner on unet.down.attn.to_q", routing="distance 0.4, radius 2.2",
                metadata={"rank": 4, "note": None})
    base.update(changes)
    return ModelCardFacts(**base)


def front(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def test_the_front_matter_names_the_base_model_its_relation_and_the_predictions():
    meta = front(draft_model_card(facts()))
    assert meta["base_model"] == "mini-sd" and meta["base_model_relation"] == "adapter"
    assert "probex" in meta["tags"]
    assert meta["probex"]["top_zero-shot_labels"][0] == {"name": "red star", "match": 0.97}
    assert meta["probex"]["nearest_documented_models"][0] == {"id": "mini-sd/model_idx_0007", "similarity": 0.93,
                                                               "trained_on": ["red star"]}


def test_the_body_says_it_is_a_draft_and_lists_predictions_neighbours_and_metadata():
    text = draft_model_card(facts())
    body = text.split("---\n", 2)[2]
    assert "(draft)" in body and "prediction" in body
    assert "| red star | 0.970 |" in body and "mini-sd/model\\_idx\\_0007" in body
    assert "| rank | 4 |" in body and "note" not in body


def test_names_from_data_cannot_break_the_yaml_or_inject_markdown():
    hostile = 'x"\n---\nbase_model: evil\n<script>alert(1)</script> [link](http://e)'
    text = draft_model_card(facts(model_id=hostile, predictions=[(hostile, 0.5)], base_model="a: b"))
    meta = front(text)
    assert meta["base_model"] == "a: b" and meta["probex"]["top_zero-shot_labels"][0]["name"] == hostile
    body = text.split("\n---\n", 1)[1]
    assert "<script>" not in body and "](http" not in body


def test_an_unknown_relation_is_refused():
    with pytest.raises(ValueError, match="relation"):
        draft_model_card(facts(relation="cousin"))
