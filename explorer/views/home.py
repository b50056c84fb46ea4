"""Home: what ProbeX is, and what the chosen population holds (trees, model counts, training images)."""

from __future__ import annotations

from collections import Counter

import streamlit as st

import probex
from explorer import state
from explorer.text import plain
from explorer.widgets import image_grid, model_link

st.title("ProbeX Explorer")
st.markdown(
    """
Most public models are fine-tunes of a few foundation models (**Model Trees**). Within a tree,
the weights of a single layer already tell what a model was fine-tuned on. **ProbeX** passes a
few learned probe vectors through one weight matrix and maps the responses to the classes a
model was trained on, or into a text-embedding space where models can be searched with words.
"""
)

path = state.population_path()
zoo = state.current_zoo()


@st.cache_data(show_spinner=False, max_entries=8)
def summary(path: str, token: str) -> dict:
    """The Home page's figures and tables of one population (``token``: its content hash)."""
    zoo = state.load_zoo(path)
    trees = state.real_trees(zoo)
    forest = [tree for tree in zoo.trees if tree not in trees]
    by_tree: dict[str, list] = {}
    for record in zoo.records:
        by_tree.setdefault(record.tree, []).append(record)
    rows = []
    for tree in trees:
        records = by_tree.get(tree, [])
        splits = Counter(record.split for record in records)
        rows.append({"tree": tree, "models": len(records),
                     "splits": ", ".join(f"{split} {splits[split]:,}" for split in zoo.splits if split in splits),
                     "classes": len({label for record in records for label in record.labels}),
                     "labels per model": round(sum(len(r.labels) for r in records) / max(len(records), 1), 1),
                     "training images": sum(1 for record in records if record.images)})
    if forest:
        members = [record for tree in forest for record in by_tree.get(tree, [])]
        rows.append({"tree": f"forest ({len(forest)} one-model trees)", "models": len(members), "splits": "",
                     "classes": len({label for record in members for label in record.labels}),
                     "labels per model": None, "training images": sum(1 for record in members if record.images)})
    shown: dict[str, tuple] = {}
    for record in zoo.records:  # one model with images per concept, the first few concepts
        if record.images:
            shown.setdefault(record.labels[0] if record.labels else record.id,
                             (record.id, [str(image) for image in record.images[:2]]))
            if len(shown) == 8:
                break
    return {"name": zoo.name, "description": zoo.description, "models": len(zoo), "trees": len(trees),
            "forest": len(forest), "classes": len(zoo.label_names), "rows": rows, "shown": shown}


facts = summary(path, state.population_token(path))
st.subheader(f"{plain(facts['name'])}: {facts['models']:,} models")
if facts["description"]:
    st.caption(plain(facts["description"]))
columns = st.columns(4)
columns[0].metric("models", f"{facts['models']:,}")
columns[1].metric("Model Trees", facts["trees"])
columns[2].metric("one-model trees (forest)", facts["forest"])
columns[3].metric("class names", facts["classes"])

st.dataframe(facts["rows"], hide_index=True, width="stretch",
             column_config={"models": st.column_config.NumberColumn(format="localized")})

if facts["shown"]:
    st.subheader("What some models were fine-tuned on")
    image_grid(list(facts["shown"].items()), lambda item: item[1][1], lambda item: f"**{plain(item[0])}**  \n"
               + model_link(item[1][0], 28), per_row=8, width=80, per_item=2)

st.markdown(
    """
**Pages.** *Trees*: the router's dendrogram and a map of the raw weights. *Experts*: load or train
a ProbeX expert per tree, compare it with Dense and StatNN. *Atlas*: models and words in one map;
select, colour and highlight. *Search*: type a prompt, get the models fine-tuned on it. *Inspect*:
upload a model file and see what ProbeX says about it. *Model*: any model's own page.
"""
)
st.caption(f"probex {probex.__version__} · population: {plain(state.population_name(path))}")
