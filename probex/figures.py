"""Plotly figure builders shared by the explorer app and the notebooks.

Each builder is pure: data in, a ``plotly.graph_objects.Figure`` out, nothing drawn or saved.
The app shows it with ``st.plotly_chart``, a notebook by leaving it last in a cell, the CLI
writes it with ``fig.write_html``.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from typing import Any, Mapping, Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from probex.language.atlas_figure import atlas_figure  # noqa: F401  (the atlas figure lives beside the atlas)
from probex.errors import ProbeXError
from probex.trees.dendrogram import ABOVE_CUT_COLOR, DendrogramData

MAX_LEAF_LABELS = 60  # more leaves than this: no model ids under the axis (hover still tells)


@dataclass
class DendrogramMark:
    """A model drawn on a dendrogram (e.g. an upload): a star beside its nearest model, with a hover text.

    ``panel`` is the architecture's index among the panels; ``near_model`` the id of the leaf to
    stand beside (else the middle of ``tree``'s leaves); ``tree`` the found tree it joins, or None.
    """

    panel: int
    text: str
    tree: str | None = None
    near_model: str | None = None


def dendrogram_figure(source: Any, architecture: int | str | None = None, max_leaves: int = 200,
                      title: str | None = None, labels: Mapping[str, str] | None = None,
                      colours: Mapping[str, str] | None = None, panel_titles: Sequence[str] | None = None,
                      mark: DendrogramMark | None = None) -> go.Figure:
    """The dendrogram of a fitted TreeRouter: links coloured by tree, the cut as a dashed line.

    ``source`` is a fitted ``TreeRouter`` (every architecture side by side, or only
    ``architecture``), a ``DendrogramData`` or a list of them. Leaves show the model id (when
    there are at most 60) and, on hover, the id, the tree found, the true tree when known and,
    for a truncated leaf (more than ``max_leaves`` models), how many models it holds. Hovering
    the top of a merge shows how many models it joins and its height.

    Args:
        labels: found tree name -> the name to show (e.g. from ``probex.trees.naming.tree_labels``).
        colours: tree name (found or shown) -> colour, to match the trees' colours elsewhere.
        panel_titles: one title per panel (default: the architecture and the layer clustered on).
        mark: a model to draw on the dendrogram (see :class:`DendrogramMark`).
    """
    panels = _dendrograms(source, architecture, max_leaves)
    titles = list(panel_titles) if panel_titles is not None else [_panel_title(data) for data in panels]
    figure = make_subplots(rows=1, cols=len(panels), shared_yaxes=False,
                           subplot_titles=titles if len(panels) > 1 else None)
    shown_in_legend: set[str] = set()
    for column, data in enumerate(panels, start=1):
        recolour = _recolouring(data, labels, colours)
        _draw_links(figure, data, column, shown_in_legend, labels or {}, recolour)
        _draw_merges(figure, data, column)
        _draw_leaves(figure, data, column, labels or {}, recolour)
        figure.add_hline(y=data.cut_height, line_dash="dash", line_color="#444444", row=1, col=column,
                         annotation_text=f"cut {data.cut_height:.3g}", annotation_position="top left")
        figure.update_yaxes(title_text="merge height" if column == 1 else None, row=1, col=column)
        if mark is not None and mark.panel == column - 1:
            _draw_mark(figure, data, column, mark, recolour)
    single = titles[0].replace("<br>", " — ") if len(panels) == 1 else None
    figure.update_layout(
        title=dict(text=title or (f"Model Trees: {single}" if single else "Model Trees"), y=0.97, yanchor="top"),
        template="plotly_white", hovermode="closest", legend_title_text="tree",
        height=520, margin=dict(l=60, r=20, t=120 if len(panels) > 1 else 70, b=120))
    return figure


def _recolouring(data: DendrogramData, labels: Mapping[str, str] | None,
                 colours: Mapping[str, str] | None) -> dict[str, str]:
    """The data's colour of each tree -> the colour to draw it in (the same colour when none is given)."""
    recolour: dict[str, str] = {}
    for tree, colour in data.tree_colors.items():
        wanted = (colours or {}).get(tree) or (colours or {}).get((labels or {}).get(tree, tree))
        recolour[colour] = wanted or colour
    return recolour
def _dendrograms(source: Any, architecture: int | str | None, max_leaves: int) -> list[DendrogramData]:
    if isinstance(source, DendrogramData):
        return [source]
    if isinstance(source, Sequence) and all(isinstance(item, DendrogramData) for item in source):
        return list(source)
    if hasattr(source, "dendrogram") and hasattr(source, "architectures_"):
        if architecture is not None:
            return [source.dendrogram(architecture, max_leaves=max_leaves)]
        return [source.dendrogram(index, max_leaves=max_leaves) for index in range(len(source.architectures_))]
    raise TypeError(f"dendrogram_figure: expected a fitted TreeRouter or DendrogramData, got {type(source).__name__}")


def _panel_title(data: DendrogramData, width: int = 36) -> str:
    """The architecture (shortened to ``width`` characters) and, on a second line, the layer clustered on."""
    name = data.architecture if len(data.architecture) <= width else data.architecture[: width - 1] + "…"
    layer = f"<br>{data.layer}" if data.layer and data.layer not in data.architecture else ""
    return f"{name}{layer}"


def _draw_links(figure: go.Figure, data: DendrogramData, column: int, shown_in_legend: set[str],
                labels: Mapping[str, str], recolour: Mapping[str, str]) -> None:
    """One line trace per colour (a tree, or grey above the cut), links separated by gaps."""
    tree_of_colour = {colour: tree for tree, colour in data.tree_colors.items()}
    by_colour: dict[str, tuple[list, list]] = {}
    for xs, ys, colour in zip(data.scipy["icoord"], data.scipy["dcoord"], data.scipy["color_list"]):
        x_line, y_line = by_colour.setdefault(colour, ([], []))
        x_line.extend(list(xs) + [None])
        y_line.extend(list(ys) + [None])
    for colour, (xs, ys) in by_colour.items():
        tree = tree_of_colour.get(colour)
        name = labels.get(tree, tree) if tree else ("above the cut" if colour == ABOVE_CUT_COLOR else colour)
        figure.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line=dict(color=recolour.get(colour, colour), width=1.5),
                                    name=escape(str(name)), legendgroup=name, showlegend=name not in shown_in_legend,
                                    hoverinfo="skip"), row=1, col=column)
        shown_in_legend.add(name)


