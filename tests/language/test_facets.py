"""Facets: one table of every field a map can be coloured, shaped or searched by."""

from pathlib import Path

import numpy as np

from probex.language.facets import (COLOUR_WORDS, HELD_OUT, SEEN, colour_fields, concept_colours, concept_parts,
                                    field_kind, model_table, shape_fields, symbols_for, text_matches)
from probex.zoo import ModelRecord


def record(number: int, label: str, split: str, **metadata) -> ModelRecord:
    return ModelRecord(id=f"t/m{number}", path=Path(f"m{number}.safetensors"), split=split, tree="t", labels=[label],
                       metadata=metadata)


def population() -> list[ModelRecord]:
    records = [record(i, ["red star", "blue heart", "green ring"][i % 3], "train", lr=str(1e-4 * (1 + i)), rank=4,
                      template="a photo of a {}") for i in range(30)]
    records += [record(30 + i, "purple star", "test_holdout", lr=1e-3, rank=8) for i in range(3)]
    return records


def test_the_table_has_a_row_per_model_with_derived_facets_and_numeric_metadata():
    table = model_table(population())
    assert list(table.columns[:7]) == ["model", "tree", "split", "concept", "seen", "colour word", "other words"]
    assert table["lr"].dtype == float and table["rank"].dtype == float  # "1e-4" strings read as numbers
    assert list(table["seen"][:3]) == [SEEN] * 3 and list(table["seen"][-3:]) == [HELD_OUT] * 3
    assert list(table["colour word"][-3:]) == ["purple"] * 3 and list(table["other words"][-3:]) == ["star"] * 3
    assert table["template"][31] == ""  # missing text metadata: empty, not "None"


def test_fields_are_continuous_when_numeric_with_many_values_else_categorical():
    table = model_table(population())
    assert field_kind(table["lr"]) == "continuous"
    assert field_kind(table["rank"]) == "categorical" and field_kind(table["concept"]) == "categorical"
    assert "tree" not in colour_fields(table)  # one value: nothing to colour by
    assert "lr" in colour_fields(table) and "lr" not in shape_fields(table) and "other words" in shape_fields(table)


def test_concept_parts_and_colours_follow_the_colour_word():
    assert concept_parts("red star") == ("red", "star") and concept_parts("goldfish") == ("", "goldfish")
    colours = concept_colours(["red star", "yellow square", "red cross", "goldfish", "purple"])
    assert colours["red star"] == colours["red cross"] == COLOUR_WORDS["red"]
    assert colours["yellow square"] == COLOUR_WORDS["yellow"] and colours["purple"] == COLOUR_WORDS["purple"]
    assert colours["goldfish"] not in COLOUR_WORDS.values()


def test_shape_words_become_their_marker_symbols_and_others_distinct_ones():
    symbols = symbols_for(["star", "ring", "blob", "thing"])
    assert symbols["star"] == "star" and symbols["ring"] == "circle-open"
    assert len(set(symbols.values())) == 4


def test_text_matches_need_every_word_anywhere_in_the_fields():
    table = model_table(population())
    purple = text_matches(table, "purple")
    assert list(np.flatnonzero(purple)) == [30, 31, 32]
    assert text_matches(table, "STAR").sum() == 13 and text_matches(table, "red star holdout").sum() == 0
    assert text_matches(table, "t/m3").sum() == 4 and text_matches(table, "t/m31").sum() == 1  # ids are fields too
    assert not text_matches(table, "  ").any()
