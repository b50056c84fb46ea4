"""Atlas: models and words in one map of the weight-language space; select, colour, shape, highlight, open."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import streamlit as st

from explorer import address, state
from explorer.text import plain, plain_error
from explorer.widgets import apply_map_event, map_chart, selection_panel
from probex.errors import ProbeXError
from probex.language.atlas_figure import SHAPES_BY_DEFAULT_UP_TO, atlas_figure  # not probex.figures: no scipy
from probex.language.facets import colour_fields, shape_fields, text_matches

MODEL_PAGE = "views/model.py"

st.title("Atlas of the weight-language space")
st.markdown("Every model of a tree, embedded by its aligned expert, and the tree's class names, embedded by the text "
            "encoder, in one 2-D map (UMAP, cosine): a model lands near the words that describe it. **Lasso or box** "
            "models to list them; **click** one to open its page; click a legend entry to hide it.")

path = state.population_path()
# A map this server or an earlier one drew is read back from disk (explorer.atlas_disk): drawn without opening the
# zoo or loading the experts, which happens only when the page needs them (a prompt, a selection).
on_disk = not state.trained_experts(path)
view = state.disk_atlas(path, None) if on_disk else None
if view is not None:
    trees = view.trees
else:
    trees = list(state.current_aligned_experts(path, state.current_zoo()))

address.restore("atlas_tree", "tree", choices=trees, default=trees[0])
tree = st.selectbox("Tree", trees, key="atlas_tree") if len(trees) > 1 else trees[0]
address.keep("atlas_tree", "tree", default=trees[0])
if view is not None and tree != trees[0]:
    view = state.disk_atlas(path, tree)


def opened() -> tuple:
    """(expert choice, ModelIndex, Atlas) of the tree, from the zoo and the expert (cached per server)."""
    choice = state.current_aligned_experts(path, state.current_zoo())[tree]
    try:
        index = state.model_index(path, tree, choice.token, choice.expert)
        return choice, index, state.atlas(path, tree, choice.token, index)
    except (ProbeXError, ValueError) as error:
        st.error(f"Cannot draw the atlas of {plain(tree)}: {plain_error(error)}")
        st.stop()


if view is not None:
    atlas, table, token = SimpleNamespace(points=view.points, message=view.message, method=view.method), view.table, view.key
    expert_token, expert_source = view.tokens[tree], view.sources[tree]
else:
    choice, index, atlas = opened()
    token = state.population_token(path)
    table = state.index_table(path, tree, choice.token, token, index)
    expert_token, expert_source = choice.token, choice.source
    if on_disk:
        state.keep_atlas(path, tree, choice.token, state.current_aligned_experts(path, state.current_zoo()), atlas, table)
n_models = len(table)
ids = atlas.points.loc[atlas.points["kind"] == "model", "model_id"].tolist()

fields = colour_fields(table)
shapes = ["(none)"] + shape_fields(table)
columns = st.columns([1, 1, 2])
address.restore("atlas_colour", "colour", choices=fields, default="concept" if "concept" in fields else fields[0])
colour = columns[0].selectbox("Colour by", fields, key="atlas_colour",
                              help="Any field: tree, split, concept and its parts, held out or seen, metadata. "
                                   "Numbers with many values get a colour scale.")
address.keep("atlas_colour", "colour", default="concept")
default_shape = "other words" if "other words" in shapes and n_models <= SHAPES_BY_DEFAULT_UP_TO else "(none)"
address.restore("atlas_shape", "shape", choices=shapes, default=default_shape)
shape = columns[1].selectbox("Shape by", shapes, key="atlas_shape",
                             help=f"Marker symbols by a field. Off by default past {SHAPES_BY_DEFAULT_UP_TO:,} models: "
                                  "per-point symbols make each redraw about twice as slow.")
address.keep("atlas_shape", "shape", default=default_shape)
address.restore("atlas_find", "find", default="")
find = columns[2].text_input("Highlight", key="atlas_find", placeholder="purple · a red star · lr 0.001 · held out",
                             help="Models whose fields contain every word light up (the rest dim); when no field "
                                  "does, the text is read as a prompt and the models that match it light up.")
address.keep("atlas_find", "find", default="")

# -- what to highlight: words found in the fields, else a prompt (also placed on the map as a star) ------
highlight, note = None, None
if find.strip():
    highlight = text_matches(table, find)
    if highlight.any():
        note = f"{int(highlight.sum()):,} models whose fields contain “{plain(find, 60)}”."
    else:
        try:
            index = opened()[1]
            scores = index.embeddings @ index.embed_prompts([find])[0]
            strength = index.match_strength(find)
            highlight = scores >= max(strength.threshold, float(np.sort(scores)[-min(100, len(scores))]))
            atlas = opened()[2].with_prompts([find])
            note = (f"No field contains “{plain(find, 60)}”; read as a prompt (the star): the {int(highlight.sum())} "
                    f"models scoring like a real match (at least {strength.threshold:.2f}, at most 100).")
            if not highlight.any():
                note = (f"No field contains “{plain(find, 60)}”; as a prompt (the star) it is no strong match for any "
                        "model.")
        except (ProbeXError, ValueError) as error:
            note = f"Cannot read “{plain(find, 60)}” as a prompt: {plain_error(error)}"

# -- the selection (one per tree): from the address (a shared view), then from the map -------------------
SELECTION, MORE = f"atlas_selection:{tree}", f"atlas_more:{tree}"
if SELECTION not in st.session_state:
    try:
        st.session_state[SELECTION] = address.decode_rows(st.query_params.get("sel", ""), n_models)
    except ValueError:
        st.session_state[SELECTION] = []
more = st.session_state.get(MORE)
if more is not None and len(more) == n_models:
    highlight = more if highlight is None else (highlight | more)
selected = tuple(st.session_state[SELECTION])
figure = state.figure("atlas", (path, token, tree, expert_token, colour, shape, find, selected,
                                None if highlight is None else np.packbits(highlight).tobytes()),
                      lambda: atlas_figure(atlas, color=colour, shape=None if shape == "(none)" else shape, table=table,
                                           highlight=highlight, selected=selected or None,
                                           colours=state.tree_colours(path) if colour == "tree" else None,
                                           highlight_name="matches" if find.strip() else "more like these"))
event = map_chart(figure, "atlas_chart")
clicked = apply_map_event(SELECTION, event)
if clicked is not None:
    st.switch_page(MODEL_PAGE, query_params={"model": ids[clicked]})
if note:
    st.caption(note)
if atlas.message:
    st.caption(plain(atlas.message))
st.caption(f"{n_models:,} models of {plain(tree)}; expert {plain(expert_source)}.")

selection = st.session_state[SELECTION]
if not address.put_selection(selection):
    st.caption("This selection is too large to put in the address; a smaller one can be shared by its address.")
if selection:
    index = opened()[1]
    more_highlight, cleared = selection_panel("atlas_sel", table, selection, lambda row: index.records[row].images,
                                              similarity=lambda rows: index.more_like([index.ids[r] for r in rows]))
    if cleared:
        st.session_state[SELECTION] = []
        st.session_state.pop(MORE, None)
        st.rerun()
    if (more_highlight is None) != (more is None) or (more_highlight is not None and not np.array_equal(more_highlight,
                                                                                                          more)):
        st.session_state[MORE] = more_highlight  # drawn on the map by the rerun
        st.rerun()
elif st.session_state.pop(MORE, None) is not None:
    st.rerun()

# -- any model by id, concept or metadata -----------------------------------------------------------------
labels = state.row_labels(path, tree, expert_token, token, table)
picked = st.selectbox("Open a model (type an id, a concept or any metadata)", range(n_models), index=None,
                      format_func=lambda row: labels[row], key="atlas_pick", placeholder="e.g. purple heart, 0.0011")
if picked is not None:
    st.session_state.pop("atlas_pick", None)
    st.switch_page(MODEL_PAGE, query_params={"model": ids[picked]})
