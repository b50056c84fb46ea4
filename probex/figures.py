"""Plotly figure builders shared by the explorer app and the notebooks.

Each builder is pure: data in, a ``plotly.graph_objects.Figure`` out, nothing drawn or saved.
The app shows it with ``st.plotly_chart``, a notebook by leaving it last in a cell, the CLI
writes it with ``fig.write_html``.
"""

from __future__ import annotations

from typing import Any, Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from probex.dendrogram import ABOVE_CUT_COLOR, DendrogramData

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
        title=title or ("Model Trees: " + _panel_title(panels[0]) if len(panels) == 1 else "Model Trees"),
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


def _panel_title(data: DendrogramData) -> str:
    layer = f" — {data.layer}" if data.layer and data.layer not in data.architecture else ""
    return f"{data.architecture}{layer}"


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
