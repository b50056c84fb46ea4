"""The atlas as a plotly figure: models coloured and shaped by any field, words, prompts, highlights and a selection.

Pure: an :class:`~probex.language.atlas.Atlas` (and optionally its model table from
:func:`probex.language.facets.model_table`) in, a ``plotly.graph_objects.Figure`` out. Models are
WebGL markers (``Scattergl``), so 20,000 of them pan and hover smoothly. Each model point's
``customdata`` is its row in the atlas's model order (anchors and prompts carry -1), so an app
maps a selection back to models without looking at ids. Re-exported by :mod:`probex.figures`.
"""

from __future__ import annotations

import math
from html import escape
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence

import numpy as np
import plotly.graph_objects as go

from probex.errors import ProbeXError
from probex.language.facets import (HELD_OUT, QUALITATIVE, SEEN, category_labels, concept_colours, concept_parts,
                                    field_kind, model_table, symbols_for)

if TYPE_CHECKING:
    import pandas

#: The atlas points' own columns accepted as ``color`` (older name -> the model table's field).
LEGACY_FIELDS = {"label": "concept", "split": "split", "tree": "tree"}
#: Colour scales: numbers spanning more than this ratio are drawn on a log10 scale.
LOG_RATIO = 100.0
DIMMED_OPACITY = 0.12
#: More categories than this are drawn as one trace per colour (see _categorical).
MAX_TRACES = 40
#: Shapes (per-point marker symbols) double the cost of each WebGL redraw (pan, zoom, hover); past this
#: many models an app leaves them off unless asked (benchmarks/bench_app.py, atlas20k).
SHAPES_BY_DEFAULT_UP_TO = 5_000
SPLIT_COLOURS = {"train": "#1f77b4", "val": "#2ca02c", "test": "#ff7f0e", "val_holdout": "#9467bd",
                 "test_holdout": "#d62728"}


def atlas_figure(atlas: Any, color: str = "concept", title: Optional[str] = None, height: int = 620,
                 show_anchor_text: bool = True, table: Optional["pandas.DataFrame"] = None, shape: Optional[str] = None,
                 highlight: Optional[np.ndarray] = None, selected: Optional[Sequence[int]] = None,
                 colours: Optional[Mapping[str, str]] = None, max_labels: int = 80,
                 highlight_name: str = "matches") -> go.Figure:
    """Models as dots, the tree's class names as labelled diamonds, prompts as stars.

    Args:
        atlas: from :func:`probex.language.atlas.build_atlas`.
        color: a field of ``table`` (or "label", the older name of "concept"); categorical
            fields get one legend entry per value (click to hide, double-click to isolate),
            continuous ones (e.g. ``lr``) a colour scale (log10 when they span over 100x).
        table: one row per model of the atlas, in its order (default: ``model_table`` of its records).
        shape: a categorical field drawn as marker symbols ("star" models as stars, ...), or None.
        highlight: [N] bool, models to bring forward (the rest are dimmed), e.g. search matches.
        selected: rows of the selected models (drawn selected, the rest faded), or None.
        colours: category -> colour overrides (e.g. one colour per tree on every page).
        max_labels: at most this many word labels are written; overlapping ones are left to hover.
    """
    points = atlas.points
    models = points[points["kind"] == "model"].reset_index(drop=True)
    if table is None:
        table = _table_of(atlas, models)
    field = LEGACY_FIELDS.get(color, color)
    if field not in table.columns:
        raise ProbeXError(f"atlas_figure: color must be one of {tuple(LEGACY_FIELDS) + tuple(table.columns)}; got {color!r}")
    if len(table) != len(models):
        raise ProbeXError(f"atlas_figure: the table has {len(table)} rows for {len(models)} models")
    hover = _hover(models, table)
    symbols = _symbols(table, shape)
    figure, drawn = go.Figure(), []  # drawn: the models' traces, joined to the figure's at the end (see _points)
    if field_kind(table[field]) == "continuous":
        _continuous(drawn, models, table[field].to_numpy(dtype=float), field, hover, symbols, highlight, selected)
    else:
        _categorical(drawn, models, table, field, hover, symbols, highlight, selected, colours)
    if shape is not None:
        _shape_legend(figure, table, shape)
    if highlight is not None and highlight.any():
        rows = np.flatnonzero(highlight)
        figure.add_trace(go.Scattergl(
            x=models["x"].to_numpy(np.float32)[rows], y=models["y"].to_numpy(np.float32)[rows], mode="markers",
            name=highlight_name, marker=dict(size=12, color="rgba(0,0,0,0)", line=dict(width=1.5, color="#111111")),
            customdata=rows.astype(np.int32), hoverinfo="skip"))
    anchors = points[points["kind"] == "anchor"]
    word_colours = _word_colours(list(anchors["label"]), field, colours)
    if len(anchors):
        colours_of = [word_colours.get(label, "#555555") for label in anchors["label"]]
        figure.add_trace(go.Scattergl(
            x=anchors["x"], y=anchors["y"], mode="markers", name="words (class names)",
            marker=dict(symbol="diamond-open", size=10, color=colours_of, line=dict(width=2)),
            customdata=[-1] * len(anchors), hovertext=[f"word: {escape(str(label))}" for label in anchors["label"]],
            hoverinfo="text"))
        if show_anchor_text:
            _word_labels(figure, anchors, points, colours_of, max_labels, height)
    prompts = points[points["kind"] == "prompt"]
    if len(prompts):
        figure.add_trace(go.Scatter(
            x=prompts["x"], y=prompts["y"], mode="markers+text", name="prompts",
            text=[escape(str(label)) for label in prompts["label"]],
            textposition="bottom center", textfont=dict(size=12, color="#111111"),
            marker=dict(symbol="star", size=18, color="#ffd400", line=dict(width=1.5, color="#111111")),
            customdata=[-1] * len(prompts), hovertext=[f"prompt: {escape(str(label))}" for label in prompts["label"]],
            hoverinfo="text"))
    subtitle = getattr(atlas, "message", None)
    figure.update_layout(
        title=dict(text=title or f"Atlas: {len(models):,} models and {len(anchors)} words in one space"
                   + (f"<br><sup>{subtitle}</sup>" if subtitle else ""), y=0.98, yanchor="top"),
        template="plotly_white", hovermode="closest", height=height,
        legend=dict(title_text=escape(field), itemsizing="constant", groupclick="toggleitem"),
        margin=dict(l=40, r=20, t=70, b=40), uirevision="atlas")
    method = "PCA" if getattr(atlas, "method", "umap") == "pca" else "UMAP"
    figure.update_xaxes(title_text=f"{method} 1", showticklabels=False, zeroline=False)
    figure.update_yaxes(title_text=f"{method} 2", showticklabels=False, zeroline=False)
    return go.Figure(data=drawn + list(figure.data), layout=figure.layout, _validate=False)  # both already built


