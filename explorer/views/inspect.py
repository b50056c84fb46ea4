"""Inspect: upload a model file; it is routed to a tree, and that tree's expert says what it was trained on."""

from __future__ import annotations

import math

import numpy as np
import streamlit as st

from explorer import state, uploads
from explorer.text import plain
from probex.errors import ProbeXError

UPLOAD = "Upload a model file"
EXAMPLE = "Use a held-out model of this population"

st.title("Inspect a model")
st.markdown("A model file goes to the router, which finds its Model Tree (or says it belongs to none); the "
            "tree's expert then reads the model's weights and predicts what it was fine-tuned on.")

path = state.population_path()
zoo = state.current_zoo()
fitted = state.current_router(path)
router = fitted.router

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
            st.error(plain(error))
else:
    example = st.selectbox("Model id (not used to find the trees)", fitted.held_ids or zoo.ids, key="inspect_example")
    model = zoo.select(ids=[example])
    true_labels = model.records[0].labels
if model is None:
    st.caption("Bad files (not safetensors, corrupt, too large, another architecture) are refused with a message.")
    st.stop()

record = model.records[0]
try:
    trees, distances = router.route(model, return_distance=True)
except ProbeXError as error:
    st.error(f"{plain(record.path.name)}: cannot be routed: {plain(error)}")
    st.stop()
found, distance = trees[0], float(distances[0])

st.subheader("1. Its Model Tree")
if found is None:
    if math.isnan(distance):
        st.error(f"{plain(record.path.name)}: **wrong architecture**: no tree of this population has models with these layers and shapes, "
                   "so no expert here can read it.")
    else:
        st.warning(f"**Unknown tree**: it lies {distance:.3g} from the nearest tree centre, farther than that tree's "
                   "own models do.")
    st.stop()
truth = router.tree_truth_.get(found)
radius = float(router.radii_[router.tree_names_.index(found)])
st.success(f"It joins **{plain(found)}**" + (f", the **{plain(truth)}** tree" if truth else "")
           + f": distance {distance:.3g} to its centre (the tree's models lie within {radius:.3g}).")
tree = truth or found
choice = state.expert_for(path, tree)
if choice is None:
    st.info(f"No expert for {plain(tree)} yet: train one on the Experts page.")
    st.stop()

st.subheader("2. What it was trained on")
st.caption(f"Expert: {type(choice.expert).__name__} ({plain(choice.source)}) on {plain(', '.join(choice.expert.layers_))}.")
try:
    if choice.aligned:
        index = state.model_index(path, tree, choice.token, choice.expert)
        labels = index.top_labels(record.path, k=5)
        st.dataframe([{"concept": label, "cosine score": score} for label, score in labels], hide_index=True,
                     width="stretch", column_config={"cosine score": st.column_config.ProgressColumn(
                         "cosine score", min_value=-1.0, max_value=1.0, format="%.3f")})
        st.markdown(f"Predicted concept: **{plain(labels[0][0])}**")
        neighbours = index.neighbours(index.embed_model(record.path), k=5)
    else:
        layers = [model.bank(layer, cache=False) for layer in choice.expert.layers_]
        probabilities = choice.expert.predict_proba(layers if len(layers) > 1 else layers[0])[0]
        order = np.argsort(-probabilities)
        classes = choice.expert.classes_
        predicted = [classes[i] for i in order if probabilities[i] >= 0.5]
        st.markdown("Predicted training classes: " + (", ".join(f"**{plain(name)}**" for name in predicted) or "none above 0.5"))
        st.dataframe([{"class": classes[i], "probability": float(probabilities[i]),
                       **({"trained on it": classes[i] in true_labels} if true_labels is not None else {})}
                      for i in order[:15]], hide_index=True, width="stretch",
                     column_config={"probability": st.column_config.ProgressColumn(
                         "probability", min_value=0.0, max_value=1.0, format="%.3f")})
        neighbours = None
except (ProbeXError, ValueError) as error:
    st.error(f"{plain(record.path.name)}: the {plain(tree)} expert cannot read it: {plain(error)}")
    st.stop()
if true_labels is not None:
    st.caption("Its true training classes: " + plain(", ".join(true_labels)))

if neighbours:
    st.subheader("3. The nearest known models")
    for column, hit in zip(st.columns(len(neighbours)), neighbours):
        if hit.images:
            column.image(str(hit.images[0]), width=72)
        column.caption(f"{hit.score:.3f} · **{plain(', '.join(hit.labels))}**  \n{plain(hit.model_id)}")
