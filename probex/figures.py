"""Plotly figure builders shared by the explorer app and the notebooks.

Each builder is pure: data in, a ``plotly.graph_objects.Figure`` out, nothing drawn or saved.
The app shows it with ``st.plotly_chart``, a notebook by leaving it last in a cell, the CLI
writes it with ``fig.write_html``.
"""

from __future__ import annotations

from typing import Any, Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from probex.errors import ProbeXError
from probex.trees.dendrogram import ABOVE_CUT_COLOR, DendrogramData

MAX_LEAF_LABELS = 60  # more leaves than this: no model ids under the axis (hover still tells)


def dendrogram_figure(source: Any, architecture: int | str | None = None, max_leaves: int = 200,
                      title: str | None = None) -> go.Figure:
    """The dendrogram of a fitted TreeRouter: links coloured by tree, the cut as a dashed line.

    ``source`` is a fitted ``TreeRouter`` (every architecture side by side, or only
    ``architecture``), a ``DendrogramData`` or a list of them. Leaves show the model id (when
    there are at most 60) and, on hover, the id, the tree found, the true tree when known and,
    for a truncated leaf (more than ``max_leaves`` models), how many models it holds.
    """
    panels = _dendrograms(source, architecture, max_leaves)
    figure = make_subplots(rows=1, cols=len(panels), shared_yaxes=False,
                           subplot_titles=[_panel_title(data) for data in panels] if len(panels) > 1 else None)
    shown_in_legend: set[str] = set()
    for column, data in enumerate(panels, start=1):
        _draw_links(figure, data, column, shown_in_legend)
        _draw_leaves(figure, data, column)
        figure.add_hline(y=data.cut_height, line_dash="dash", line_color="#444444", row=1, col=column,
                         annotation_text=f"cut {data.cut_height:.3g}", annotation_position="top left")
        figure.update_yaxes(title_text="merge height" if column == 1 else None, row=1, col=column)
    figure.update_layout(
        title=title or ("Model Trees: " + _panel_title(panels[0]).replace("<br>", " — ") if len(panels) == 1 else "Model Trees"),
        template="plotly_white", hovermode="closest", legend_title_text="tree",
        height=480, margin=dict(l=60, r=20, t=70, b=120))
    return figure


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


def _draw_links(figure: go.Figure, data: DendrogramData, column: int, shown_in_legend: set[str]) -> None:
    """One line trace per colour (a tree, or grey above the cut), links separated by gaps."""
    tree_of_colour = {colour: tree for tree, colour in data.tree_colors.items()}
    by_colour: dict[str, tuple[list, list]] = {}
    for xs, ys, colour in zip(data.scipy["icoord"], data.scipy["dcoord"], data.scipy["color_list"]):
        x_line, y_line = by_colour.setdefault(colour, ([], []))
        x_line.extend(list(xs) + [None])
        y_line.extend(list(ys) + [None])
    for colour, (xs, ys) in by_colour.items():
        name = tree_of_colour.get(colour, "above the cut" if colour == ABOVE_CUT_COLOR else colour)
        figure.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line=dict(color=colour, width=1.5), name=name,
                                    legendgroup=name, showlegend=name not in shown_in_legend, hoverinfo="skip"),
                         row=1, col=column)
        shown_in_legend.add(name)


def _draw_leaves(figure: go.Figure, data: DendrogramData, column: int) -> None:
    positions = [10 * i + 5 for i in range(len(data.leaf_ids))]
    hover = []
    for model_id, tree, truth, size in zip(data.leaf_ids, data.leaf_trees, data.leaf_true_trees, data.leaf_sizes):
        lines = [f"<b>{model_id}</b>", f"tree found: {tree}"]
        if truth is not None:
            lines.append(f"true tree: {truth}")
        if size > 1:
            lines.append(f"{size} models")
        hover.append("<br>".join(lines))
    figure.add_trace(go.Scatter(
        x=positions, y=[0.0] * len(positions), mode="markers", showlegend=False, name="models",
        marker=dict(color=[data.tree_colors.get(tree, ABOVE_CUT_COLOR) for tree in data.leaf_trees],
                    size=[6 if size == 1 else 10 for size in data.leaf_sizes], line=dict(width=0)),
        hovertext=hover, hoverinfo="text"), row=1, col=column)
    labelled = len(positions) <= MAX_LEAF_LABELS
    figure.update_xaxes(tickvals=positions if labelled else [], ticktext=data.leaf_ids if labelled else [],
                        tickangle=-60, showgrid=False, zeroline=False,
                        title_text=None if labelled else f"{sum(data.leaf_sizes)} models (hover for ids)",
                        row=1, col=column)


# -- the explorer's other figures (also for notebooks) ---------------------------------------------

