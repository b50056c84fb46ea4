"""A model's own page (``?model=ID``): its metadata and training images, its tree, what it was trained on, its
nearest models, and a model-card draft to download."""

from __future__ import annotations

import streamlit as st

from explorer import model_view, state
from explorer.text import plain
from probex.errors import ZooError
from explorer.widgets import image_grid

st.title("Model")
path = state.population_path()
zoo = state.current_zoo()

model_id = st.query_params.get("model")
if not model_id:
    labels = {record.id: f"{record.id} · {', '.join(record.labels[:3])}" for record in zoo.records}
    model_id = st.selectbox("Open a model (type an id, a concept or a split)", list(labels), index=None,
                            format_func=labels.get, key="model_pick", placeholder="e.g. purple heart")
    if model_id is None:
        st.caption("Every model id shown on the other pages links here; so does a click on a map.")
        st.stop()
    st.query_params["model"] = model_id
try:
    record = zoo.record(model_id)
except ZooError:
    st.error(f"There is no model “{plain(model_id, 80)}” in {plain(state.population_name(path))}.")
    st.stop()

st.subheader(plain(record.id, 120))
columns = st.columns([2, 3])
with columns[0]:
    facts = {"tree": record.tree or "-", "split": record.split or "-",
             "trained on": ", ".join(record.labels) or "-", **{key: str(value) for key, value in record.metadata.items()}}
    st.dataframe([{"field": key, "value": value} for key, value in facts.items()], hide_index=True, width="stretch",
                 height=min(38 + 35 * len(facts), 420))
with columns[1]:
    if record.images:
        st.markdown(f"**Training images** ({len(record.images)})")
        image_grid(record.images[:24], lambda image: [image], lambda image: "", per_row=6, width=88)
    else:
        st.caption("This zoo ships no training images for this model.")

model_view.describe(path, zoo, zoo.select(ids=[record.id]), true_labels=list(record.labels) or None, key="model")