def merge_points(data: DendrogramData) -> list[tuple[float, float, int]]:
    """(x, height, models joined) of the top of every merge of a dendrogram, from its drawn links."""
    leaf_size = {10 * i + 5: size for i, size in enumerate(data.leaf_sizes)}
    size_at: dict[tuple[float, float], int] = {}
    merges = []
    for xs, ys in sorted(zip(data.scipy["icoord"], data.scipy["dcoord"]), key=lambda link: link[1][1]):
        sizes = []
        for x, y in ((xs[0], ys[0]), (xs[3], ys[3])):  # a leg starts at its child's top: a merge, or a leaf at 0
            key = (round(x, 6), round(y, 9))
            sizes.append(size_at[key] if y > 0 and key in size_at else leaf_size.get(int(round(x)), 1))
        top = ((xs[1] + xs[2]) / 2, ys[1])
        size_at[(round(top[0], 6), round(top[1], 9))] = sum(sizes)
        merges.append((top[0], top[1], sum(sizes)))
    return merges


def _draw_merges(figure: go.Figure, data: DendrogramData, column: int) -> None:
    """Invisible markers at the merges' tops: hovering one tells how many models it joins and at what height."""
    merges = merge_points(data)
    if not merges:
        return
    figure.add_trace(go.Scatter(
        x=[x for x, _, _ in merges], y=[y for _, y, _ in merges], mode="markers", showlegend=False, name="merges",
        marker=dict(size=9, color="rgba(0,0,0,0)"),
        hovertext=[f"merge of {size:,} models<br>height {height:.3g}" for _, height, size in merges],
        hoverinfo="text"), row=1, col=column)


