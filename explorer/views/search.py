"""Search: a prompt -> the models fine-tuned on it (images first, calibrated scores); a model -> its top labels."""

from __future__ import annotations

import streamlit as st

from explorer import address, state, uploads
from explorer.finder import find_in_zoo, find_models
from explorer.text import plain, plain_error
from explorer.widgets import held_out_badge, image_grid, link_column, model_link, with_links
from probex.errors import ProbeXError

PROMPT_MODE = "Find models for a prompt"
MODEL_MODE = "What is this model?"
MODES = {"prompt": PROMPT_MODE, "model": MODEL_MODE}

st.title("Search models with words")

WHOLE_ZOO = "All trees"

path = state.population_path()
zoo = state.current_zoo()
answering = state.answering_experts(path, zoo)
if not answering:
    st.info("No tree of this population has an expert, so no tree can answer a prompt. Train one on the Experts "
            "page (classification, or alignment with class names).")
    st.stop()
experts = state.aligned_experts(path, zoo)
trees = [WHOLE_ZOO, *experts]
columns = st.columns([1, 2])
address.restore("search_tree", "tree", choices=trees, default=WHOLE_ZOO)
tree = columns[0].selectbox("Trees", trees, key="search_tree",
                            help="All trees: every tree with an expert answers a prompt (aligned trees through the "
                                 "weight-language space, classifier trees through their class names). "
                                 "One aligned tree: its models only, and 'What is this model?'.")
address.keep("search_tree", "tree", default=WHOLE_ZOO)
whole = tree == WHOLE_ZOO
if whole:
    mode = PROMPT_MODE
    index = choice = None
    columns[1].caption("Every tree answers in its own way; scores are on one scale: the probability that the model "
                       "was fine-tuned on what the prompt names. Pick an aligned tree to ask what one model is.")
    st.caption(f"{len(zoo):,} models; {len(answering)} tree(s) can answer: "
               f"{plain(', '.join(answering))}.")
else:
    choice = experts[tree]
    address.restore("search_mode", "mode", parse=lambda text: MODES.get(text), choices=list(MODES.values()),
                    default=PROMPT_MODE)
    mode = columns[1].radio("Mode", list(MODES.values()), horizontal=True, key="search_mode")
    address.keep("search_mode", "mode", default=PROMPT_MODE,
                 text=lambda value: next(k for k, v in MODES.items() if v == value))
    try:
        index = state.model_index(path, tree, choice.token, choice.expert)
    except ProbeXError as error:
        st.error(f"Cannot index the models of {plain(tree)}: {plain_error(error)}")
        st.stop()
    st.caption(f"{len(index):,} models of **{plain(tree)}**, expert {plain(choice.source)} "
               f"({type(choice.expert).__name__} on {plain(', '.join(choice.expert.layers_))}).")


def seen_by(tree_name: str) -> set:
    """The concepts the tree's expert saw in training (to badge held-out ones)."""
    expert = answering[tree_name].expert if tree_name in answering else None
    return set(getattr(expert, "classes_", []) or [])


def show_zoo_result(result) -> None:
    """Hits of every answering tree, images first, on the shared calibrated scale."""
    import pandas as pd

    st.subheader(f"Models for “{plain(result.prompt, 60)}”")
    if result.weak:
        st.warning(plain(result.note))
    elif result.best is not None:
        st.caption(f"Best match: p = {result.best:.2f} that the model was fine-tuned on what the prompt names.")
    with_images = [hit for hit in result.hits if hit.images]
    image_grid(with_images, lambda hit: hit.images[:2],
               lambda hit: f"#{hit.rank} · p {hit.score:.2f} · **{plain(hit.tree, 24)}**"
               f"{held_out_badge(hit.method == 'aligned' and bool(set(hit.labels) - seen_by(hit.tree)))}  \n"
               f"{plain(hit.why, 70)}  \n{model_link(hit.model_id, 32)}",
               per_row=5, width=72, per_item=2, key="zoo_grid")
    table = result.to_frame().drop(columns=["image"])
    st.dataframe(with_links(table), hide_index=True, width="stretch", column_config={
        "model": link_column(),
        "score": st.column_config.ProgressColumn(
            "p", min_value=0.0, max_value=1.0, format="%.2f",
            help="The probability that the model was fine-tuned on what the prompt names, as its tree's expert "
                 "reads it (the same scale for every tree)."),
        "percentile": st.column_config.ProgressColumn(
            "within its tree", min_value=0.0, max_value=1.0, format="percent",
            help="The model's place among its own tree's models for this prompt (100% = the tree's best)."),
        "why": st.column_config.TextColumn("why it matched", width="large")})
    readings = [answer for answer in result.trees if answer.method is not None]
    silent = len(result.trees) - len(readings)
    with st.expander("How each tree read the prompt", expanded=result.weak):
        st.dataframe(pd.DataFrame([{"tree": answer.tree, "method": answer.method, "models": answer.models,
                                    "best p": answer.best, "reading": answer.note} for answer in readings]),
                     hide_index=True, width="stretch",
                     column_config={"best p": st.column_config.NumberColumn(format="%.2f")})
        if silent:
            st.caption(f"{silent} tree(s) have no expert here and cannot answer a prompt (the forest's "
                       "independently initialised models, or trees nobody trained an expert for).")


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
    if whole:
        vocabulary = sorted({name for choice_ in answering.values()
                             for name in (getattr(choice_.expert, "classes_", None) or [])})
        examples, unseen = vocabulary[:: max(len(vocabulary) // 4, 1)][:4], []
    else:
        seen = set(getattr(choice.expert, "classes_", []) or [])
        unseen = sorted({label for record in index.records for label in record.labels} - seen)
        examples = (unseen[:: max(len(unseen) // 4, 1)][:4] if unseen else sorted(index.classes)[:4])
    buttons = st.columns(len(examples) + 1)
    buttons[0].caption("Try a concept the expert never saw:" if unseen else "Try:")
    for column, example in zip(buttons[1:], examples):
        column.button(f"a {example}", key=f"example_{example}", on_click=set_prompt, args=(f"a {example}",))
    if prompt.strip() and whole:
        try:
            result = find_in_zoo(path, zoo, prompt, k)
        except ProbeXError as error:
            st.error(plain_error(error))
            st.stop()
        show_zoo_result(result)
    elif prompt.strip():
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
