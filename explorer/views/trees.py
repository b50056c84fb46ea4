"""Trees: the Model Trees the router finds, how well it routes, a map of the raw weights, and routing an upload."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from explorer import state, uploads
from explorer.text import plain
from probex.errors import ProbeXError
from probex.figures import dendrogram_figure, weight_map_figure

st.title("Model Trees")
st.markdown("The router clusters the models on the raw weights of one layer (hierarchical clustering, "
            "the number of trees read off the largest gap in the dendrogram), without being told the trees.")

path = state.population_path()
zoo = state.current_zoo()
fitted = state.current_router(path)
router = fitted.router

columns = st.columns(4)
columns[0].metric("models clustered", f"{len(fitted.fit_ids):,}")
columns[1].metric("trees found", router.n_trees_)
columns[2].metric("true trees", len(set(router.tree_truth_.values())) if router.tree_truth_ else "unknown")
columns[3].metric(f"routing accuracy ({len(fitted.held_ids):,} other models)",
                  "-" if fitted.held_accuracy is None else f"{fitted.held_accuracy:.1%}")
if len(state.real_trees(zoo)) < len(zoo.trees):
    st.caption("The population's forest (independently initialised models, which share no root) is left out of "
               "the clustering.")

st.plotly_chart(dendrogram_figure(router, title=f"Model Trees of {zoo.name}"), width="stretch", key="dendrogram")

st.subheader("Tree sizes")
table = router.tree_table()
for row in table:
    row["true tree"] = row.pop("true_tree") or "-"
    row["nearest the centre"] = row.pop("nearest_model")
st.dataframe(table, hide_index=True, width="stretch",
             column_config={"size": st.column_config.ProgressColumn("size", max_value=max(r["size"] for r in table),
                                                                     format="%d")})

if fitted.held_routes and any(truth is not None for truth in fitted.held_truth):
    st.subheader("Where the other models go")
    st.caption(f"The {len(fitted.held_ids):,} models not clustered, routed to the nearest tree centre: rows are "
               "their true trees, columns the trees found (named by the true tree most of their members have).")
    found_names = [("unknown tree" if tree is None else f"{tree} ({router.tree_truth_.get(tree, '?')})")
                   for tree in fitted.held_routes]
    st.dataframe(pd.crosstab(pd.Series([t or "unknown" for t in fitted.held_truth], name="true tree"),
                             pd.Series(found_names, name="tree found")), width="stretch")

st.subheader("The raw weights, in two dimensions")
names = [architecture.name for architecture in router.architectures_]
chosen = st.selectbox("Architecture", names, key="map_architecture") if len(names) > 1 else names[0]
architecture = router.architectures_[names.index(chosen)]
ids = [router.ids_[position] for position in architecture.positions]
found = [router.tree_names_[router.labels_[position]] for position in architecture.positions]
truth = [router.true_trees_[position] for position in architecture.positions] if router.true_trees_ else None
bank = state.layer_bank(path, architecture.layer, tuple(ids))
colourings = {"tree found": found} if truth is None else {"tree found": found, "true tree": truth}
st.plotly_chart(weight_map_figure(bank, colourings, ids=ids,
                                  title=f"{chosen}: layer {architecture.layer}, first two principal components"),
                width="stretch", key="weight_map")

st.subheader("Which tree does a model join?")
uploaded = st.file_uploader("A model's weights (.safetensors)", key="trees_upload",
                            max_upload_size=uploads.upload_limit_mb(),
                            help="The router sends it to the nearest tree centre, or says 'unknown tree' when it "
                                 "is farther than any tree's members are.")
if uploaded is not None:
    try:
        model = uploads.read_upload(uploaded)
        trees, distances = router.route(model, return_distance=True)
    except ProbeXError as error:
        st.error(plain(error))
    else:
        tree = trees[0]
        if tree is None:
            reason = "its architecture matches no tree" if distances[0] != distances[0] else \
                f"it lies {distances[0]:.3g} from the nearest centre, farther than that tree's models"
            st.warning(f"**{plain(uploaded.name)}**: unknown tree ({reason}).")
        else:
            truth_name = router.tree_truth_.get(tree)
            st.success(f"**{plain(uploaded.name)}** joins **{plain(tree)}**" + (f" (the {plain(truth_name)} tree)" if truth_name else "")
                       + f", at distance {distances[0]:.3g} from its centre.")