def _draw_mark(figure: go.Figure, data: DendrogramData, column: int, mark: DendrogramMark,
               recolour: Mapping[str, str]) -> None:
    """A star under the leaves: beside the model ``mark.near_model``, else amid ``mark.tree``'s leaves."""
    positions = [10 * i + 5 for i in range(len(data.leaf_ids))]
    if mark.near_model in data.leaf_ids:
        x = positions[data.leaf_ids.index(mark.near_model)]
    else:
        own = [p for p, tree in zip(positions, data.leaf_trees) if tree == mark.tree] or positions or [0]
        x = sum(own) / len(own)
    heights = [max(ys) for ys in data.scipy["dcoord"]] or [1.0]
    colour = recolour.get(data.tree_colors.get(mark.tree, ""), "#111111") if mark.tree else "#111111"
    figure.add_trace(go.Scatter(
        x=[x], y=[-0.06 * max(heights)], mode="markers+text", name="your model", text=["your model"],
        textposition="bottom center", showlegend=True,
        marker=dict(symbol="star", size=18, color="#ffd400", line=dict(width=2, color=colour)),
        hovertext=[mark.text], hoverinfo="text"), row=1, col=column)


def _draw_leaves(figure: go.Figure, data: DendrogramData, column: int, labels: Mapping[str, str],
                 recolour: Mapping[str, str]) -> None:
    positions = [10 * i + 5 for i in range(len(data.leaf_ids))]
    hover = []
    for model_id, tree, truth, size in zip(data.leaf_ids, data.leaf_trees, data.leaf_true_trees, data.leaf_sizes):
        lines = [f"<b>{escape(str(model_id))}</b>", f"tree found: {escape(str(labels.get(tree, tree)))}"]
        if truth is not None:
            lines.append(f"true tree: {escape(str(truth))}")
        if size > 1:
            lines.append(f"{size} models")
        hover.append("<br>".join(lines))
    colours = [data.tree_colors.get(tree, ABOVE_CUT_COLOR) for tree in data.leaf_trees]
    figure.add_trace(go.Scatter(
        x=positions, y=[0.0] * len(positions), mode="markers", showlegend=False, name="models",
        marker=dict(color=[recolour.get(colour, colour) for colour in colours],
                    size=[6 if size == 1 else 10 for size in data.leaf_sizes], line=dict(width=0)),
        customdata=list(data.leaf_ids), hovertext=hover, hoverinfo="text"), row=1, col=column)
    labelled = len(positions) <= MAX_LEAF_LABELS
    figure.update_xaxes(tickvals=positions if labelled else [], ticktext=data.leaf_ids if labelled else [],
                        tickangle=-60, showgrid=False, zeroline=False,
                        title_text=None if labelled else f"{sum(data.leaf_sizes)} models (hover for ids)",
                        row=1, col=column)


# -- the explorer's other figures (also for notebooks) ---------------------------------------------

