"""The Atlas's map component (explorer/map_frame.py): its page and plotly.js are served from a private
folder, a figure is serialised once and named by its content, and its page keeps Streamlit's
component protocol (the browser tests drive it: lasso, click, colour changes)."""

from __future__ import annotations

import json
import re

import plotly.graph_objects as go

from explorer import map_frame


def test_the_component_serves_its_page_and_the_installed_plotly_js_from_a_private_folder():
    map_frame._declared()
    folder = map_frame._folder
    assert sorted(path.name for path in folder.iterdir()) == ["index.html", "plotly.min.js"]
    assert (folder / "index.html").read_bytes() == map_frame.PAGE.read_bytes()
    assert (folder / "plotly.min.js").read_bytes() == map_frame.plotly_js().read_bytes()
    assert (folder.stat().st_mode & 0o077) == 0  # mkdtemp: the user's alone
    assert map_frame._declared() is map_frame._declared()  # declared once per process


def test_a_lost_folder_is_assembled_again():
    map_frame._declared()
    lost = map_frame._folder
    (lost / "plotly.min.js").unlink()
    map_frame._declared()
    assert map_frame._folder != lost and (map_frame._folder / "plotly.min.js").is_file()


def test_a_figure_is_serialised_once_and_named_by_its_content():
    figure = go.Figure(go.Scattergl(x=[1, 2, 3], y=[3, 1, 2], customdata=[0, 1, 2]))
    spec, revision = map_frame.spec_of(figure)
    assert json.loads(spec)["data"][0]["type"] == "scattergl"
    assert map_frame.spec_of(figure) == (spec, revision)
    same = go.Figure(go.Scattergl(x=[1, 2, 3], y=[3, 1, 2], customdata=[0, 1, 2]))
    other = go.Figure(go.Scattergl(x=[1, 2, 3], y=[3, 1, 9], customdata=[0, 1, 2]))
    assert map_frame.spec_of(same)[1] == revision  # the same content, the same name: the browser keeps its chart
    assert map_frame.spec_of(other)[1] != revision


def test_the_page_speaks_streamlits_component_protocol_and_answers_in_plotly_charts_shape():
    page = map_frame.PAGE.read_text()
    for message in ("streamlit:componentReady", "streamlit:render", "streamlit:setComponentValue",
                    "streamlit:setFrameHeight"):
        assert message in page
    assert re.search(r"Plotly\.react\(", page) and "Plotly.newPlot" not in page
    assert '<script src="plotly.min.js">' in page  # served beside it: nothing fetched from elsewhere
    assert not re.search(r"https?://", page)
    for event in ("plotly_selected", "plotly_click", "plotly_deselect"):
        assert event in page
    # the value's shape is what explorer.widgets.selected_rows reads from st.plotly_chart's events
    assert "selection: {points: points, box: box, lasso: lasso}" in page
