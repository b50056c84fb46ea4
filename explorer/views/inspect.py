"""Inspect: upload a model file; it is routed to a tree, and that tree's expert says what it was trained on."""

from __future__ import annotations

import streamlit as st

from explorer import model_view, state, uploads
from explorer.text import plain_error
from probex.errors import ProbeXError

UPLOAD = "Upload a model file"
EXAMPLE = "Use a model of this population"

st.title("Inspect a model")
st.markdown("A model file goes to the router, which finds its Model Tree (or says it belongs to none, naming the "
            "nearest); the tree's expert then reads the model's weights and predicts what it was fine-tuned on. "
            "Caveats say when an answer deserves less trust.")

path = state.population_path()
zoo = state.current_zoo()
fitted = state.current_router(path)

source = st.radio("Model", (UPLOAD, EXAMPLE), horizontal=True, key="inspect_source")
model = None
true_labels = None
if source == UPLOAD:
    uploaded = st.file_uploader("A model's weights (.safetensors, at most "
                                f"{uploads.MAX_UPLOAD_BYTES // 2**20} MiB)", key="inspect_upload",
                                max_upload_size=uploads.upload_limit_mb())
    if uploaded is not None:
        try:
            model = uploads.read_upload(uploaded)
        except ProbeXError as error:
            st.error(plain_error(error))
else:
    others = [tree for tree in zoo.trees if tree not in state.real_trees(zoo)]
    choices = {model_id: f"{model_id} · held out from the router" for model_id in fitted.held_ids}
    for tree in others[:20]:  # a few models of no tree (the demo jungle's forest): the unknown-tree answer
        for record in zoo.select(tree=tree).records:
            choices[record.id] = f"{record.id} · {tree}, a tree of its own"
    if not choices:
        choices = {model_id: model_id for model_id in zoo.ids}
    example = st.selectbox("Model (not used to find the trees)", list(choices), format_func=choices.get,
                           key="inspect_example")
    model = zoo.select(ids=[example])
    true_labels = model.records[0].labels
if model is None:
    st.caption("Bad files (not safetensors, corrupt, too large, another architecture) are refused with a message.")
    st.stop()

model_view.describe(path, zoo, model, true_labels=true_labels, key="inspect")