def weight_map_figure(X: Any, colourings: dict[str, Sequence[Any]], ids: Sequence[str] | None = None,
                      title: str = "Raw weights, 2-D (PCA)", colours: Mapping[str, str] | None = None,
                      marks: Sequence[dict] = (), selected: Sequence[int] | None = None,
                      highlight: Any = None) -> go.Figure:
    """Models as points on the first two principal components of their raw weights, one panel per colouring.

    Args:
        X: one layer of N models: a LayerBank (dense or LoRA factors, read a chunk at a time), a
            tensor or an array [N, d_W, d_H] or [N, D] (mapped by :mod:`probex.trees.weight_map`;
            large layers through a random projection, and the title says so), or their
            :class:`~probex.trees.weight_map.WeightMap` (computed once, e.g. cached by an app that
            places uploads on it with ``WeightMap.place``).
        colourings: panel title -> one category per model (e.g. ``{"tree found": ..., "true tree": ...}``);
            a None category is drawn as "unknown".
        ids: the model ids shown on hover.
        colours: category -> colour (e.g. one colour per tree, the same in every panel).
        marks: extra points drawn on every panel, e.g. an upload: dicts with x, y, text and
            optionally colour.
        selected: rows of selected models (drawn selected, the rest faded).
        highlight: [N] bool, models ringed on every panel (e.g. the ones most like a selection).

    Each model point's ``customdata`` is its row, so an app can map a selection back to models.
    """
    import numpy as np

    from probex.trees.weight_map import WeightMap, weight_map

    mapped = X if isinstance(X, WeightMap) else weight_map(X)
    if mapped.method != "exact":
        title = f"{title} ({mapped.method})"
    coordinates, variance = mapped.coordinates, mapped.variance
    ids = list(ids) if ids is not None else [str(i) for i in range(len(coordinates))]
    figure = make_subplots(rows=1, cols=len(colourings), subplot_titles=list(colourings),
                           horizontal_spacing=0.08)
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
               "#bcbd22", "#17becf"]
    chosen = None
    if selected is not None:
        chosen = np.zeros(len(coordinates), dtype=bool)
        chosen[np.asarray(list(selected), dtype=np.int64)] = True
    for column, (panel, categories) in enumerate(colourings.items(), start=1):
        categories = ["unknown" if c is None else str(c) for c in categories]
        for number, category in enumerate(sorted(set(categories))):
            rows = [i for i, c in enumerate(categories) if c == category]
            extra = {} if chosen is None else dict(selectedpoints=np.flatnonzero(chosen[rows]).tolist(),
                                                   unselected=dict(marker=dict(opacity=0.15)))
            figure.add_trace(go.Scattergl(
                x=coordinates[rows, 0], y=coordinates[rows, 1], mode="markers", name=escape(category),
                legendgroup=f"{panel}:{category}", legendgrouptitle_text=escape(panel) if number == 0 else None,
                marker=dict(size=6, opacity=0.8, color=(colours or {}).get(category, palette[number % len(palette)])),
                customdata=rows, hovertext=[f"<b>{escape(ids[i])}</b><br>{escape(panel)}: {escape(category)}" for i in rows],
                hoverinfo="text", **extra), row=1, col=column)
        if highlight is not None and np.asarray(highlight).any():
            rows = np.flatnonzero(np.asarray(highlight))
            figure.add_trace(go.Scattergl(
                x=coordinates[rows, 0], y=coordinates[rows, 1], mode="markers", name="more like these",
                showlegend=column == 1, marker=dict(size=11, color="rgba(0,0,0,0)", line=dict(width=1.5, color="#111")),
                customdata=rows, hoverinfo="skip"), row=1, col=column)
        for mark in marks:
            figure.add_trace(go.Scatter(
                x=[mark["x"]], y=[mark["y"]], mode="markers+text", name=mark.get("name", "your model"),
                text=[mark.get("label", "your model")], textposition="top center", showlegend=column == 1,
                marker=dict(symbol="star", size=18, color="#ffd400", line=dict(width=2, color=mark.get("colour", "#111"))),
                customdata=[-1], hovertext=[mark["text"]], hoverinfo="text"), row=1, col=column)
        figure.update_xaxes(title_text=f"PC 1 ({_share(variance[0])})", row=1, col=column)
        figure.update_yaxes(title_text=f"PC 2 ({_share(variance[1])})" if len(variance) > 1 else "PC 2",
                            row=1, col=column)
    figure.update_layout(title=dict(text=title, y=0.97, yanchor="top"), template="plotly_white", height=480,
                         legend=dict(groupclick="toggleitem"), margin=dict(l=60, r=20, t=90, b=50),
                         uirevision="weight-map")
    return figure


def _share(value: float) -> str:
    """A share of the variance as a person reads it: "83%", "<1%"."""
    return "<1% of the variance" if value < 0.005 else f"{value:.0%}"


