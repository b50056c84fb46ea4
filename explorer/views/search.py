"""Search: a prompt -> the models fine-tuned on it (scores, training images); a model -> its top labels."""

from __future__ import annotations

import streamlit as st

from explorer import state, uploads
from explorer.text import plain
from probex.errors import ProbeXError

PROMPT_MODE = "Find models for a prompt"
MODEL_MODE = "What is this model?"

st.title("Search models with words")

path = state.population_path()
zoo = state.current_zoo()
experts = state.current_aligned_experts(path, zoo)

columns = st.columns([1, 2]) if len(experts) > 1 else [None, st.container()]
tree = columns[0].selectbox("Tree", list(experts), key="search_tree") if len(experts) > 1 else next(iter(experts))
choice = experts[tree]
mode = columns[1].radio("Mode", (PROMPT_MODE, MODEL_MODE), horizontal=True, key="search_mode")
try:
    index = state.model_index(path, tree, choice.token, choice.expert)
except ProbeXError as error:
    st.error(f"Cannot index the models of {plain(tree)}: {plain(error)}")
    st.stop()
st.caption(f"{len(index):,} models of **{plain(tree)}**, expert {plain(choice.source)} "
           f"({type(choice.expert).__name__} on {plain(', '.join(choice.expert.layers_))}).")


def image_grid(hits, per_row: int = 5) -> None:
    """The hits' first training images, best first, with rank, id and score under each."""
    shown = [hit for hit in hits if hit.images]
    for start in range(0, len(shown), per_row):
        for column, hit in zip(st.columns(per_row), shown[start:start + per_row]):
            column.image([str(image) for image in hit.images[:2]], width=72)
            column.caption(f"#{hit.rank} · {hit.score:.3f}  \n**{plain(', '.join(hit.labels))}**  \n{plain(hit.model_id)}")


def hits_table(hits) -> None:
    st.dataframe([{"rank": hit.rank, "model": hit.model_id, "score": hit.score, "concept": ", ".join(hit.labels),
                   "split": hit.split} for hit in hits], hide_index=True, width="stretch",
                 column_config={"score": st.column_config.ProgressColumn("score", min_value=-1.0, max_value=1.0,
                                                                         format="%.3f")})


if mode == PROMPT_MODE:
    if "prompt" not in st.session_state:
        st.session_state["prompt"] = st.query_params.get("prompt", "")
    prompt = st.text_input("Prompt", key="prompt", placeholder="a purple heart",
                           help="Any text; it is read like the class names the expert was trained on "
                                "('a photo of a ...').")
    k = st.slider("Models to show", 5, 50, 10, key="search_k")
    if prompt.strip():
        st.query_params["prompt"] = prompt
        try:
            hits = index.search(prompt, k=k)
        except (ProbeXError, ValueError) as error:
            st.error(plain(error))
        else:
            st.subheader(f"Models for “{plain(prompt)}”")
            hits_table(hits)
            image_grid(hits)
    else:
        st.query_params.pop("prompt", None)
        st.caption("Try a concept the expert never saw in training, e.g. “a purple square” or “a cyan heart”.")
else:
    st.query_params.pop("prompt", None)
    source = st.radio("Model", ("Pick one of the tree's models", "Upload a model file"), horizontal=True,
                      key="what_source")
    model = None
    if source.startswith("Pick"):
        model = st.selectbox("Model id", index.ids, key="what_model")
    else:
        uploaded = st.file_uploader("A model's weights (.safetensors)", key="what_upload",
                                    max_upload_size=uploads.upload_limit_mb())
        if uploaded is not None:
            try:
                model = uploads.read_upload(uploaded).records[0].path
            except ProbeXError as error:
                st.error(plain(error))
    if model is not None:
        try:
            labels = index.top_labels(model, k=5)
        except (ProbeXError, ValueError) as error:
            st.error(plain(error))
        else:
            st.subheader("Top zero-shot labels")
            st.caption(f"Among the {len(index.classes)} class names of {plain(tree)}, held-out ones included.")
            st.dataframe([{"label": label, "score": score} for label, score in labels], hide_index=True,
                         width="stretch", column_config={"score": st.column_config.ProgressColumn(
                             "score", min_value=-1.0, max_value=1.0, format="%.3f")})
            if isinstance(model, str):
                record = zoo.record(model)
                st.caption(f"Its true concept: **{plain(', '.join(record.labels))}** ({plain(record.split)})")
                if record.images:
                    st.image([str(image) for image in record.images[:6]], width=72)