def _table_of(atlas: Any, models: "pandas.DataFrame") -> "pandas.DataFrame":
    index = getattr(atlas, "index", None)
    if index is not None and len(index.records) == len(models):
        return model_table(index.records)
    import pandas as pd

    return pd.DataFrame({"model": models["model_id"], "tree": models["tree"], "split": models["split"],
                         "concept": models["label"]})


def _hover(models: "pandas.DataFrame", table: "pandas.DataFrame") -> np.ndarray:
    """The models' hover texts, as a numpy string array (traces take slices of it; plotly copies a figure
    twice on its way to JSON, which costs a list of 20,000 strings 0.1-0.2 s and an array a memcpy)."""
    concepts = table["concept"] if "concept" in table else models["label"]
    splits = table["split"] if "split" in table else models["split"]
    escaped: dict[str, str] = {}  # concepts and splits repeat: each distinct value is escaped once

    def once(value: Any) -> str:
        text = str(value or "-")
        known = escaped.get(text)
        if known is None:
            known = escaped[text] = escape(text)
        return known

    return np.array([f"<b>{escape(str(model_id))}</b><br>{once(concept)} · {once(split)}"
                     for model_id, concept, split in zip(models["model_id"].tolist(), concepts.tolist(), splits.tolist())],
                    dtype=str)


def _symbols(table: "pandas.DataFrame", shape: Optional[str]) -> Optional[np.ndarray]:
    if shape is None:
        return None
    if shape not in table.columns:
        raise ProbeXError(f"atlas_figure: shape must be a field of the table; got {shape!r}")
    values = category_labels(table[shape])
    symbol_of = symbols_for(values)
    return np.array([symbol_of[value] for value in values], dtype=object)


