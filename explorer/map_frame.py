"""A map chart that redraws in place: a Streamlit component around plotly.js's ``Plotly.react``.

``st.plotly_chart`` gives every new figure a new element identity (its id hashes the figure), so the
browser unmounts the old chart and draws the new one from nothing (a new WebGL context, a full
``Plotly.newPlot``): at 20,000 points a colour change took 3-4 s on the 2-core machine. This component
keeps one chart per key and hands each new figure to ``Plotly.react`` on the same graph, which updates
what changed; zoom and pan survive through the figure's ``uirevision``. Box, lasso, click and
double-click come back as a selection in the shape of ``st.plotly_chart``'s (``selection.points`` with
their ``customdata``, ``selection.box``, ``selection.lasso``), so :func:`explorer.widgets.selected_rows`
reads both.

The component's page (``map_frame/index.html``) loads ``plotly.min.js``, the copy of plotly.js that the
installed ``plotly`` package ships: both files are copied once per server process into a private
temporary folder that Streamlit serves (nothing is downloaded, nothing is written into the package
or the user's folders).
"""

from __future__ import annotations

import atexit
import hashlib
import json
import shutil
import tempfile
import threading
import weakref
from pathlib import Path
from typing import Any, Optional

PAGE = Path(__file__).with_name("map_frame") / "index.html"
#: The component's name as Streamlit registers it (module-qualified by Streamlit).
NAME = "probex_map"

_lock = threading.Lock()
_component: Optional[Any] = None
_folder: Optional[Path] = None
#: figure -> (its JSON, that JSON's revision): a figure reused on reruns is serialised once.
_specs: "weakref.WeakKeyDictionary[Any, tuple[str, str]]" = weakref.WeakKeyDictionary()


def plotly_js() -> Path:
    """The ``plotly.min.js`` of the installed plotly package (its offline copy of plotly.js)."""
    import plotly

    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    if not path.is_file():
        raise FileNotFoundError(f"the plotly package has no package_data/plotly.min.js (plotly {plotly.__version__})")
    return path


def _assemble() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="probex-map-"))
    atexit.register(shutil.rmtree, folder, True)
    shutil.copyfile(PAGE, folder / "index.html")
    shutil.copyfile(plotly_js(), folder / "plotly.min.js")
    return folder


def _declared() -> Any:
    """The component, declared once per process over its freshly assembled folder."""
    global _component, _folder
    with _lock:
        if _component is None or _folder is None or not (_folder / "plotly.min.js").is_file():
            import streamlit.components.v1 as components

            _folder = _assemble()
            _component = components.declare_component(NAME, path=str(_folder))
        return _component


def spec_of(figure: Any) -> tuple[str, str]:
    """(the figure's JSON, a revision naming it): computed once per figure object, so a figure kept for
    reruns (explorer.state.figure) is serialised once; a figure changed after it was drawn must be a new
    object (the pages build a new one for every change)."""
    try:
        known = _specs.get(figure)
    except TypeError:  # not weak-referenceable: serialise every time
        known = None
    if known is None:
        spec = figure.to_json()
        known = (spec, hashlib.sha1(spec.encode("utf-8")).hexdigest()[:16])
        try:
            _specs[figure] = known
        except TypeError:
            pass
    return known


def plotly_map(figure: Any, key: str, config: Optional[dict] = None) -> Optional[dict]:
    """Draw ``figure`` under ``key`` (redrawn in place when it changes); returns the last selection event or None.

    The figure's layout should carry its ``height`` (the frame takes it) and a ``uirevision`` (the view
    survives new figures). The event is ``{"selection": {"points": [...], "box": [...], "lasso": [...]},
    "nonce": n}``; ``nonce`` grows with every event of the page.
    """
    spec, revision = spec_of(figure)
    return _declared()(spec=spec, revision=revision, config=json.dumps(config or {}), key=key, default=None)
