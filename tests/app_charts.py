"""The plotly figures an AppTest page sent, whichever element drew them."""

from __future__ import annotations

import json

from streamlit.testing.v1 import AppTest

from explorer import map_frame


def figure_specs(app: AppTest) -> list[dict]:
    """The page's plotly figures as sent: ``st.plotly_chart``'s, then the maps drawn in place by
    :mod:`explorer.map_frame` (its ``spec`` argument)."""
    charts = [json.loads(chart.proto.spec) for chart in app.get("plotly_chart")]
    maps = [json.loads(json.loads(element.proto.json_args)["spec"]) for element in app.get("component_instance")
            if element.proto.component_name.endswith(map_frame.NAME)]
    return charts + maps
