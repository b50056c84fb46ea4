"""Facets of a population: one table of every field a map can be coloured, shaped or searched by.

A model carries a tree, a split, its concepts and free metadata (learning rate, steps, rank,
seed, template, ...). :func:`model_table` lays them out as one row per model, with two derived
facets: whether its concepts were seen in training or held out, and the parts of a concept
name (its colour word, e.g. "red" in "red star", and the rest, "star"). Each column is
categorical or continuous (:func:`field_kind`), so a figure can draw a legend or a colour
scale. :func:`concept_colours` gives concepts the colour their name says where it names one,
and :func:`text_matches` finds the models whose fields contain every word of a query::

    table = model_table(zoo.records)
    field_kind(table["lr"])                  # "continuous"
    concept_colours(table["concept"])        # {"red star": "#d62728", ...}
    text_matches(table, "purple")            # boolean mask: the purple models
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np

if TYPE_CHECKING:
    import pandas

    from probex.zoo import ModelRecord

#: Colour words and the colour each is drawn in (readable on white; "yellow" is darkened a little).
COLOUR_WORDS = {
    "red": "#d62728", "orange": "#ff7f0e", "yellow": "#e3c000", "gold": "#c9a300", "green": "#2ca02c",
    "lime": "#7fd320", "olive": "#808000", "teal": "#008080", "cyan": "#17becf", "turquoise": "#30c5b8",
    "blue": "#1f4fe0", "navy": "#1b2a80", "indigo": "#4b0082", "purple": "#7b2cbf", "violet": "#9b59d0",
    "magenta": "#d61fc4", "pink": "#f06ea9", "brown": "#8c564b", "maroon": "#800000", "beige": "#c8b88a",
    "black": "#222222", "grey": "#8a8a8a", "gray": "#8a8a8a", "silver": "#a8a8a8", "white": "#c7c7c7",
}
#: Words naming a plotly marker symbol (so that "star" models can be drawn as stars).
SYMBOL_WORDS = {
    "circle": "circle", "square": "square", "triangle": "triangle-up", "diamond": "diamond", "star": "star",
    "cross": "cross", "ring": "circle-open", "x": "x", "hexagon": "hexagon", "pentagon": "pentagon",
    "heart": "hexagram",  # plotly has no heart; a hexagram is the most distinct of what is left
}
OTHER_SYMBOLS = ("circle", "square", "diamond", "cross", "x", "triangle-up", "triangle-down", "star", "hexagon",
                 "pentagon", "hexagram", "star-diamond", "circle-open", "square-open", "diamond-open")
QUALITATIVE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
               "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#c7c7c7",
               "#dbdb8d", "#9edae5")
SEEN, HELD_OUT = "seen in training", "held out"
#: Fields derived from the records; metadata keys that collide get a "metadata: " prefix.
BUILT_IN = ("model", "tree", "split", "concept", "seen", "colour word", "other words")
#: At most this many distinct values: a numeric field is drawn as categories, not a colour scale.
MAX_NUMERIC_CATEGORIES = 12


def concept_parts(name: str) -> tuple[str, str]:
    """(colour word, the other words) of a concept name: "red star" -> ("red", "star"); ("", name) without one."""
    words = name.split()
    for number, word in enumerate(words):
        if word.lower() in COLOUR_WORDS:
            return word.lower(), " ".join(words[:number] + words[number + 1:])
    return "", name


def model_table(records: Sequence["ModelRecord"], train_split: str = "train") -> "pandas.DataFrame":
    """One row per model: model, tree, split, concept, seen, colour word, other words, then every metadata key.

    ``concept`` joins a model's concepts with "; "; ``seen`` says whether all of them occur among
    the ``train_split`` models of the same tree (SEEN) or not (HELD_OUT); the concept parts are
    those of the first concept. Metadata values that all read as numbers become numbers.
    """
    import pandas as pd

    seen_by_tree: dict = {}
    for record in records:
        if record.split == train_split:
            seen_by_tree.setdefault(record.tree, set()).update(record.labels)
    parts = [concept_parts(record.labels[0]) if record.labels else ("", "") for record in records]
    columns: dict[str, list] = {
        "model": [record.id for record in records],
        "tree": [record.tree or "" for record in records],
        "split": [record.split or "" for record in records],
        "concept": ["; ".join(record.labels) for record in records],
        "seen": [SEEN if record.labels and set(record.labels) <= seen_by_tree.get(record.tree, set()) else HELD_OUT
                 for record in records],
        "colour word": [colour for colour, _ in parts],
        "other words": [rest for _, rest in parts],
    }
    keys: list[str] = []
    for record in records:
        keys.extend(key for key in record.metadata if key not in keys)
    for key in keys:
        values = [record.metadata.get(key) for record in records]
        values = _as_numbers(values) or ["" if value is None else str(value) for value in values]
        if key in BUILT_IN and values == columns[key]:
            continue  # the metadata repeats a field already there (e.g. "concept")
        columns[key if key not in BUILT_IN else f"metadata: {key}"] = values
    return pd.DataFrame(columns)


def _as_numbers(values: list) -> list | None:
    """The values as floats when every present one reads as a number (None stays NaN), else None."""
    numbers = []
    for value in values:
        if value is None or value == "":
            numbers.append(float("nan"))
            continue
        if isinstance(value, bool):
            return None
        try:
            numbers.append(float(value))
        except (TypeError, ValueError):
            return None
    return numbers if any(np.isfinite(numbers)) else None


def field_kind(values: "pandas.Series") -> str:
    """"continuous" for a numeric field with more than ``MAX_NUMERIC_CATEGORIES`` distinct values, else "categorical"."""
    import pandas as pd

    if pd.api.types.is_numeric_dtype(values) and values.nunique(dropna=True) > MAX_NUMERIC_CATEGORIES:
        return "continuous"
    return "categorical"


def colour_fields(table: "pandas.DataFrame") -> list[str]:
    """The fields worth colouring by: every column but the id that takes more than one value."""
    return [name for name in table.columns if name != "model" and table[name].nunique(dropna=True) > 1]


def shape_fields(table: "pandas.DataFrame", max_values: int = len(OTHER_SYMBOLS)) -> list[str]:
    """The categorical fields with 2..``max_values`` values (one marker symbol each)."""
    return [name for name in colour_fields(table)
            if field_kind(table[name]) == "categorical" and table[name].nunique(dropna=True) <= max_values]


def category_labels(values: Iterable) -> list[str]:
    """Categories as text: numbers without a trailing ".0", missing values as "(none)"."""
    if hasattr(values, "tolist"):
        values = values.tolist()
    known: dict = {}  # (type, value) -> label: a column repeats few values
    labels = []
    for value in values:
        try:
            label = known.get((type(value), value))
        except TypeError:  # unhashable
            labels.append(_category_label(value))
            continue
        if label is None:
            label = known[(type(value), value)] = _category_label(value)
        labels.append(label)
    return labels


def _category_label(value: Any) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)) or value == "":
        return "(none)"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def concept_colours(names: Iterable[str]) -> dict[str, str]:
    """A colour per name: the colour its colour word names, else one from a qualitative palette."""
    colours, spare = {}, 0
    for name in sorted(set(names)):
        first = name.split("; ")[0]
        colour = COLOUR_WORDS.get(first.lower()) or COLOUR_WORDS.get(concept_parts(first)[0])
        if colour is None:
            colour, spare = QUALITATIVE[spare % len(QUALITATIVE)], spare + 1
        colours[name] = colour
    return colours


def symbols_for(values: Iterable[str]) -> dict[str, str]:
    """A marker symbol per category: the symbol a word names ("star" -> star), else the next unused one."""
    values = sorted(set(values))
    symbols = {value: SYMBOL_WORDS[value.lower()] for value in values if value.lower() in SYMBOL_WORDS}
    free = [symbol for symbol in OTHER_SYMBOLS if symbol not in symbols.values()] or list(OTHER_SYMBOLS)
    for number, value in enumerate(value for value in values if value not in symbols):
        symbols[value] = free[number % len(free)]
    return symbols


def text_matches(table: "pandas.DataFrame", query: str) -> np.ndarray:
    """[N] bool: the rows whose text fields (id, tree, split, concept, metadata) contain every word of ``query``.

    Case-insensitive substring matching per word, so "purple" finds "purple heart" and
    "purple ring", and "purple heart" finds only the first; an empty query matches nothing.
    """
    words = query.lower().split()
    if not words:
        return np.zeros(len(table), dtype=bool)
    text = row_text(table)
    mask = np.ones(len(table), dtype=bool)
    for word in words:
        mask &= text.str.contains(word, regex=False).to_numpy()
    return mask


def row_text(table: "pandas.DataFrame") -> "pandas.Series":
    """Each row's fields joined into one lower-case string (what :func:`text_matches` searches)."""
    parts = [table[name].astype(str) for name in table.columns]
    joined = parts[0].str.cat(parts[1:], sep=" | ") if len(parts) > 1 else parts[0]
    return joined.str.lower()