def category_colours(field: str, categories: Sequence[str], overrides: Optional[Mapping[str, str]] = None) -> dict[str, str]:
    """The colour of each category of a field: colour words for concepts, fixed ones for splits and seen/held out."""
    if field in ("concept", "colour word"):
        colours = concept_colours(categories)
    elif field == "split":
        colours = {c: SPLIT_COLOURS.get(c, QUALITATIVE[n % len(QUALITATIVE)]) for n, c in enumerate(categories)}
    elif field == "seen":
        colours = {SEEN: "#4c72b0", HELD_OUT: "#dd5511"}
    else:
        colours = {c: QUALITATIVE[n % len(QUALITATIVE)] for n, c in enumerate(categories)}
    colours.update({c: colour for c, colour in (overrides or {}).items() if c in categories})
    colours.setdefault("(none)", "#bbbbbb")
    return colours


def _categorical(drawn: list, models, table, field: str, hover: np.ndarray, symbols, highlight, selected,
                 overrides) -> None:
    """One WebGL trace per category (a legend entry that hides it), or, past ``MAX_TRACES`` categories, one
    per colour (e.g. "red: 8 concepts"): each trace costs a redraw, and 64 of them made panning 2-3x slower."""
    values = np.array(category_labels(table[field]), dtype=object)
    categories = sorted(set(values), key=lambda value: (value == "(none)", _natural(value)))
    colours = category_colours(field, categories, overrides)
    groups: dict[str, list[str]] = {}
    for category in categories:
        key = category if len(categories) <= MAX_TRACES else colours.get(category, "#555555")
        groups.setdefault(key, []).append(category)
    x, y = models["x"].to_numpy(), models["y"].to_numpy()
    chosen = _as_mask(selected, len(models))
    for members in groups.values():
        rows = np.flatnonzero(np.isin(values, members))
        marker = dict(size=7, color=colours.get(members[0], "#555555"), line=dict(width=0),
                      opacity=_opacity(highlight, rows))
        if symbols is not None:
            marker["symbol"] = _one_or_many(symbols[rows])
        drawn.append(_points(
            x=x[rows], y=y[rows], mode="markers", name=escape(_group_name(members, field)), legendgroup=members[0],
            marker=marker, customdata=rows, hovertext=hover[rows], hoverinfo="text",
            **_selection(chosen, rows)))


def _group_name(members: list[str], field: str) -> str:
    """A category's name, or for several sharing a colour: their common colour word and how many they are."""
    if len(members) == 1:
        return members[0]
    words = {concept_parts(member)[0] for member in members}
    common = words.pop() if len(words) == 1 else ""
    return f"{common}: {len(members)} {'concepts' if field == 'concept' else 'values'}" if common else \
        f"{len(members)} {field} values"


def _continuous(drawn: list, models, values: np.ndarray, field: str, hover, symbols, highlight, selected) -> None:
    finite = np.isfinite(values)
    shown, label = values, escape(field)
    positive = values[finite & (values > 0)]
    if finite.any() and len(positive) == finite.sum() and positive.max() / positive.min() > LOG_RATIO:
        shown, label = np.where(finite, np.log10(np.where(finite, values, 1.0)), np.nan), f"log10 {escape(field)}"
    x, y = models["x"].to_numpy(), models["y"].to_numpy()
    chosen = _as_mask(selected, len(models))
    rows = np.flatnonzero(finite)
    marker = dict(size=7, color=shown[rows], colorscale="Viridis", showscale=True, line=dict(width=0),
                  colorbar=dict(title=dict(text=label, side="top"), thickness=12, orientation="h", len=0.5, x=0.5,
                                xanchor="center", y=-0.06, yanchor="top"),  # under the map: the legend holds the right
                  opacity=_opacity(highlight, rows))
    if symbols is not None:
        marker["symbol"] = _one_or_many(symbols[rows])
    drawn.append(_points(
        x=x[rows], y=y[rows], mode="markers", name=field, marker=marker, customdata=rows,
        hovertext=np.array([f"{text}<br>{escape(field)}: {value:.4g}"
                            for text, value in zip(hover[rows].tolist(), values[rows].tolist())], dtype=str),
        hoverinfo="text",
        **_selection(chosen, rows)))
    missing = np.flatnonzero(~finite)
    if len(missing):
        drawn.append(_points(
            x=x[missing], y=y[missing], mode="markers", name=f"{escape(field)}: (none)",
            marker=dict(size=6, color="#bbbbbb", opacity=_opacity(highlight, missing)), customdata=missing,
            hovertext=hover[missing], hoverinfo="text", **_selection(chosen, missing)))