def weight_map_figure(X: Any, colourings: dict[str, Sequence[Any]], ids: Sequence[str] | None = None,
                      title: str = "Raw weights, 2-D (PCA)") -> go.Figure:
    """Models as points on the first two principal components of their raw weights, one panel per colouring.

    Args:
        X: one layer of N models: a LayerBank (dense or LoRA factors, read a chunk at a time), a
            tensor or an array [N, d_W, d_H] or [N, D]. Large layers are mapped through a random
            projection, and the title says so (see :mod:`probex.trees.weight_map`).
        colourings: panel title -> one category per model (e.g. ``{"tree found": ..., "true tree": ...}``);
            a None category is drawn as "unknown".
        ids: the model ids shown on hover.
    """
    from probex.trees.weight_map import weight_map

    mapped = weight_map(X)
    coordinates, variance = mapped.coordinates, mapped.variance
    if mapped.method != "exact":
        title = f"{title} ({mapped.method})"
    ids = list(ids) if ids is not None else [str(i) for i in range(len(coordinates))]
    figure = make_subplots(rows=1, cols=len(colourings), subplot_titles=list(colourings),
                           horizontal_spacing=0.08)
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
               "#bcbd22", "#17becf"]
    for column, (panel, categories) in enumerate(colourings.items(), start=1):
        categories = ["unknown" if c is None else str(c) for c in categories]
        for number, category in enumerate(sorted(set(categories))):
            rows = [i for i, c in enumerate(categories) if c == category]
            figure.add_trace(go.Scatter(
                x=coordinates[rows, 0], y=coordinates[rows, 1], mode="markers", name=category,
                legendgroup=f"{panel}:{category}", legendgrouptitle_text=panel if number == 0 else None,
                marker=dict(size=6, opacity=0.8, color=palette[number % len(palette)]),
                hovertext=[f"<b>{ids[i]}</b><br>{panel}: {category}" for i in rows], hoverinfo="text"),
                row=1, col=column)
        figure.update_xaxes(title_text=f"PC 1 ({variance[0]:.0%})", row=1, col=column)
        figure.update_yaxes(title_text=f"PC 2 ({variance[1]:.0%})" if len(variance) > 1 else "PC 2", row=1, col=column)
    figure.update_layout(title=title, template="plotly_white", height=460, legend=dict(groupclick="toggleitem"),
                         margin=dict(l=60, r=20, t=70, b=50))
    return figure


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


ATLAS_COLORINGS = ("label", "split", "tree", "kind")
ATLAS_MAX_LEGEND = 30  # more colour groups than this: no legend (hover still tells)


def atlas_figure(atlas: Any, color: str = "label", title: str | None = None, height: int = 620,
                 show_anchor_text: bool = True) -> go.Figure:
    """The atlas (``probex.language.atlas.build_atlas``): models as dots, text anchors as labelled diamonds, prompts as stars.

    ``color`` picks the models' colouring: "label" (concept), "split", "tree" or "kind". With
    "label", an anchor that names a concept takes that concept's colour. Hover shows the model
    id, its concept and split; each model point's ``customdata`` is its model id (anchors and
    prompts carry ""), so an app can react to a selection.
    """
    if color not in ATLAS_COLORINGS:
        raise ProbeXError(f"atlas_figure: color must be one of {ATLAS_COLORINGS}; got {color!r}")
    points = atlas.points
    models = points[points["kind"] == "model"]
    groups = sorted({str(value) for value in models[color]}, key=lambda value: (value == "", value))
    palette = _qualitative_palette(len(groups))
    colour_of = {group: palette[i] for i, group in enumerate(groups)}
    figure = go.Figure()
    for group in groups:
        rows = models[models[color].astype(str) == group]
        hover = [f"<b>{row.model_id}</b><br>concept: {row.label}<br>split: {row.split or '-'}"
                 + (f"<br>tree: {row.tree}" if row.tree else "") for row in rows.itertuples()]
        figure.add_trace(go.Scatter(
            x=rows["x"], y=rows["y"], mode="markers", name=group or "(none)", legendgroup=group,
            marker=dict(size=7, color=colour_of[group], opacity=0.8, line=dict(width=0)),
            customdata=list(rows["model_id"]), hovertext=hover, hoverinfo="text"))
    anchors = points[points["kind"] == "anchor"]
    if len(anchors):
        colours = [colour_of.get(label, "#555555") if color == "label" else "#555555" for label in anchors["label"]]
        figure.add_trace(go.Scatter(
            x=anchors["x"], y=anchors["y"], mode="markers+text" if show_anchor_text else "markers", name="text anchors",
            text=list(anchors["label"]), textposition="top center", textfont=dict(size=10, color=colours),
            marker=dict(symbol="diamond-open", size=10, color=colours, line=dict(width=2)),
            customdata=[""] * len(anchors), hovertext=[f"anchor: {label}" for label in anchors["label"]], hoverinfo="text"))
    prompts = points[points["kind"] == "prompt"]
    if len(prompts):
        figure.add_trace(go.Scatter(
            x=prompts["x"], y=prompts["y"], mode="markers+text", name="prompts", text=list(prompts["label"]),
            textposition="bottom center", textfont=dict(size=12, color="#111111"),
            marker=dict(symbol="star", size=18, color="#ffd400", line=dict(width=1.5, color="#111111")),
            customdata=[""] * len(prompts), hovertext=[f"prompt: {label}" for label in prompts["label"]], hoverinfo="text"))
    subtitle = getattr(atlas, "message", None)
    figure.update_layout(
        title=title or f"Atlas: {len(models)} models and {len(anchors)} words in one space"
        + (f"<br><sup>{subtitle}</sup>" if subtitle else ""),
        template="plotly_white", hovermode="closest", height=height, showlegend=len(groups) <= ATLAS_MAX_LEGEND,
        legend_title_text=color, margin=dict(l=40, r=20, t=70, b=40))
    method = "PCA" if getattr(atlas, "method", "umap") == "pca" else "UMAP"
    figure.update_xaxes(title_text=f"{method} 1", showticklabels=False, zeroline=False)
    figure.update_yaxes(title_text=f"{method} 2", showticklabels=False, zeroline=False)
    return figure


def _qualitative_palette(n: int) -> list[str]:
    """n distinguishable colours (plotly's qualitative sets, cycled when n is larger)."""
    import plotly.express as px

    base = list(px.colors.qualitative.Plotly) + list(px.colors.qualitative.Dark24) + list(px.colors.qualitative.Light24)
    return [base[i % len(base)] for i in range(max(n, 1))]


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
