"""Experts: per tree, the expert in use (shipped or trained now), its layer sweep, the baselines, and training
in the background (it goes on when the page is left; progress, time left and Cancel when it is back)."""

from __future__ import annotations

import io
import tempfile
import zipfile
from pathlib import Path

import streamlit as st

from explorer import address, jobs, state
from explorer.sidebar import THREADS_KEY
from explorer.text import plain, plain_error
from explorer.train_now import TASK_NAMES, as_text, recommended_layer, train_expert
from probex.figures import layer_sweep_figure, training_curves_figure
from probex.zoo.extras import recommended_layers
from probex.experiments.harness import tree_params, tree_views
from probex.experiments.sweep import default_task, matrix_layers

SWEEPS_KEY = "session_sweeps"  # session_state: population -> tree -> sweep rows

#: The probe views offered when training (probex.experts.views): ProbeX's one view, the input-side second-order
#: view (it reads trees whose models start their heads at random, as Hub fine-tunes do), or all four.
VIEW_CHOICES = {"xu": "X U (ProbeX)", "first": "X U + Xᵀ U", "xtxu": "Xᵀ X U", "all": "all four (multi-view)"}

st.title("Experts")
st.markdown("One expert per Model Tree, reading one layer's weight matrix: learned probes pass through it, "
            "and their responses predict what the model was fine-tuned on.")

path = state.population_path()
zoo = state.current_zoo()
trees = state.real_trees(zoo)
if not trees:
    st.info("This population names no trees; every model is its own. Open a zoo whose models carry a tree.")
    st.stop()
address.restore("experts_tree", "tree", choices=trees, default=trees[0])
tree = st.selectbox("Tree", trees, key="experts_tree")
address.keep("experts_tree", "tree", default=trees[0])
tree_zoo = zoo.select(tree=tree)
running = st.session_state.setdefault(jobs.JOBS_KEY, {})
train_key, sweep_key = (path, tree, "train"), (path, tree, "sweep")
session_sweeps = st.session_state.setdefault(SWEEPS_KEY, {}).setdefault(path, {})

# -- finished background work is taken first, so the page below shows its result at once -------------------
for key in (train_key, sweep_key):
    job = running.get(key)
    if job is None or job.running or job.collected:
        continue
    job.collected = True
    if job.error == "cancelled":
        st.info(f"{plain(job.title)}: cancelled.")
    elif job.error is not None:
        st.error(f"{plain(job.title)} failed: {plain_error(job.error)}")
    elif job.kind == "train":
        state.keep_trained_expert(path, tree, job.result.expert, job.result.scores)
        st.success(f"The new expert is now the {plain(tree)} expert for this session"
                   + (" (Search and Atlas use it)." if state.expert_for(path, tree).aligned else "."))
    else:
        session_sweeps[tree] = [vars(score) for score in job.result.scores]
        st.success(f"Layer sweep of {plain(tree)} done: {len(session_sweeps[tree])} layers.")

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
        st.plotly_chart(state.figure("curves", (choice.token,), lambda: training_curves_figure(
            expert.history_, title=f"{tree}: the expert trained in this session")), width="stretch", key="trained_curves")
        st.dataframe([{**row, "value": as_text(row["value"]), "chance": as_text(row["chance"])} for row in choice.scores],
                     hide_index=True, width="stretch")
        archives = st.session_state.setdefault("expert_archives", {})
        if choice.token not in archives:
            with tempfile.TemporaryDirectory(prefix="probex-expert-") as folder:
                expert.save(Path(folder) / "expert", metadata={"tree": tree, "task": task})
                buffer = io.BytesIO()
                with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
                    for file in sorted((Path(folder) / "expert").iterdir()):
                        archive.write(file, f"{tree}-expert/{file.name}")
                archives[choice.token] = buffer.getvalue()
        st.download_button("Download this expert (load it with probex.load_expert)", archives[choice.token],
                            file_name=f"{tree}-expert.zip", mime="application/zip", icon=":material/download:")
    if metadata:
        figures = {name: metadata[name] for name in ("val", "test", "zero_shot_test") if metadata.get(name) is not None}
        if figures:
            st.caption("Measured when it was built: " + ", ".join(f"{name} {value:.3f}" for name, value in figures.items()))

