"""Atlas: models and words in one map of the weight-language space; select, colour, shape, highlight, open."""

from __future__ import annotations

import numpy as np
import streamlit as st

from explorer import address, state
from explorer.text import plain, plain_error
from explorer.widgets import apply_map_event, map_chart, selection_panel
from probex.errors import ProbeXError
from probex.figures import atlas_figure
from probex.language.atlas_figure import SHAPES_BY_DEFAULT_UP_TO
from probex.language.facets import colour_fields, shape_fields, text_matches

MODEL_PAGE = "views/model.py"

st.title("Atlas of the weight-language space")
st.markdown("Every model of a tree, embedded by its aligned expert, and the tree's class names, embedded by the text "
            "encoder, in one 2-D map (UMAP, cosine): a model lands near the words that describe it. **Lasso or box** "
            "models to list them; **click** one to open its page; click a legend entry to hide it.")

path = state.population_path()
zoo = state.current_zoo()
experts = state.current_aligned_experts(path, zoo)
token = state.population_token(path)

trees = list(experts)
address.restore("atlas_tree", "tree", choices=trees, default=trees[0])
tree = st.selectbox("Tree", trees, key="atlas_tree") if len(trees) > 1 else trees[0]
address.keep("atlas_tree", "tree", default=trees[0])
choice = experts[tree]
try:
    index = state.model_index(path, tree, choice.token, choice.expert)
    atlas = state.atlas(path, tree, choice.token, index)
except (ProbeXError, ValueError) as error:
    st.error(f"Cannot draw the atlas of {plain(tree)}: {plain_error(error)}")
    st.stop()
table = state.index_table(path, tree, choice.token, token, index)

fields = colour_fields(table)
shapes = ["(none)"] + shape_fields(table)
columns = st.columns([1, 1, 2])
address.restore("atlas_colour", "colour", choices=fields, default="concept" if "concept" in fields else fields[0])
colour = columns[0].selectbox("Colour by", fields, key="atlas_colour",
                              help="Any field: tree, split, concept and its parts, held out or seen, metadata. "
                                   "Numbers with many values get a colour scale.")
address.keep("atlas_colour", "colour", default="concept")
default_shape = "other words" if "other words" in shapes and len(index) <= SHAPES_BY_DEFAULT_UP_TO else "(none)"
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
            scores = index.embeddings @ index.embed_prompts([find])[0]
            strength = index.match_strength(find)
            highlight = scores >= max(strength.threshold, float(np.sort(scores)[-min(100, len(scores))]))
            atlas = atlas.with_prompts([find])
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
        st.session_state[SELECTION] = address.decode_rows(st.query_params.get("sel", ""), len(index))
    except ValueError:
        st.session_state[SELECTION] = []
more = st.session_state.get(MORE)
if more is not None and len(more) == len(index):
    highlight = more if highlight is None else (highlight | more)
selected = tuple(st.session_state[SELECTION])
figure = state.figure("atlas", (path, token, tree, choice.token, colour, shape, find, selected,
                                None if highlight is None else np.packbits(highlight).tobytes()),
                      lambda: atlas_figure(atlas, color=colour, shape=None if shape == "(none)" else shape, table=table,
                                           highlight=highlight, selected=selected or None,
                                           colours=state.tree_colours(path) if colour == "tree" else None,
                                           highlight_name="matches" if find.strip() else "more like these"))
event = map_chart(figure, "atlas_chart")
clicked = apply_map_event(SELECTION, event)
if clicked is not None:
    st.switch_page(MODEL_PAGE, query_params={"model": index.ids[clicked]})
if note:
    st.caption(note)
if atlas.message:
    st.caption(plain(atlas.message))
st.caption(f"{len(index):,} models of {plain(tree)}; expert {plain(choice.source)}.")

selection = st.session_state[SELECTION]
if not address.put_selection(selection):
    st.caption("This selection is too large to put in the address; a smaller one can be shared by its address.")
if selection:
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
labels = state.row_labels(path, tree, choice.token, token, table)
picked = st.selectbox("Open a model (type an id, a concept or any metadata)", range(len(index)), index=None,
                      format_func=lambda row: labels[row], key="atlas_pick", placeholder="e.g. purple heart, 0.0011")
if picked is not None:
    st.session_state.pop("atlas_pick", None)
    st.switch_page(MODEL_PAGE, query_params={"model": index.ids[picked]})
