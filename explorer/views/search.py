"""Search: a prompt -> the models fine-tuned on it (images first, calibrated scores); a model -> its top labels."""

from __future__ import annotations

import streamlit as st

from explorer import address, state, uploads
from explorer.finder import find_models
from explorer.text import plain, plain_error
from explorer.widgets import held_out_badge, image_grid, link_column, model_link, with_links
from probex.errors import ProbeXError

PROMPT_MODE = "Find models for a prompt"
MODEL_MODE = "What is this model?"
MODES = {"prompt": PROMPT_MODE, "model": MODEL_MODE}

st.title("Search models with words")

path = state.population_path()
zoo = state.current_zoo()
experts = state.current_aligned_experts(path, zoo)

trees = list(experts)
columns = st.columns([1, 2]) if len(trees) > 1 else [None, st.container()]
address.restore("search_tree", "tree", choices=trees, default=trees[0])
tree = columns[0].selectbox("Tree", trees, key="search_tree") if len(trees) > 1 else trees[0]
address.keep("search_tree", "tree", default=trees[0])
choice = experts[tree]
address.restore("search_mode", "mode", parse=lambda text: MODES.get(text), choices=list(MODES.values()),
                default=PROMPT_MODE)
mode = columns[1].radio("Mode", list(MODES.values()), horizontal=True, key="search_mode")
address.keep("search_mode", "mode", default=PROMPT_MODE, text=lambda value: next(k for k, v in MODES.items() if v == value))
try:
    index = state.model_index(path, tree, choice.token, choice.expert)
except ProbeXError as error:
    st.error(f"Cannot index the models of {plain(tree)}: {plain_error(error)}")
    st.stop()
st.caption(f"{len(index):,} models of **{plain(tree)}**, expert {plain(choice.source)} "
           f"({type(choice.expert).__name__} on {plain(', '.join(choice.expert.layers_))}).")


def set_prompt(text: str) -> None:
    st.session_state["prompt"] = text


if mode == PROMPT_MODE:
    address.restore("prompt", "prompt", default="")
    prompt = st.text_input("Prompt", key="prompt", placeholder="a purple heart", max_chars=500,
                           help="Any text; it is read like the class names the expert was trained on "
                                "('a photo of a ...').")
    address.keep("prompt", "prompt", default="")
    address.restore("search_k", "k", parse=int, default=10)
    k = st.slider("Models to show", 5, 50, key="search_k")
    address.keep("search_k", "k", default=10)
    seen = set(getattr(choice.expert, "classes_", []) or [])
    unseen = sorted({label for record in index.records for label in record.labels} - seen)
    examples = (unseen[:: max(len(unseen) // 4, 1)][:4] if unseen else sorted(index.classes)[:4])
    buttons = st.columns(len(examples) + 1)
    buttons[0].caption("Try a concept the expert never saw:" if unseen else "Try:")
    for column, example in zip(buttons[1:], examples):
        column.button(f"a {example}", key=f"example_{example}", on_click=set_prompt, args=(f"a {example}",))
    if prompt.strip():
        try:
            found = find_models(path, zoo, prompt, k, tree)
        except (ProbeXError, ValueError) as error:
            st.error(plain_error(error))
            st.stop()
        st.subheader(f"Models for “{plain(prompt, 60)}”")
        if found.strength is not None:
            (st.warning if found.strength.weak else st.caption)(plain(found.strength.describe()) + ".")
        with_images = [hit for hit in found.hits if hit.images]
        image_grid(with_images, lambda hit: hit.images[:2],
                   lambda hit: f"#{hit.rank} · match {hit.match:.0%} · **{plain(', '.join(hit.labels), 40)}**"
                   f"{held_out_badge(bool(set(hit.labels) - found.seen))}  \n{model_link(hit.model_id, 32)}",
                   per_row=5, width=72, per_item=2)
        import pandas as pd

        table = pd.DataFrame([{"rank": hit.rank, "model": hit.model_id, "match": hit.match, "z": hit.z,
                               "cosine": hit.score, "concept": ", ".join(hit.labels), "split": hit.split,
                               "held out": bool(set(hit.labels) - found.seen)} for hit in found.hits])
        st.dataframe(with_links(table), hide_index=True, width="stretch", column_config={
            "model": link_column(),
            "match": st.column_config.ProgressColumn(
                "match", min_value=0.0, max_value=1.0, format="percent",
                help="Calibrated: the share of real matches (every model against its own concept's name) that "
                     "score lower than this model does for the prompt."),
            "z": st.column_config.NumberColumn("z", format="%.1f", help="Standard score among all models of the tree."),
            "cosine": st.column_config.NumberColumn(format="%.3f")})
    else:
        st.caption("Type a prompt, or click one of the examples.")
else:
    st.query_params.pop("prompt", None)
    source = st.radio("Model", ("Pick one of the tree's models", "Upload a model file"), horizontal=True,
                      key="what_source")
    model = None
    if source.startswith("Pick"):
        labels = {record.id: f"{record.id} · {', '.join(record.labels)} · {record.split}" for record in index.records}
        model = st.selectbox("Model (type an id, a concept or a split)", list(labels), format_func=labels.get,
                             key="what_model")
    else:
        uploaded = st.file_uploader("A model's weights (.safetensors)", key="what_upload",
                                    max_upload_size=uploads.upload_limit_mb())
        if uploaded is not None:
            try:
                model = uploads.read_upload(uploaded).records[0].path
            except ProbeXError as error:
                st.error(plain_error(error))
    if model is not None:
        from probex.language.calibration import calibrated_match

        try:
            labels = index.top_labels(model, k=5)
            reference = index.reference_scores()
        except (ProbeXError, ValueError) as error:
            st.error(plain_error(error))
        else:
            seen = set(getattr(choice.expert, "classes_", []) or [])
            st.subheader("Top zero-shot labels")
            st.caption(f"Among the {len(index.classes)} class names of {plain(tree)}, held-out ones included.")
            st.dataframe([{"label": label, "match": float(calibrated_match(score, reference)), "cosine": score,
                           "held out": label not in seen} for label, score in labels], hide_index=True,
                         width="stretch", column_config={
                             "match": st.column_config.ProgressColumn("match", min_value=0.0, max_value=1.0,
                                                                      format="percent"),
                             "cosine": st.column_config.NumberColumn(format="%.3f")})
            if isinstance(model, str):
                record = zoo.record(model)
                st.markdown(f"Its true concept: **{plain(', '.join(record.labels))}** ({plain(record.split)}) · "
                            f"{model_link(record.id)}")
                if record.images:
                    st.image([str(image) for image in record.images[:6]], width=72)
