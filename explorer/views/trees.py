"""Trees: the Model Trees the router finds, named; how well it routes; the dendrogram and a map of the raw
weights (select on it); and where an uploaded model lands on both."""

from __future__ import annotations

import html

import numpy as np
import pandas as pd
import streamlit as st

from explorer import address, state, uploads
from explorer.text import plain, plain_error
from explorer.widgets import apply_map_event, link_column, selection_panel, with_links
from probex.errors import ProbeXError
from probex.figures import DendrogramMark, dendrogram_figure, weight_map_figure

MODEL_PAGE = "views/model.py"

st.title("Model Trees")
st.markdown("The router clusters the models on the raw weights of one layer (hierarchical clustering, the number of "
            "trees read off the highest significant gap in the dendrogram), without being told the trees.")

path = state.population_path()
zoo = state.current_zoo()
fitted = state.current_router(path)
router = fitted.router
names = state.tree_names(path)
token = state.population_token(path)

columns = st.columns(4)
columns[0].metric("models clustered", f"{len(fitted.fit_ids):,}")
columns[1].metric("trees found", router.n_trees_)
columns[2].metric("true trees", len(set(router.tree_truth_.values())) if router.tree_truth_ else "unknown")
columns[3].metric(f"routing accuracy ({len(fitted.held_ids):,} other models)",
                  "-" if fitted.held_accuracy is None else f"{fitted.held_accuracy:.1%}")
if len(state.real_trees(zoo)) < len(zoo.trees):
    st.caption("The population's forest (independently initialised models, which share no root) is left out of "
               "the clustering.")

# -- an uploaded model: where it lands (drawn on the dendrogram and the map below) ----------------------
st.subheader("Which tree does a model join?")
uploaded = st.file_uploader("A model's weights (.safetensors)", key="trees_upload",
                            max_upload_size=uploads.upload_limit_mb(),
                            help="The router sends it to the nearest tree centre, or says 'unknown tree' when it is "
                                 "farther than any tree's members are. It is drawn on the dendrogram and the map.")
placed = None  # (architecture index, placement, nearest member id, the upload's zoo)
if uploaded is not None:
    from probex.trees.placement import place

    try:
        model = uploads.read_upload(uploaded)
        placement = place(router, model, state.tree_spread(path))[0]
    except ProbeXError as error:
        st.error(plain_error(error))
    else:
        if placement.nearest is None:
            st.warning(f"**{plain(uploaded.name)}**: unknown tree (its architecture matches no tree here).")
        else:
            number = next(i for i, a in enumerate(router.architectures_)
                          if router.tree_names_.index(placement.nearest) in a.tree_indices)
            chosen = router.architectures_[number]
            ids = tuple(router.ids_[position] for position in chosen.positions)
            nearest_member = ids[int(state.distances_to_upload(path, chosen.layer, ids, model).argmin())]
            placed = (number, placement, nearest_member, model)
            label = names.labels.get(placement.nearest, placement.nearest)
            if placement.tree is None:
                st.warning(f"**{plain(uploaded.name)}**: unknown tree. It lies {placement.distance:.3g} from the "
                           f"nearest centre, that of **{plain(label)}**, whose models lie within {placement.radius:.3g}.")
            else:
                st.success(f"**{plain(uploaded.name)}** joins **{plain(label)}**, at distance {placement.distance:.3g} "
                           f"from its centre (the tree's models lie within {placement.radius:.3g}; closer than "
                           f"{1 - placement.percentile:.0%} of them).")

# -- the dendrogram ----------------------------------------------------------------------------------------
mark = None
if placed is not None:
    number, placement, nearest_member, _ = placed
    mark = DendrogramMark(panel=number, tree=placement.tree or placement.nearest, near_model=nearest_member,
                          text=f"{html.escape(uploaded.name)}<br>distance {placement.distance:.3g} to the centre of "
                               f"{html.escape(names.labels.get(placement.nearest, ''))}<br>its radius {placement.radius:.3g}")
leaf = st.plotly_chart(state.figure("dendrogram", (path, token, None if mark is None else repr(mark)),
                             lambda: dendrogram_figure(state.dendrograms(path, token), title=f"Model Trees of {zoo.name}",
                                                       labels=names.labels, colours=names.colours,
                                                       panel_titles=[html.escape(name).replace(", largest ", "<br>largest ")
                                                                     for name in names.architectures],
                                                       mark=mark)),
                       width="stretch", key="dendrogram", on_select="rerun", selection_mode="points")
clicked = [point.get("customdata") for point in (leaf.selection.get("points", []) if leaf else [])]
clicked = [model_id for model_id in clicked if isinstance(model_id, str) and model_id in zoo.ids]
if tuple(clicked) != st.session_state.get("dendrogram_event", ()):  # a new click on a leaf opens its model
    st.session_state["dendrogram_event"] = ()  # coming back must not open it again
    st.switch_page(MODEL_PAGE, query_params={"model": clicked[0]})

