"""The atlas (UMAP of models and words in one space) and its figure, on the shipped jungle's held-out models."""

from __future__ import annotations

import time

import numpy as np
import pytest

from probex import jungle, load_expert
from probex.language.atlas import Atlas, build_atlas, cache_key, place_points
from probex.figures import atlas_figure
from probex.language.facets import model_table, text_matches
from probex.language.search import ModelIndex


@pytest.fixture(scope="module")
def index():
    expert = load_expert(jungle.expert_dirs()["mini-sd"])
    return ModelIndex.build(expert, jungle.load(), splits=["test_holdout"])


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("atlas-cache")


@pytest.fixture(scope="module")
def atlas(index, cache):
    started = time.perf_counter()
    result = build_atlas(index, cache_dir=cache)
    print(f"\natlas of {len(index)} models + {len(index.classes)} anchors, cold (UMAP): {time.perf_counter() - started:.2f} s")
    return result


@pytest.fixture
def no_umap(monkeypatch):
    """UMAP raises if anything constructs it: proves a result came without fitting."""
    import umap

    def refuse(*args, **kwargs):
        raise AssertionError("UMAP was called")

    monkeypatch.setattr(umap, "UMAP", refuse)


def small_index(index: ModelIndex, n: int = 5) -> ModelIndex:
    return ModelIndex(index.expert, index.records[:n], index.embeddings[:n], index.classes[:3], index.tree)


def nearest_model_label(points, x: float, y: float) -> str:
    models = points[points["kind"] == "model"]
    return models["label"].iloc[int(np.argmin(np.hypot(models["x"] - x, models["y"] - y)))]


def test_atlas_holds_every_model_and_anchor_with_its_columns(atlas, index):
    points = atlas.points
    assert list(points.columns) == ["x", "y", "kind", "label", "model_id", "split", "tree", "image"]
    assert (points["kind"] == "model").sum() == len(index) and (points["kind"] == "anchor").sum() == len(index.classes)
    assert atlas.method == "umap" and atlas.message is None
    models = points[points["kind"] == "model"]
    assert list(models["model_id"]) == index.ids and all(models["image"].str.endswith(".png"))
    assert np.isfinite(points[["x", "y"]].to_numpy()).all()


def test_words_land_among_the_models_they_name(atlas, index):
    points = atlas.points
    concepts = sorted({record.labels[0] for record in index.records})
    anchors = points[(points["kind"] == "anchor") & points["label"].isin(concepts)]
    rate = np.mean([nearest_model_label(points, row.x, row.y) == row.label for row in anchors.itertuples()])
    models = points[points["kind"] == "model"]
    chance = np.mean([(models["label"] == row.label).mean() for row in anchors.itertuples()])  # a random model's concept
    print(f"held-out anchors whose nearest model on the map has their concept: {rate:.3f} (chance {chance:.3f})")
    assert rate > chance + 0.85


def test_a_second_build_reads_the_cache_without_umap(atlas, index, cache, no_umap):
    assert len(list(cache.glob("atlas-umap-*.safetensors"))) == 1
    started = time.perf_counter()
    again = build_atlas(index, cache_dir=cache)
    print(f"\natlas from the cache: {time.perf_counter() - started:.2f} s")
    np.testing.assert_array_equal(again.points[["x", "y"]].to_numpy(), atlas.points[["x", "y"]].to_numpy())


def test_the_cache_key_changes_with_anchors_parameters_and_embeddings(index):
    vectors = index.embeddings[:10]
    params = {"n_neighbors": 15, "min_dist": 0.1, "seed": 0, "metric": "cosine"}
    key = cache_key(vectors, ["a"], "umap", params)
    assert key == cache_key(vectors.copy(), ["a"], "umap", dict(params))
    assert key != cache_key(vectors, ["b"], "umap", params)
    assert key != cache_key(vectors, ["a"], "umap", {**params, "min_dist": 0.2})
    assert key != cache_key(vectors[::-1].copy(), ["a"], "umap", params)


def test_prompts_are_placed_near_their_concepts_without_refitting(atlas, index, no_umap):
    concepts = sorted({record.labels[0] for record in index.records})
    placed = atlas.with_prompts([f"a {concept}" for concept in concepts])
    prompts = placed.points[placed.points["kind"] == "prompt"]
    assert len(placed.points) == len(atlas.points) + len(concepts) and list(prompts["label"]) == [f"a {c}" for c in concepts]
    # every held-out concept's prompt, scored by the concept of the model nearest to where it lands;
    # a UMAP layout moves with float rounding (torch's thread count), so one miss is not a failure
    hits = [nearest_model_label(placed.points, row.x, row.y) == concept for row, concept in zip(prompts.itertuples(), concepts)]
    chance = 1 / len(concepts)
    assert np.mean(hits) >= chance + 0.6, (np.mean(hits), chance)
    assert len(atlas.points[atlas.points["kind"] == "prompt"]) == 0  # the original is unchanged


