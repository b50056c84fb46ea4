"""ProbeX Explorer: the Streamlit frame (navigation and the shared sidebar).

Run with ``streamlit run explorer/app.py``. Each page is a short module in explorer/views/
that reads the session state, calls probex and draws; the frame holds no logic of its own.
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

st.set_page_config(page_title="ProbeX Explorer", page_icon=":deciduous_tree:", layout="wide")

pages = [
    st.Page("views/home.py", title="Home", icon=":material/home:", default=True),
]
navigation = st.navigation(pages)
sidebar.draw()
navigation.run()
