"""Pieces several pages draw: model links, image grids, and the panel of a selection on a map.

Every model id shown goes through :func:`model_link` (Markdown) or :func:`link_column` (tables),
so it opens the model's own page (``model?model=ID``).
"""

from __future__ import annotations

import io
from typing import Any, Callable, Optional, Sequence

import numpy as np
import streamlit as st

from explorer.address import model_href
from explorer.map_frame import plotly_map
from explorer.text import plain

#: At most this many images in a selection's grid (the table lists every selected model).
MAX_GRID = 120


def model_link(model_id: str, limit: int = 60) -> str:
    """Markdown: the model id, escaped, linking to its page."""
    return f"[{plain(model_id, limit)}]({model_href(model_id)})"


def link_column(label: str = "model") -> Any:
    """A dataframe column of model pages (``model_href``) showing the model id."""
    return st.column_config.LinkColumn(label, display_text=r"model\?model=(.*)$", width="medium")


def with_links(frame: Any, column: str = "model") -> Any:
    """A copy of ``frame`` whose ``column`` of ids holds the ids' page addresses (for :func:`link_column`)."""
    frame = frame.copy()
    frame[column] = [model_href(str(model_id)) for model_id in frame[column]]
    return frame


def held_out_badge(held_out: bool) -> str:
    """A small orange "held out" badge (Markdown) for a concept never seen in training, else ""."""
    return " :orange-badge[held out]" if held_out else ""


def image_grid(items: Sequence[Any], images_of: Callable[[Any], Sequence], caption_of: Callable[[Any], str],
               per_row: int = 6, width: int = 80, per_item: int = 1, key: str = "grid") -> int:
    """Items in rows of ``per_row`` columns: the first ``per_item`` images of each and a Markdown caption.

    Items without images get their caption only. Returns how many items were drawn.
    """
    items = list(items)
    for start in range(0, len(items), per_row):
        columns = st.columns(per_row)
        for column, item in zip(columns, items[start:start + per_row]):
            images = [str(image) for image in list(images_of(item))[:per_item]]
            with column:
                if images:
                    st.image(images, width=width)
                caption = caption_of(item)
                if caption:
                    st.caption(caption)
    return len(items)


def selection_panel(key: str, table: Any, rows: Sequence[int], images_of: Callable[[int], Sequence],
                    similarity: Optional[Callable[[Sequence[int]], np.ndarray]] = None
                    ) -> tuple[Optional[np.ndarray], bool]:
    """The models selected on a map: how many, a table of exactly them, their images, export, "more like these".

    Args:
        key: a prefix for this panel's widgets.
        table: the facets table of every model on the map (rows in map order).
        rows: the selected rows.
        images_of: row -> that model's training images.
        similarity: rows -> every model's similarity to them ([N]); None hides "more like these".

    Returns:
        ([N] bool of the models "more like these" highlights (the top ones, the selection left out) or
        None, whether "Clear" was pressed).
    """
    from probex.language.selection import most_similar

    rows = sorted(int(row) for row in rows)
    chosen = table.iloc[rows].reset_index(drop=True)
    header = st.columns([3, 1, 1, 1])
    header[0].markdown(f"**{len(rows):,} models selected** (lasso or box on the map; double-click the map to clear)")
    header[1].download_button("CSV", chosen.to_csv(index=False).encode("utf-8"), file_name="selection.csv",
                              mime="text/csv", key=f"{key}_csv", icon=":material/download:")
    header[2].download_button("Parquet", _parquet(chosen), file_name="selection.parquet",
                              mime="application/vnd.apache.parquet", key=f"{key}_parquet", icon=":material/download:")
    clear = header[3].button("Clear", key=f"{key}_clear")
    st.dataframe(with_links(chosen), hide_index=True, width="stretch", height=min(38 + 35 * len(rows), 320),
                 column_config={"model": link_column()}, key=f"{key}_table")
    shown = rows[:MAX_GRID]
    image_grid(shown, images_of, lambda row: model_link(str(table["model"].iloc[row]), 32)
               + f"  \n{plain(table['concept'].iloc[row] if 'concept' in table else '', 40)}", per_row=8, width=64)
    if len(rows) > len(shown):
        st.caption(f"The first {len(shown)} of {len(rows):,} selected models are shown; the table lists them all.")
    if clear or similarity is None:
        return None, clear
    more = st.toggle("More like these: highlight the models most similar to the selection", key=f"{key}_more")
    if not more:
        return None, False
    scores = similarity(rows)
    top = most_similar(scores, exclude=rows, k=max(len(rows), 10))
    highlight = np.zeros(len(table), dtype=bool)
    highlight[top] = True
    ranked = table.iloc[top][[column for column in ("model", "concept", "split", "seen") if column in table]].copy()
    ranked.insert(1, "similarity", scores[top])
    st.caption(f"The {len(top)} models most like the selection (cosine with its mean direction), highlighted on the "
               "map; nothing is filtered out.")
    st.dataframe(with_links(ranked), hide_index=True, width="stretch", height=min(38 + 35 * len(top), 320),
                 column_config={"model": link_column(),
                                "similarity": st.column_config.NumberColumn(format="%.3f")}, key=f"{key}_ranked")
    return highlight, False


def _parquet(frame: Any) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def selected_rows(event: Any) -> tuple[list[int], bool]:
    """(rows, by_area) of a plotly selection event: the models' rows (their ``customdata``; words and
    prompts carry -1) and whether a box or lasso made it (else it was a click)."""
    if not event:
        return [], False
    selection = event.get("selection", {}) if isinstance(event, dict) else getattr(event, "selection", {})
    rows = set()
    for point in selection.get("points", []) or []:
        data = point.get("customdata")
        if isinstance(data, (list, tuple)):
            data = data[0] if data else None
        if isinstance(data, (int, float)) and not isinstance(data, bool) and data >= 0:
            rows.add(int(data))
    by_area = bool(selection.get("box") or selection.get("lasso"))
    return sorted(rows), by_area


def map_chart(figure: Any, key: str) -> Any:
    """Draw a map whose models are picked on it (box, lasso, click) and return its selection event.

    One place for the settings of a selectable map (the Atlas page and benchmarks/atlas_20k_app.py
    draw the same chart). The layout's ``clickmode`` and ``dragmode`` say what the chart does (click
    selects, drag pans; lasso and box in the modebar). Drawn by :func:`explorer.map_frame.plotly_map`,
    which redraws a changed figure in place (``Plotly.react``) instead of mounting a new chart.
    """
    figure.update_layout(clickmode="event+select", dragmode="pan", hovermode=figure.layout.hovermode or "closest")
    if figure.layout.height is None:
        figure.update_layout(height=560)
    return plotly_map(figure, key, config={"scrollZoom": True, "displaylogo": False})


def apply_map_event(state_key: str, event: Any) -> Optional[int]:
    """Update the selection kept in ``st.session_state[state_key]`` from a map's selection event.

    A box or lasso replaces the selection; a click on one model returns its row (the page opens
    that model); clearing the map's selection (double-click) clears it. An event already applied
    (Streamlit keeps returning the last one on every rerun) changes nothing.
    """
    rows, by_area = selected_rows(event)
    signature = (tuple(rows), by_area)
    last = st.session_state.get(f"{state_key}:event")
    if signature == last:
        return None
    st.session_state[f"{state_key}:event"] = signature
    if by_area:
        st.session_state[state_key] = rows
    elif len(rows) == 1:
        st.session_state[f"{state_key}:event"] = ((), False)  # coming back to the page must not clear anything
        return rows[0]
    elif not rows and last is not None and last != ((), False):
        st.session_state[state_key] = []
    return None
