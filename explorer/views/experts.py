"""Experts: per tree, the expert in use (shipped or trained now), its layer sweep, and the baselines."""

from __future__ import annotations

import time

import streamlit as st

from explorer import state
from explorer.text import plain
from explorer.train_now import TASK_NAMES, train_expert
from probex.errors import ProbeXError
from probex.figures import layer_sweep_figure, training_curves_figure
from probex.experiments.sweep import default_task, matrix_layers

st.title("Experts")
st.markdown("One expert per Model Tree, reading one layer's weight matrix: learned probes pass through it, "
            "and their responses predict what the model was fine-tuned on.")

path = state.population_path()
zoo = state.current_zoo()
trees = state.real_trees(zoo)
if not trees:
    st.info("This population names no trees; every model is its own. Open a zoo whose models carry a tree.")
    st.stop()
tree = st.selectbox("Tree", trees, key="experts_tree")
tree_zoo = zoo.select(tree=tree)

# -- the expert in use -------------------------------------------------------------------------
choice = state.expert_for(path, tree)
st.subheader("The expert in use")
if choice is None:
    st.info("No expert for this tree yet: train one below.")
else:
    expert = choice.expert
    metadata = getattr(expert, "metadata_", {}) or {}
    task = metadata.get("task") or ("align" if choice.aligned else "classes")
    st.markdown(f"**{type(expert).__name__}** ({plain(choice.source)}) for {plain(TASK_NAMES.get(task, task))}: "
                f"**{expert.n_parameters_:,}** parameters, reading "
                + ", ".join(plain(layer) for layer in (expert.layers_ or [])) + ".")
    if choice.scores:
        st.plotly_chart(training_curves_figure(expert.history_, title=f"{tree}: the expert trained in this session"),
                        width="stretch", key="trained_curves")
        st.dataframe(choice.scores, hide_index=True, width="stretch",
                     column_config={"value": st.column_config.NumberColumn(format="%.3f")})
    if metadata:
        figures = {name: metadata[name] for name in ("val", "test", "zero_shot_test") if metadata.get(name) is not None}
        if figures:
            st.caption("Measured when it was built: " + ", ".join(f"{name} {value:.3f}" for name, value in figures.items()))

# -- the layer sweep ---------------------------------------------------------------------------
sweep = state.sweep_scores(path, tree)
if sweep:
    st.subheader("Layer sweep")
    st.caption("One expert per layer, scored on the validation split; the best layer (red) is the tree's "
               "recommended layer. Hover a bar for its test score and size.")
    st.plotly_chart(layer_sweep_figure(sweep, title=f"{tree}: validation score per layer"), width="stretch",
                    key="sweep_chart")

# -- ProbeX vs the baselines ---------------------------------------------------------------------
figures = state.check_figures(path)
discriminative = figures.get("classifiers", {}).get(tree)
generative = (figures.get("aligned", {}).get(tree)
              if tree in state.shipped_expert_dirs(path) and choice and choice.aligned else None)
if discriminative:
    st.subheader("ProbeX vs Dense vs StatNN (test, mean binary accuracy)")
    st.dataframe([
        {"expert": "ProbeX", "layer": discriminative["layer"], "accuracy": discriminative["probex"],
         "parameters": discriminative["probex_parameters"]},
        {"expert": "Dense", "layer": discriminative["layer"], "accuracy": discriminative["dense"],
         "parameters": discriminative["dense_parameters"]},
        {"expert": "StatNN", "layer": "every layer (statistics)", "accuracy": discriminative["statnn"], "parameters": None},
    ], hide_index=True, width="stretch",
        column_config={"accuracy": st.column_config.NumberColumn(format="%.3f")})
    st.caption(f"Chance {discriminative['chance']}; {discriminative['test_models']} test models.")
elif generative:
    st.subheader("Aligned experts (test; chance in the last column)")
    chance = generative.get("chance", {})
    rows = []
    for name, title in (("expert", "ProbeX, shipped"), ("single_layer", "ProbeX, one layer"),
                        ("linear_single_layer", "linear ProbeX (no ReLU), one layer")):
        if name in generative:
            entry = generative[name]
            rows.append({"expert": title, "layers": ", ".join(entry.get("layers", [entry.get("layer", "")])),
                         "in-distribution top-1": entry["in_distribution"], "zero-shot top-1": entry["zero_shot"],
                         "kNN": entry["knn"], "retrieval": entry["retrieval"],
                         "parameters": entry.get("n_parameters")})
    rows.append({"expert": "chance", "layers": "", "in-distribution top-1": chance.get("in_distribution"),
                 "zero-shot top-1": chance.get("zero_shot"), "kNN": chance.get("knn"),
                 "retrieval": chance.get("retrieval"), "parameters": None})
    st.dataframe(rows, hide_index=True, width="stretch")

# -- train one now -------------------------------------------------------------------------------
st.subheader("Train an expert now")
layers = [info.name for info in matrix_layers(tree_zoo)]
best = max(sweep, key=lambda row: row["val"])["layer"] if sweep else layers[0]
with st.form("train_form"):
    columns = st.columns(3)
    task = columns[0].selectbox("Task", list(TASK_NAMES), index=list(TASK_NAMES).index(default_task(tree_zoo)),
                                format_func=TASK_NAMES.get)
    layer = columns[1].selectbox("Layer", layers, index=layers.index(best) if best in layers else 0)
    epochs = columns[2].number_input("Epochs (at most; stops 20 epochs after the best)", 1, 500, 100)
    columns = st.columns(3)
    n_probes = columns[0].select_slider("r_U (probes)", [4, 8, 16, 32, 64, 128], value=32)
    proj_dim = columns[1].select_slider("r_V (projection)", [4, 8, 16, 32, 64, 128], value=32)
    rep_dim = columns[2].select_slider("r_T (representation)", [4, 8, 16, 32, 64, 128], value=32)
    submitted = st.form_submit_button("Train", type="primary")

if submitted:
    bar = st.progress(0.0, text="reading the layer of every model ...")
    chart = st.empty()
    history: list = []
    last_draw = [0.0]

    def progress(done: int, total: int, log) -> None:
        history.append(log)
        bar.progress(done / total, text=str(log))
        if time.monotonic() - last_draw[0] > 0.5 or done == total:
            last_draw[0] = time.monotonic()
            chart.plotly_chart(training_curves_figure(history, title=f"{tree}: training {layer}"), width="stretch")

    try:
        run = train_expert(tree_zoo, task, layer, int(n_probes), int(proj_dim), int(rep_dim), int(epochs),
                           progress=progress)
    except (ProbeXError, ValueError) as error:
        st.error(f"Training failed: {plain(error)}")
    else:
        bar.progress(1.0, text=f"done: best epoch {run.expert.best_epoch_} of {len(history)}")
        chart.plotly_chart(training_curves_figure(history, title=f"{tree}: training {layer}"), width="stretch",
                           key="training_curves")
        state.keep_trained_expert(path, tree, run.expert, run.scores)
        st.success(f"The new expert is now the {plain(tree)} expert for this session"
                   + (" (Search and Atlas use it)." if task == "align" else "."))
        st.dataframe(run.scores, hide_index=True, width="stretch",
                     column_config={"value": st.column_config.NumberColumn(format="%.3f")})

if path in st.session_state.get(state.TRAINED_KEY, {}) and tree in state.trained_experts(path):
    if st.button("Forget the expert trained in this session", key="forget_trained"):
        del state.trained_experts(path)[tree]
        st.rerun()
