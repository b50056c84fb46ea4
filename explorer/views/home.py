"""Home page: what ProbeX Explorer is and what the library can do today."""

from __future__ import annotations

import streamlit as st

import probex

st.title("ProbeX Explorer")
st.markdown(
    """
Most public models are fine-tunes of a few foundation models (**Model Trees**). Within a tree,
the weights of a single layer already tell what a model was fine-tuned on. **ProbeX** passes a
few learned probe vectors through one weight matrix and maps the responses to the classes a
model was trained on, or into a text-embedding space.

The pages for the demo jungle (trees, experts, atlas, search) arrive as the core library grows.
Today the library offers the ProbeX expert and its baselines: see the README's quick start.
"""
)
st.caption(f"probex {probex.__version__}")