def test_placement_is_the_weighted_mean_of_the_nearest_points():
    vectors = np.eye(3, dtype=np.float32)
    coordinates = np.array([[0, 0], [10, 0], [0, 10]], dtype=np.float32)
    np.testing.assert_allclose(place_points(vectors[1:2], vectors, coordinates, k=3), [[10, 0]], atol=1e-4)
    between = np.array([[1, 1, 0]], dtype=np.float32) / np.sqrt(2)
    np.testing.assert_allclose(place_points(between, vectors, coordinates, k=2), [[5, 0]], atol=1e-4)


def test_a_small_population_gets_a_pca_map_and_a_message(index, tmp_path, no_umap):
    small = build_atlas(small_index(index), cache_dir=tmp_path)
    assert small.method == "pca" and "PCA" in small.message and "8 points" in small.message
    assert len(small.points) == 8 and np.isfinite(small.points[["x", "y"]].to_numpy()).all()
    assert np.ptp(small.points["x"]) > 0
    placed = small.with_prompts(["a red star"])
    assert (placed.points["kind"] == "prompt").sum() == 1


def test_an_unreadable_cache_entry_is_recomputed(index, tmp_path, no_umap):
    first = build_atlas(small_index(index), cache_dir=tmp_path)
    (entry,) = tmp_path.glob("atlas-pca-*.safetensors")
    entry.write_bytes(b"garbage")
    again = build_atlas(small_index(index), cache_dir=tmp_path)
    np.testing.assert_allclose(again.points[["x", "y"]].to_numpy(), first.points[["x", "y"]].to_numpy(), atol=1e-5)


def test_cache_dir_false_writes_no_file(index, tmp_path, monkeypatch):
    monkeypatch.setenv("PROBEX_CACHE", str(tmp_path))
    build_atlas(small_index(index), cache_dir=False)
    assert not list(tmp_path.rglob("*.safetensors"))
    build_atlas(small_index(index))
    assert len(list((tmp_path / "atlas").glob("atlas-pca-*.safetensors"))) == 1


def model_traces(figure):
    return [trace for trace in figure.data if trace.name not in ("words (class names)", "prompts", "matches")]


def test_the_figure_draws_models_anchors_and_prompts_with_model_rows(atlas, index):
    figure = atlas_figure(atlas.with_prompts(["a pink circle"]), color="split")
    names = [trace.name for trace in figure.data]
    assert names == ["test_holdout", "words (class names)", "prompts"]
    models, anchors, prompts = figure.data
    assert models.type == "scattergl"  # WebGL: thousands of points stay smooth
    assert list(models.customdata) == list(range(len(atlas.index)))
    model_ids = list(atlas.points[atlas.points["kind"] == "model"]["model_id"])
    assert models.hovertext[0].startswith(f"<b>{model_ids[0]}</b>") and "test_holdout" in models.hovertext[0]
    assert anchors.marker.symbol == "diamond-open" and set(anchors.customdata) == {-1}
    words = {annotation.text for annotation in figure.layout.annotations}  # overlapping ones are left to hover
    assert words <= set(index.classes) and len(words) >= len(index.classes) // 3
    assert all(annotation.hovertext == f"word: {annotation.text}" for annotation in figure.layout.annotations)
    assert prompts.marker.symbol == "star" and list(prompts.text) == ["a pink circle"]


def test_concept_colours_match_the_colour_their_names_say_and_the_legend_has_every_concept(atlas):
    from probex.language.facets import COLOUR_WORDS

    figure = atlas_figure(atlas, color="concept")
    traces = model_traces(figure)
    assert {trace.name for trace in traces} == set(atlas.points[atlas.points["kind"] == "model"]["label"])
    assert figure.layout.showlegend is not False
    for trace in traces:
        assert trace.marker.color == COLOUR_WORDS[trace.name.split()[0]], trace.name
    anchors = next(trace for trace in figure.data if trace.name == "words (class names)")
    words = list(atlas.points[atlas.points["kind"] == "anchor"]["label"])
    for word, colour in zip(words, anchors.marker.color):
        assert colour == COLOUR_WORDS[word.split()[0]]


def test_a_continuous_field_gets_a_colour_scale_not_a_legend(atlas):
    figure = atlas_figure(atlas, color="lr")
    (models,) = model_traces(figure)
    assert models.marker.showscale and "lr" in models.marker.colorbar.title.text
    assert len(set(np.round(models.marker.color, 6))) > 12


