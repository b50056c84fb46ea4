"""Home: what ProbeX is, and what the chosen population holds (trees, model counts, training images)."""

from __future__ import annotations

from collections import Counter

import streamlit as st

import probex
from explorer import state
from explorer.text import plain

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
trees = state.real_trees(zoo)
forest = [tree for tree in zoo.trees if tree not in trees]

st.subheader(f"{plain(zoo.name)}: {len(zoo):,} models")
if zoo.description:
    st.caption(plain(zoo.description))
columns = st.columns(4)
columns[0].metric("models", f"{len(zoo):,}")
columns[1].metric("Model Trees", len(trees))
columns[2].metric("one-model trees (forest)", len(forest))
columns[3].metric("class names", len(zoo.label_names))

rows = []
for tree in trees:
    records = zoo.select(tree=tree).records
    splits = Counter(record.split for record in records)
    splits = {split: splits[split] for split in zoo.splits if split in splits}
    rows.append({"tree": tree, "models": len(records),
                 "splits": ", ".join(f"{split} {count}" for split, count in splits.items()),
                 "classes": len({label for record in records for label in record.labels}),
                 "labels per model": round(sum(len(r.labels) for r in records) / max(len(records), 1), 1),
                 "training images": sum(1 for record in records if record.images)})
if forest:
    rows.append({"tree": f"forest ({len(forest)} one-model trees)", "models": len(forest), "splits": "",
                 "classes": len({label for tree in forest for record in zoo.select(tree=tree) for label in record.labels}),
                 "labels per model": None, "training images": 0})
st.dataframe(rows, hide_index=True, width="stretch")

with_images = [record for record in zoo.records if record.images]
if with_images:
    st.subheader("What some models were fine-tuned on")
    shown: dict[str, object] = {}
    for record in with_images:  # one model per concept, the first few concepts
        concept = record.labels[0] if record.labels else record.id
        shown.setdefault(concept, record)
        if len(shown) == 8:
            break
    for column, (concept, record) in zip(st.columns(len(shown)), shown.items()):
        column.image([str(image) for image in record.images[:2]], width=80)
        column.caption(f"**{plain(concept)}**  \n{plain(record.id)}")

st.markdown(
    """
**Pages.** *Trees*: the router's dendrogram and a map of the raw weights. *Experts*: load or train
a ProbeX expert per tree, compare it with Dense and StatNN. *Atlas*: models and words in one map.
*Search*: type a prompt, get the models fine-tuned on it. *Inspect*: upload a model file and see
what ProbeX says about it.
"""
)
st.caption(f"probex {probex.__version__} · population: {plain(state.population_name(path))}")