def layer_sweep_figure(scores: Sequence[Any], title: str = "Layer sweep: validation score per layer") -> go.Figure:
    """A bar per swept layer (validation score, test score on hover), the best layer by validation marked.

    ``scores``: LayerScore records or dicts with layer, val, test, n_parameters (and zero_shot_test).
    """
    rows = [score if isinstance(score, dict) else vars(score) for score in scores]
    if not rows:
        raise ProbeXError("layer_sweep_figure: no layer scores to draw")
    best = max(range(len(rows)), key=lambda i: (rows[i]["val"], -rows[i].get("n_parameters", 0), -i))
    hover = []
    for row in rows:
        lines = [f"<b>{row['layer']}</b>", f"val {row['val']:.3f}"]
        if row.get("test") is not None:
            lines.append(f"test {row['test']:.3f}")
        if row.get("zero_shot_test") is not None:
            lines.append(f"zero-shot test {row['zero_shot_test']:.3f}")
        if row.get("n_parameters"):
            lines.append(f"{row['n_parameters']:,} parameters")
        hover.append("<br>".join(lines))
    figure = go.Figure(go.Bar(
        x=[row["layer"] for row in rows], y=[row["val"] for row in rows], hovertext=hover, hoverinfo="text",
        marker_color=["#d62728" if i == best else "#9ecae1" for i in range(len(rows))], name="validation"))
    figure.add_annotation(x=rows[best]["layer"], y=rows[best]["val"], text=f"best: {rows[best]['val']:.3f}",
                          showarrow=True, arrowhead=2, ay=-30)
    figure.update_layout(title=title, template="plotly_white", height=420, yaxis_title="validation score",
                         yaxis_range=[0, 1.08], xaxis_tickangle=-40, margin=dict(l=60, r=20, t=60, b=140))
    return figure


def training_curves_figure(history: Sequence[Any], title: str = "Training") -> go.Figure:
    """Training loss and validation score per epoch (EpochLog records or dicts), the best epoch marked."""
    rows = [entry if isinstance(entry, dict) else vars(entry) for entry in history]
    figure = make_subplots(specs=[[{"secondary_y": True}]])
    epochs = [row["epoch"] for row in rows]
    figure.add_trace(go.Scatter(x=epochs, y=[row["train_loss"] for row in rows], mode="lines",
                                name="training loss", line=dict(color="#1f77b4")), secondary_y=False)
    if any(row.get("val_score") is not None for row in rows):
        figure.add_trace(go.Scatter(x=epochs, y=[row.get("val_score") for row in rows], mode="lines",
                                    name="validation score", line=dict(color="#2ca02c")), secondary_y=True)
        best = rows[-1].get("best_epoch") if rows else None
        if best:
            figure.add_vline(x=best, line_dash="dot", line_color="#444444", annotation_text=f"best epoch {best}")
    figure.update_xaxes(title_text="epoch")
    figure.update_yaxes(title_text="training loss", secondary_y=False)
    figure.update_yaxes(title_text="validation score", secondary_y=True)
    figure.update_layout(title=title, template="plotly_white", height=360, margin=dict(l=60, r=60, t=60, b=50))
    return figure


def image_grid_figure(images: Sequence[Any], titles: Sequence[str] | None = None, columns: int = 8,
                      title: str | None = None, tile_px: int = 90) -> go.Figure:
    """Images in a grid, one tile each: a model's training images, or the images of search hits.

    Args:
        images: image files (any format Pillow reads) or arrays [H, W, 3] uint8.
        titles: one caption per image (shown above its tile), or None.
        columns: tiles per row.
        tile_px: the drawn size of one tile in pixels (small images are scaled up, unsmoothed).
    """
    import math
    from pathlib import Path

    import numpy as np
    from PIL import Image

    images = list(images)
    if not images:
        raise ProbeXError("image_grid_figure: no images to draw")
    if titles is not None and len(titles) != len(images):
        raise ProbeXError(f"image_grid_figure: {len(titles)} titles for {len(images)} images")
    columns = max(1, min(columns, len(images)))
    rows = math.ceil(len(images) / columns)
    figure = make_subplots(rows=rows, cols=columns, subplot_titles=list(titles) if titles is not None else None,
                           horizontal_spacing=0.02, vertical_spacing=0.25 / rows if titles is not None else 0.02)
    for number, image in enumerate(images):
        pixels = image if isinstance(image, np.ndarray) else np.asarray(Image.open(image).convert("RGB"))
        name = "" if isinstance(image, np.ndarray) else Path(image).name
        figure.add_trace(go.Image(z=pixels, name=name, hoverinfo="name" if name else "skip"),
                         row=number // columns + 1, col=number % columns + 1)
    figure.update_xaxes(visible=False)
    figure.update_yaxes(visible=False)
    figure.update_annotations(font_size=10)
    top = 60 if title else 30
    figure.update_layout(title=title, template="plotly_white", width=columns * tile_px + 40,
                         height=rows * (tile_px + (24 if titles is not None else 4)) + top,
                         margin=dict(l=20, r=20, t=top, b=10))
    return figure