def test_shapes_follow_a_category_and_shape_words_become_their_symbols(atlas):
    figure = atlas_figure(atlas, color="colour word", shape="other words")
    table = model_table(atlas.index.records)
    trace = model_traces(figure)[0]
    for row, symbol in zip(trace.customdata, trace.marker.symbol):
        word = table["other words"][row]
        if word in ("star", "square", "diamond", "circle"):
            assert symbol == word


def test_a_highlight_dims_every_other_model_and_rings_the_matches(atlas):
    table = model_table(atlas.index.records)
    purple = text_matches(table, "purple")
    assert 0 < purple.sum() < len(table)
    figure = atlas_figure(atlas, color="concept", highlight=purple)
    for trace in model_traces(figure):
        opacity = np.asarray(trace.marker.opacity)
        assert list(opacity == 1.0) == [bool(purple[row]) for row in trace.customdata]
    rings = next(trace for trace in figure.data if trace.name == "matches")
    assert sorted(rings.customdata) == list(np.flatnonzero(purple))


def test_selected_models_are_drawn_selected(atlas):
    chosen = [0, 3, 7]
    figure = atlas_figure(atlas, color="split", selected=chosen)
    (models,) = model_traces(figure)
    assert [models.customdata[i] for i in models.selectedpoints] == chosen


def test_the_figure_subtitle_carries_the_fallback_message(index, tmp_path):
    small = build_atlas(small_index(index), cache_dir=tmp_path)
    figure = atlas_figure(small, color="split")
    assert "PCA" in figure.layout.title.text and figure.layout.xaxis.title.text == "PCA 1"


def test_the_figure_refuses_an_unknown_colouring(atlas):
    with pytest.raises(ValueError, match="color must be one of"):
        atlas_figure(atlas, color="size")


def test_with_prompts_of_one_string_is_refused(atlas):
    with pytest.raises(TypeError, match="list of strings"):
        atlas.with_prompts("a red star")
    assert isinstance(atlas.with_prompts([]), Atlas)


def synthetic_atlas(names: list[str], per_name: int = 3) -> tuple[Atlas, "object"]:
    import pandas as pd

    from pathlib import Path

    from probex.zoo import ModelRecord

    records = [ModelRecord(id=f"m{i}", path=Path(f"m{i}.safetensors"), split="train", tree="t",
                           labels=[names[i % len(names)]]) for i in range(len(names) * per_name)]
    rng = np.random.default_rng(0)
    points = pd.DataFrame({"x": rng.normal(size=len(records)), "y": rng.normal(size=len(records)), "kind": "model",
                           "label": [r.labels[0] for r in records], "model_id": [r.id for r in records],
                           "split": "train", "tree": "t", "image": ""})
    return Atlas(points=points), model_table(records)


def test_past_forty_categories_models_are_drawn_one_trace_per_colour_named_by_its_colour_word():
    from probex.language.facets import COLOUR_WORDS

    colours, shapes = ["red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink"], ["circle", "star", "ring",
                                                                                              "heart", "cross", "square"]
    atlas, table = synthetic_atlas([f"{c} {s}" for c in colours for s in shapes])  # 48 concepts
    figure = atlas_figure(atlas, color="concept", table=table, shape="other words")
    traces = [trace for trace in figure.data if trace.name and trace.name.endswith("6 concepts")]
    assert sorted(trace.name for trace in traces) == sorted(f"{c}: 6 concepts" for c in colours)
    assert all(trace.marker.color == COLOUR_WORDS[trace.name.split(":")[0]] for trace in traces)
    assert sum(len(trace.x) for trace in traces) == len(table)
    few, few_table = synthetic_atlas([f"red {s}" for s in shapes])
    assert {t.name for t in atlas_figure(few, color="concept", table=few_table).data} == {f"red {s}" for s in shapes}


@pytest.mark.parametrize("options", [dict(color="concept", shape="other words"), dict(color="lr", shape="colour word"),
                                     dict(color="split", selected=[0, 3]), dict(color="concept", highlight="purple")],
                         ids=["concept+shape", "continuous+shape", "selection", "highlight"])
def test_every_figure_passes_plotlys_own_validation(atlas, options):
    """The models' traces skip plotly's per-element checks (speed at 20,000 points): a full check here."""
    import plotly.graph_objects as go

    if options.get("highlight") == "purple":
        options = {**options, "highlight": text_matches(model_table(atlas.index.records), "purple")}
    figure = atlas_figure(atlas.with_prompts(["a pink circle"]), **options)
    checked = go.Figure(figure.to_dict())  # raises ValueError on any invalid property or element
    assert len(checked.data) == len(figure.data) and checked.data[0].marker.size == 7
    symbols = [trace.marker.symbol for trace in model_traces(checked) if "shape" in options]
    assert all(symbol is not None for symbol in symbols)