# -- the layer sweep (shipped, or run here) -------------------------------------------------------
sweep = state.sweep_scores(path, tree) or session_sweeps.get(tree, [])
st.subheader("Layer sweep")
if sweep:
    st.caption("One expert per layer, scored on the validation split; the best layer (red) is the tree's "
               "recommended layer. Hover a bar for its test score and size.")
    st.plotly_chart(state.figure("sweep", (path, tree, repr(sweep)),
                                 lambda: layer_sweep_figure(sweep, title=f"{tree}: validation score per layer")),
                    width="stretch", key="sweep_chart")
elif sweep_key not in running or not running[sweep_key].running:
    st.caption("No layer sweep for this tree yet. A sweep trains a short expert on every layer and scores it on the "
               "validation split, to find the layer that tells most.")
    if st.button("Sweep every layer", key="start_sweep", icon=":material/play_arrow:"):
        from probex.experiments.sweep import sweep_layers

        jobs.start(running, sweep_key, "sweep", f"Layer sweep of {tree}",
                   lambda job: sweep_layers(tree_zoo, default_task(tree_zoo),
                                            params=tree_params(zoo, tree, {"device": state.training_device()}),
                                            progress=job.progress),
                   threads=st.session_state.get(THREADS_KEY, 1))
        st.rerun()

# -- ProbeX vs the baselines ---------------------------------------------------------------------
figures = state.check_figures(path)
discriminative = figures.get("classifiers", {}).get(tree)
generative = (figures.get("aligned", {}).get(tree)
              if tree in state.shipped_expert_dirs(path) and choice and choice.aligned else None)
if discriminative:
    st.subheader("ProbeX vs Dense vs StatNN (test, mean binary accuracy)")
    st.dataframe([
        {"expert": "ProbeX", "layer": discriminative["layer"], "accuracy": discriminative["probex"],
         "parameters": as_text(discriminative["probex_parameters"])},
        *([{"expert": f"multi-view ProbeX ({discriminative['multiview_views']})", "layer": discriminative["layer"],
            "accuracy": discriminative["multiview"], "parameters": as_text(discriminative["multiview_parameters"])}]
          if discriminative.get("multiview") is not None else []),
        {"expert": "Dense", "layer": discriminative["layer"], "accuracy": discriminative["dense"],
         "parameters": as_text(discriminative["dense_parameters"])},
        {"expert": "StatNN", "layer": "every layer (statistics)", "accuracy": discriminative["statnn"], "parameters": "-"},
    ], hide_index=True, width="stretch", column_config={"accuracy": st.column_config.NumberColumn(format="%.3f")})
    st.caption(f"Chance {discriminative['chance']}; {discriminative['test_models']:,} test models.")
elif generative:
    st.subheader("Aligned experts (test; chance in the last row)")
    chance = generative.get("chance", {})
    rows = []
    for name, title in (("expert", "ProbeX, shipped"), ("single_layer", "ProbeX, one layer"),
                        ("linear_single_layer", "linear ProbeX (no ReLU), one layer")):
        if name in generative:
            entry = generative[name]
            rows.append({"expert": title, "layers": ", ".join(entry.get("layers", [entry.get("layer", "")])),
                         "in-distribution top-1": entry["in_distribution"], "zero-shot top-1": entry["zero_shot"],
                         "kNN": entry["knn"], "retrieval": entry["retrieval"],
                         "parameters": as_text(entry.get("n_parameters"))})
    rows.append({"expert": "chance", "layers": "", "in-distribution top-1": chance.get("in_distribution"),
                 "zero-shot top-1": chance.get("zero_shot"), "kNN": chance.get("knn"),
                 "retrieval": chance.get("retrieval"), "parameters": "-"})
    number = st.column_config.NumberColumn(format="%.3f")
    st.dataframe(rows, hide_index=True, width="stretch", column_config={
        "expert": st.column_config.TextColumn(width="large"), "in-distribution top-1": number,
        "zero-shot top-1": number, "kNN": number, "retrieval": number})

