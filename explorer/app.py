"""ProbeX Explorer: the Streamlit frame (navigation and the shared sidebar).

Run with ``streamlit run explorer/app.py``. Each page is a short module in explorer/views/
that reads the session state, calls probex and draws; the frame holds no logic of its own.
The page lives in the URL's query string (``?page=search&prompt=a+purple+heart``), so a view
can be shared by sending its address.
"""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

# `streamlit run explorer/app.py` puts explorer/ on sys.path, not the repository root.
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from explorer import sidebar  # noqa: E402
from explorer.text import plain  # noqa: E402

st.set_page_config(page_title="ProbeX Explorer", page_icon=":deciduous_tree:", layout="wide")

try:
    from probex.experts.training import set_threads

    set_threads()  # $PROBEX_THREADS, when set
except ValueError as error:
    st.warning(f"{plain(error)}; training uses torch's default threads.")

PAGES = {
    "home": st.Page("views/home.py", title="Home", icon=":material/home:", default=True),
    "trees": st.Page("views/trees.py", title="Trees", icon=":material/account_tree:", url_path="trees"),
    "experts": st.Page("views/experts.py", title="Experts", icon=":material/school:", url_path="experts"),
    "atlas": st.Page("views/atlas.py", title="Atlas", icon=":material/scatter_plot:", url_path="atlas"),
    "search": st.Page("views/search.py", title="Search", icon=":material/search:", url_path="search"),
    "inspect": st.Page("views/inspect.py", title="Inspect", icon=":material/biotech:", url_path="inspect"),
}
navigation = st.navigation(list(PAGES.values()))
current = next(name for name, page in PAGES.items() if page.url_path == navigation.url_path)

# A shared address opens its page once; afterwards the page follows the navigation.
wanted = st.query_params.get("page")
if not st.session_state.get("page_from_url_done"):
    st.session_state["page_from_url_done"] = True
    if wanted in PAGES and wanted != current:
        st.switch_page(PAGES[wanted], query_params=st.query_params.to_dict())
st.query_params["page"] = current

sidebar.draw()
navigation.run()