def _shape_legend(figure: go.Figure, table, shape: str) -> None:
    """Legend-only entries that say what each symbol means (grey, one per category)."""
    symbol_of = symbols_for(category_labels(table[shape]))
    for number, (category, symbol) in enumerate(sorted(symbol_of.items())):
        figure.add_trace(go.Scatter(  # SVG, no points: a legend entry that costs no WebGL draw
            x=[None], y=[None], mode="markers", name=escape(category), legendgroup=f"shape:{category}",
            legendgrouptitle_text=escape(shape) if number == 0 else None, showlegend=True, hoverinfo="skip",
            marker=dict(symbol=symbol, size=9, color="#666666")))


def _points(**properties: Any) -> go.Scattergl:
    """A WebGL trace of models, its per-point arrays taken as built here, not checked one element at a time.

    plotly checks every element of an array property on construction (each marker symbol against
    its ~500 names), and again when a trace is added to a figure: about 0.7 s for 20,000 models
    shaped by a field, on every colour change. The arrays built here hold valid values by
    construction; the tests check whole figures with plotly's validation (``go.Figure(figure.to_dict())``).
    Coordinates go as float32 and rows as int32: plotly sends NumPy arrays as typed arrays (``bdata``),
    half the bytes of float64 / int64, and a map needs no more precision than a screen has pixels."""
    for name in ("x", "y"):
        properties[name] = np.asarray(properties[name], dtype=np.float32)
    properties["customdata"] = np.asarray(properties["customdata"], dtype=np.int32)
    return go.Scattergl(_validate=False, **properties)


def _one_or_many(values: np.ndarray) -> Any:
    """One value when all are equal (a scalar is validated and sent once, not 20,000 times), else the array."""
    return values[0] if len(values) and (values == values[0]).all() else np.asarray(values, dtype=str)


def _opacity(highlight: Optional[np.ndarray], rows: np.ndarray) -> Any:
    if highlight is None or not highlight.any():
        return 0.85
    return np.where(highlight[rows], 1.0, DIMMED_OPACITY)


def _as_mask(selected: Optional[Sequence[int]], n: int) -> Optional[np.ndarray]:
    if selected is None:
        return None
    mask = np.zeros(n, dtype=bool)
    rows = np.asarray(list(selected), dtype=np.int64)
    mask[rows[(rows >= 0) & (rows < n)]] = True
    return mask


def _selection(chosen: Optional[np.ndarray], rows: np.ndarray) -> dict:
    """plotly's selection of one trace: the positions of its selected points, the rest faded."""
    if chosen is None:
        return {}
    return dict(selectedpoints=np.flatnonzero(chosen[rows]).tolist(), unselected=dict(marker=dict(opacity=0.15)),
                selected=dict(marker=dict(opacity=1.0)))


def _word_colours(words: list[str], field: str, overrides) -> dict[str, str]:
    """Words take their concept's colour when the models are coloured by concept or colour word, else grey."""
    if field not in ("concept", "colour word"):
        return {}
    return category_colours("concept", sorted(set(words)), overrides if field == "concept" else None)


def _word_labels(figure: go.Figure, anchors, points, colours: list[str], max_labels: int, height: int) -> None:
    """Write the words as annotations (hovering one shows the word, not a model under it), none overlapping."""
    span_x = float(points["x"].max() - points["x"].min()) or 1.0
    span_y = float(points["y"].max() - points["y"].min()) or 1.0
    char_w, line_h = span_x * 7.5 / 900, span_y * 18 / max(height - 110, 100)  # ~900 px wide plot, 10 px font
    placed: list[tuple[float, float, float, float]] = []
    annotations = []
    for x, y, label, colour in zip(anchors["x"], anchors["y"], anchors["label"], colours):
        if len(placed) >= max_labels:
            break
        half = len(str(label)) * char_w / 2
        box = (x - half, x + half, y, y + line_h)
        if any(box[0] < b[1] and b[0] < box[1] and box[2] < b[3] and b[2] < box[3] for b in placed):
            continue
        placed.append(box)
        annotations.append(dict(x=x, y=y, text=escape(str(label)), showarrow=False, yshift=10,
                                font=dict(size=10, color=colour), hovertext=f"word: {escape(str(label))}",
                                bgcolor="rgba(255,255,255,0.6)"))
    figure.update_layout(annotations=annotations)  # at once: adding them one by one copies the layout each time


def _natural(value: str) -> tuple:
    """Sort numbers by value and text alphabetically."""
    try:
        return (0, float(value), "")
    except ValueError:
        return (1, math.inf, value)