# -- train one now (in the background) -------------------------------------------------------------------
st.subheader("Train an expert now")
layers = [info.name for info in matrix_layers(tree_zoo)]
best = recommended_layer(layers, recommended_layers(zoo.root).get(tree), sweep)
with st.form("train_form"):
    columns = st.columns(3)
    task = columns[0].selectbox("Task", list(TASK_NAMES), index=list(TASK_NAMES).index(default_task(tree_zoo)),
                                format_func=TASK_NAMES.get)
    layer = columns[1].selectbox("Layer (the recommended one first)", layers, index=layers.index(best), key="train_layer")
    epochs = columns[2].number_input("Epochs (at most; stops 20 epochs after the best)", 1, 500, 100)
    columns = st.columns(3)
    n_probes = columns[0].select_slider("r_U (probes)", [4, 8, 16, 32, 64, 128], value=32)
    proj_dim = columns[1].select_slider("r_V (projection)", [4, 8, 16, 32, 64, 128], value=32)
    rep_dim = columns[2].select_slider("r_T (representation)", [4, 8, 16, 32, 64, 128], value=32)
    own_views = tree_views(zoo, tree) or "xu"  # the views the zoo names for this tree
    choices = VIEW_CHOICES if own_views in VIEW_CHOICES else {**VIEW_CHOICES, own_views: f"{own_views} (this tree's)"}
    if st.session_state.get("train_views_tree") != tree:  # a new tree: start from its own views
        st.session_state["train_views_tree"], st.session_state["train_views"] = tree, own_views
    views = st.radio("Probe views", list(choices), format_func=choices.get, horizontal=True,
                     key="train_views",
                     help="ProbeX reads X U (one view). Multi-view probes (MVProbe) also read X Xᵀ U, Xᵀ U and "
                          "Xᵀ X U: more parameters and time, often better zero-shot. A tree whose zoo names its views starts with them.")
    busy = train_key in running and running[train_key].running
    submitted = st.form_submit_button("Train", type="primary", disabled=busy)
if submitted and not busy:
    settings = (task, layer, int(n_probes), int(proj_dim), int(rep_dim), int(epochs))
    jobs.start(running, train_key, "train", f"Training {tree} on {layer}",
               lambda job: train_expert(tree_zoo, *settings, progress=job.progress, device=state.training_device(),
                                        views=views),
               threads=st.session_state.get(THREADS_KEY, 1))


@st.fragment(run_every=1.0)
def progress_of(key: tuple, name: str) -> None:
    """The running job's progress, time left and Cancel; a rerun of the page once it is done."""
    job = running.get(key)
    if job is None or not job.running:
        st.rerun()
    fraction = job.done / job.total if job.total else 0.0
    st.progress(min(fraction, 1.0), text=f"{plain(job.title)}: {job.done} of {job.total or '?'} "
                                         f"{'epochs' if job.kind == 'train' else 'layers'} · "
                                         f"{jobs.format_seconds(job.eta())} left")
    if job.kind == "train" and job.history:
        st.plotly_chart(training_curves_figure(job.history, title=job.title), width="stretch", key=f"{name}_curves")
    if st.button("Cancel", key=f"{name}_cancel", help="Stops at the next epoch (a sweep: after the current layer)."):
        job.cancel.set()
    st.caption("It goes on if you leave this page; come back to see it finish.")


for key, name in ((train_key, "training"), (sweep_key, "sweeping")):
    if key in running and running[key].running:
        progress_of(key, name)

if path in st.session_state.get(state.TRAINED_KEY, {}) and tree in state.trained_experts(path):
    if st.button("Forget the expert trained in this session", key="forget_trained"):
        del state.trained_experts(path)[tree]
        st.rerun()
