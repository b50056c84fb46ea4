"""Atlas: models and words in one map of the weight-language space (UMAP); select a model for its details."""

from __future__ import annotations

import streamlit as st

from explorer import state
from explorer.text import plain
from probex.errors import ProbeXError

COLOURS = {"concept": "label", "tree": "tree", "split": "split", "kind": "kind"}

st.title("Atlas of the weight-language space")
st.markdown("Every model of a tree, embedded by its aligned expert, and the tree's class names, embedded by "
            "the text encoder, in one 2-D map (UMAP, cosine). A model lands near the words that describe it.")

path = state.population_path()
zoo = state.current_zoo()
experts = state.current_aligned_experts(path, zoo)

columns = st.columns([1, 1, 2]) if len(experts) > 1 else [None, *st.columns([1, 2])]
tree = columns[0].selectbox("Tree", list(experts), key="atlas_tree") if len(experts) > 1 else next(iter(experts))
colour = columns[1].radio("Colour by", list(COLOURS), horizontal=True, key="atlas_colour")
extra = columns[2].text_input("Place prompts on the map (comma-separated)", key="atlas_prompts",
                              placeholder="a purple heart, a green star")
choice = experts[tree]
try:
    index = state.model_index(path, tree, choice.token, choice.expert)
    atlas = state.atlas(path, tree, choice.token, index)
    prompts = [prompt.strip() for prompt in extra.split(",") if prompt.strip()]
    if prompts:
        atlas = atlas.with_prompts(prompts)
except (ProbeXError, ValueError) as error:
    st.error(f"Cannot draw the atlas of {plain(tree)}: {plain(error)}")
    st.stop()
if atlas.message:
    st.caption(plain(atlas.message))

selected = None
try:
    from probex.figures import atlas_figure
except ImportError:
    st.info("The atlas figure (probex.figures.atlas_figure) is not available yet in this probex; a plain "
            "scatter plot stands in for it.")
    st.scatter_chart(atlas.points, x="x", y="y", color=COLOURS[colour])
else:
    event = st.plotly_chart(atlas_figure(atlas, color=COLOURS[colour]), width="stretch", key="atlas_chart",
                            on_select="rerun", selection_mode="points")
    for point in (event.selection.get("points", []) if event else []):
        data = point.get("customdata")
        model_id = data[0] if isinstance(data, (list, tuple)) and data else data
        if isinstance(model_id, str) and model_id in index.ids:
            selected = model_id
            break
st.caption(f"{len(index):,} models of {plain(tree)}; expert {plain(choice.source)}. Click a model point to open it, "
           "or pick one below.")

model_ids = index.ids
if selected is not None:
    st.session_state["atlas_model"] = selected
model_id = st.selectbox("Model", model_ids, key="atlas_model")
record = zoo.record(model_id)
st.subheader(plain(model_id))
columns = st.columns([1, 2])
columns[0].markdown(f"**concept:** {plain(', '.join(record.labels) or '-')}  \n**split:** {plain(record.split)}  \n"
                    f"**tree:** {plain(record.tree)}")
with columns[0].expander("metadata"):
    st.json(record.metadata)
if record.images:
    columns[1].image([str(image) for image in record.images[:8]], width=72, caption=None)
st.markdown("**Nearest models** (in the expert's space)")
neighbours = index.neighbours(model_id, k=5)
for column, hit in zip(st.columns(len(neighbours)), neighbours):
    if hit.images:
        column.image(str(hit.images[0]), width=72)
    column.caption(f"{hit.score:.3f} · **{plain(', '.join(hit.labels))}**  \n{plain(hit.model_id)}")
