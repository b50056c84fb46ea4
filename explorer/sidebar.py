"""The sidebar shared by every page: the device in use (and, as they land, the population)."""

from __future__ import annotations

import streamlit as st


@st.cache_resource
def compute_device() -> str:
    from probex.training import resolve_device

    return str(resolve_device("auto"))


def draw() -> None:
    with st.sidebar:
        st.caption(f"Device: **{compute_device()}**")
