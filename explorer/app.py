"""ProbeX Explorer: the Streamlit frame (navigation and the shared sidebar).

Run with ``streamlit run explorer/app.py`` from the repository root (its ``.streamlit/config.toml``
keeps the toolbar to the viewer's menu). Each page is a short module in explorer/views/ that
reads the session state, calls probex and draws; the frame holds no logic of its own. The view
lives in the address (``?page=search&prompt=a+purple+heart``, ``?model=mini-sd/model_idx_0000``),
so any view can be shared by sending its address; ``explorer.address`` lists the parameters.
"""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

# `streamlit run explorer/app.py` puts explorer/ on sys.path, not the repository root.
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from explorer import sidebar, state  # noqa: E402
from explorer.text import plain  # noqa: E402

st.set_page_config(page_title="ProbeX Explorer", page_icon=":deciduous_tree:", layout="wide")

PAGES = {
    "home": st.Page("views/home.py", title="Home", icon=":material/home:", default=True),
    "trees": st.Page("views/trees.py", title="Trees", icon=":material/account_tree:", url_path="trees"),
    "experts": st.Page("views/experts.py", title="Experts", icon=":material/school:", url_path="experts"),
    "atlas": st.Page("views/atlas.py", title="Atlas", icon=":material/scatter_plot:", url_path="atlas"),
    "search": st.Page("views/search.py", title="Search", icon=":material/search:", url_path="search"),
    "inspect": st.Page("views/inspect.py", title="Inspect", icon=":material/biotech:", url_path="inspect"),
    "model": st.Page("views/model.py", title="Model", icon=":material/description:", url_path="model"),
}
navigation = st.navigation(list(PAGES.values()))
current = next(name for name, page in PAGES.items() if page.url_path == navigation.url_path)

# A shared address opens its view once per session: ?model=ID opens that model's page, ?page=NAME that page.
if not st.session_state.get("address_opened"):
    st.session_state["address_opened"] = True
    wanted = "model" if st.query_params.get("model") else st.query_params.get("page")
    if wanted in PAGES and wanted != current:
        st.switch_page(PAGES[wanted], query_params=st.query_params.to_dict())
    if wanted is not None and wanted not in PAGES:
        st.session_state["unknown_page"] = wanted
if st.session_state.get("unknown_page") is not None:
    st.warning(f"There is no page “{plain(st.session_state.pop('unknown_page'), 40)}” here; this is the "
               f"{current.capitalize()} page. Pages: {', '.join(PAGES)}.")
st.query_params["page"] = current

compute = sidebar.draw()
sidebar.apply_threads()
try:
    navigation.run()
finally:
    sidebar.draw_compute(compute)  # after the page: torch is imported here unless the page needed it
    state.warm_up()  # once per process, in the background, after the first page is drawn (not competing with it)
