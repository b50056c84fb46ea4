"""The sidebar shared by every page: which population to explore, and the device in use."""

from __future__ import annotations

import os

import streamlit as st

from explorer.state import POPULATION_KEY, population_path

DEMO = "Demo jungle (shipped)"
LOCAL = "A local zoo folder"


@st.cache_data(ttl=60, show_spinner=False)
def cache_caption(folder: str, cap: str) -> str:
    """The cache's size against its cap, measured at most once a minute (keyed on $PROBEX_CACHE and the cap)."""
    from probex.cache import cache_limit_bytes, cache_usage

    used = sum(row["bytes"] for row in cache_usage().values()) / 1e9
    try:
        limit = cache_limit_bytes()
    except ValueError as error:
        return f"Cache: {used:.2g} GB, no cap ({error})"
    if limit is None:
        return f"Cache: {used:.2g} GB, no cap ($PROBEX_CACHE_MAX_GB=off)"
    return (f"Cache: {used:.2g} of {limit / 1e9:g} GB; the least recently used entries are evicted above the cap "
            "($PROBEX_CACHE_MAX_GB)")


@st.cache_resource
def compute_device() -> str:
    from probex.experts.training import resolve_device

    return str(resolve_device("auto"))


def draw() -> None:
    with st.sidebar:
        st.subheader("Population")
        current = population_path()
        choice = st.radio("Models to explore", (DEMO, LOCAL), index=1 if current else 0, key="population_choice",
                          help="The demo jungle ships with probex. A local zoo is a folder with a probex "
                               "manifest or a Model-J layout (downloaded with `probex download`).")
        if choice == LOCAL:
            folder = st.text_input("Zoo folder", value=current, key="population_folder",
                                   placeholder="/path/to/zoo", help="The zoo's root folder on this machine.")
            st.session_state[POPULATION_KEY] = folder.strip()
            if not folder.strip():
                st.caption("Type a folder; until then the demo jungle is shown.")
        else:
            st.session_state[POPULATION_KEY] = ""
        device = compute_device()
        text = f"Device: **{device}**"
        if device == "cpu":
            import torch

            threads = torch.get_num_threads()  # this script thread's: set from $PROBEX_THREADS by app.py
            text += f" · {threads} torch thread{'s' if threads > 1 else ''} (set with $PROBEX_THREADS)"
        st.caption(text)
        st.caption(cache_caption(os.environ.get("PROBEX_CACHE", ""), os.environ.get("PROBEX_CACHE_MAX_GB", "")))