st.subheader("The trees")
rows = []
for row in router.tree_table():
    architecture = names.architectures[next(i for i, a in enumerate(router.architectures_) if a.name == row["architecture"])]
    rows.append({"tree": names.labels[row["tree"]], "architecture": architecture, "layer": row["layer"],
                 "models": row["size"], "radius": row["radius"], "model nearest the centre": row["nearest_model"],
                 "true tree": row["true_tree"] or "-"})
st.dataframe(with_links(pd.DataFrame(rows), "model nearest the centre"), hide_index=True, width="stretch",
             column_config={"models": st.column_config.ProgressColumn("models", max_value=max(r["models"] for r in rows),
                                                                      format="%d"),
                            "radius": st.column_config.NumberColumn(format="%.3g"),
                            "model nearest the centre": link_column("model nearest the centre")})

if fitted.held_routes and any(truth is not None for truth in fitted.held_truth):
    st.subheader("Where the other models go")
    st.caption(f"The {len(fitted.held_ids):,} models not clustered, routed to the nearest tree centre: rows are their "
               "true trees, columns the trees found (named by the true tree most of their members have).")
    found_names = [("unknown tree" if tree is None else names.labels.get(tree, tree)) for tree in fitted.held_routes]
    st.dataframe(pd.crosstab(pd.Series([t or "unknown" for t in fitted.held_truth], name="true tree"),
                             pd.Series(found_names, name="tree found")), width="stretch")

# -- the raw weights in 2-D, with a linked selection -----------------------------------------------------------
st.subheader("The raw weights, in two dimensions")
choices = list(range(len(router.architectures_)))
if placed is not None and st.session_state.get("map_placed_upload") != uploaded.file_id:  # a new upload: show its map
    st.session_state["map_placed_upload"] = uploaded.file_id
    st.session_state["map_architecture"] = placed[0]
address.restore("map_architecture", "arch", parse=int, choices=choices, default=placed[0] if placed else 0)
number = (st.selectbox("Architecture", choices, format_func=lambda i: names.architectures[i], key="map_architecture")
          if len(choices) > 1 else 0)
address.keep("map_architecture", "arch", default=0)
architecture = router.architectures_[number]
ids, mapped = state.weight_map_of(path, token, number)
found = [names.labels[router.tree_names_[router.labels_[position]]] for position in architecture.positions]
truth = [router.true_trees_[position] for position in architecture.positions] if router.true_trees_ else None
colourings = {"tree found": found} if truth is None else {"tree found": found, "true tree": truth}
marks = []
if placed is not None and placed[0] == number:
    where = mapped.place(placed[3].bank(architecture.layer, cache=False))[0]
    marks.append({"x": float(where[0]), "y": float(where[1]), "text": mark.text,
                  "colour": names.colours.get(placed[1].tree or "", "#111111")})
key = f"trees_selection:{number}"
st.session_state.setdefault(key, [])
more = st.session_state.get(f"{key}:more")
selected = tuple(st.session_state[key])
event = st.plotly_chart(
    state.figure("weight map", (path, token, number, repr(marks), selected,
                                None if more is None else np.packbits(more).tobytes()),
                 lambda: weight_map_figure(mapped, colourings, ids=ids, colours=names.colours, marks=marks,
                                           selected=selected or None, highlight=more,
                                           title=f"{names.architectures[number]}: layer {architecture.layer}, "
                                                 "first two principal components")),
    width="stretch", key=f"weight_map_{number}", on_select="rerun", selection_mode=("points", "box", "lasso"),
    config={"scrollZoom": True, "displaylogo": False})
clicked = apply_map_event(key, event)
if clicked is not None:
    st.switch_page(MODEL_PAGE, query_params={"model": ids[clicked]})
st.caption("Lasso or box models to list them; click one to open its page. The tree found and the true tree share "
           "a colour when they agree." + (f" The layer is large: the map is drawn on a {mapped.method} of every model's "
                                         "weights (distances are kept on average)." if mapped.method != "exact" else ""))
if st.session_state[key]:
    from probex.language.facets import model_table

    by_id = {record.id: record for record in zoo.select(ids=list(ids)).records}
    records = [by_id[model_id] for model_id in ids]  # the map's order
    facets = model_table(records)

    def similarity(rows):
        """Every model's cosine with the selection's mean direction, on the map's (centred) coordinates."""
        from probex.language.selection import similarity_to_selection

        return similarity_to_selection(mapped.centred(state.layer_bank(path, architecture.layer, ids)), rows)

    highlight, cleared = selection_panel(f"trees_sel_{number}", facets, st.session_state[key],
                                         lambda row: records[row].images, similarity=similarity)
    if cleared:
        st.session_state[key] = []
        st.session_state.pop(f"{key}:more", None)
        st.rerun()
    if (highlight is None) != (more is None) or (highlight is not None and not np.array_equal(highlight, more)):
        st.session_state[f"{key}:more"] = highlight
        st.rerun()
elif st.session_state.pop(f"{key}:more", None) is not None:
    st.rerun()
