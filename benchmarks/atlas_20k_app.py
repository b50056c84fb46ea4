"""A 20,000-model Atlas for benchmarks/bench_app.py: synthetic points drawn by the app's own atlas figure.

The coordinates and metadata are synthesised (64 concept clusters of a jungle-like world, a
log-uniform learning rate, five splits, and the 64 class names as words), because no zoo of
20,000 aligned models ships with probex. Everything after that is the product's path: the
facets table (probex.language.facets.model_table), probex.figures.atlas_figure on WebGL, and
st.plotly_chart with selections on, as on the Atlas page (whose default at this size draws no
shapes; "concept, shaped" draws them, as asked for there).

``?chart=plotly`` draws the same figure with ``st.plotly_chart``, as the Atlas did before its map was
drawn in place (explorer/map_frame.py): each new figure mounts a new chart. The benchmark measures both.

    streamlit run benchmarks/atlas_20k_app.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from explorer.state import freeze_long_lived  # noqa: E402
from explorer.widgets import map_chart  # noqa: E402
from probex.figures import atlas_figure  # noqa: E402
from probex.language.atlas import Atlas  # noqa: E402
from probex.language.atlas_figure import SHAPES_BY_DEFAULT_UP_TO  # noqa: E402
from probex.language.facets import model_table  # noqa: E402
from probex.zoo import ModelRecord  # noqa: E402

N_MODELS = 20_000
COLOURS = ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink")
SHAPES = ("circle", "square", "triangle", "diamond", "star", "cross", "ring", "heart")


@st.cache_resource
def synthetic_atlas(n: int = N_MODELS, seed: int = 0) -> tuple[Atlas, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    names = [f"{colour} {shape}" for colour in COLOURS for shape in SHAPES]
    centres = rng.uniform(-10, 10, size=(len(names), 2))
    concept = rng.integers(0, len(names), n)
    xy = centres[concept] + rng.normal(0, 0.35, size=(n, 2))
    splits = rng.choice(["train", "val", "test", "val_holdout", "test_holdout"], n, p=[0.6, 0.1, 0.1, 0.08, 0.12])
    records = [ModelRecord(id=f"synthetic/model_{i:05d}", path=Path(f"model_{i:05d}.safetensors"), split=str(splits[i]),
                           tree="synthetic", labels=[names[concept[i]]],
                           metadata={"lr": float(10 ** rng.uniform(-4.5, -2.5)), "rank": int(rng.choice([4, 8, 16])),
                                     "seed": int(rng.integers(0, 2**31))}) for i in range(n)]
    models = pd.DataFrame({"x": xy[:, 0], "y": xy[:, 1], "kind": "model", "label": [names[c] for c in concept],
                           "model_id": [r.id for r in records], "split": splits, "tree": "synthetic", "image": ""})
    anchors = pd.DataFrame({"x": centres[:, 0], "y": centres[:, 1] + 0.8, "kind": "anchor", "label": names,
                            "model_id": "", "split": "", "tree": "", "image": ""})
    return Atlas(points=pd.concat([models, anchors], ignore_index=True)), model_table(records)


st.set_page_config(page_title="Atlas 20k", layout="wide")
atlas, table = synthetic_atlas()
if not st.session_state.get("frozen"):  # as the explorer's server does once its imports are done
    freeze_long_lived()
    st.session_state["frozen"] = True
colour = st.selectbox("Colour by", ["concept", "lr", "split", "seen", "concept, shaped"], key="colour")
shaped = colour == "concept, shaped" or (colour == "concept" and N_MODELS <= SHAPES_BY_DEFAULT_UP_TO)  # as the Atlas page
figure = atlas_figure(atlas, color=colour.split(",")[0], table=table, shape="other words" if shaped else None)
if st.query_params.get("chart") == "plotly":  # the Atlas's chart before 2026-12-02, for comparison
    figure.update_layout(clickmode="event+select", dragmode="pan", hovermode="closest")
    st.plotly_chart(figure, width="stretch", key="atlas", on_select="rerun", selection_mode=("points", "box", "lasso"),
                    config={"scrollZoom": True, "displaylogo": False})
else:
    map_chart(figure, "atlas")  # as the Atlas page draws it
st.caption(f"drawn: {colour}")
