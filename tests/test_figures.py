"""Figure builders: the dendrogram of a fitted router as a plotly figure."""

from __future__ import annotations

import plotly.graph_objects as go
import pytest

from probex.figures import dendrogram_figure
from probex.trees.dendrogram import ABOVE_CUT_COLOR
from probex.trees.router import TreeRouter

from tests.trees.test_router import concat, forest, grow_tree


@pytest.fixture(scope="module")
def router() -> TreeRouter:
    return TreeRouter().fit(forest(seed=10))


def _cut_lines(figure: go.Figure) -> list:
    return [shape for shape in figure.layout.shapes if shape.type == "line" and shape.y0 == shape.y1]


def test_dendrogram_figure_has_one_panel_per_architecture(router):
    figure = dendrogram_figure(router)
    assert isinstance(figure, go.Figure)
    assert "xaxis2" in figure.layout and "xaxis3" not in figure.layout
    assert len(_cut_lines(figure)) == 2


def test_dendrogram_links_are_coloured_by_tree_with_a_legend_entry_per_tree(router):
    figure = dendrogram_figure(router, architecture=0)
    lines = {trace.name: trace.line.color for trace in figure.data if trace.mode == "lines"}
    data = router.dendrogram(0)
    assert lines == {**data.tree_colors, "above the cut": ABOVE_CUT_COLOR}


def test_dendrogram_cut_line_sits_at_the_cut_height(router):
    figure = dendrogram_figure(router, architecture=0)
    (cut,) = _cut_lines(figure)
    assert cut.y0 == pytest.approx(router.architectures_[0].cut_height)
    heights = sorted(router.architectures_[0].linkage[:, 2])
    assert heights[-2] < cut.y0 < heights[-1]


def test_few_leaves_are_labelled_with_model_ids_and_hover_the_true_tree():
    small = TreeRouter().fit(concat(grow_tree("a", 6, root_seed=1), grow_tree("b", 6, root_seed=2, seed=3)))
    figure = dendrogram_figure(small)
    assert sorted(figure.layout.xaxis.ticktext) == sorted(small.ids_)
    (leaves,) = [trace for trace in figure.data if trace.name == "models"]
    assert all("true tree: a" in text or "true tree: b" in text for text in leaves.hovertext)


def test_large_dendrogram_is_truncated_and_unlabelled(router):
    figure = dendrogram_figure(router, architecture=0, max_leaves=8)
    (leaves,) = [trace for trace in figure.data if trace.name == "models"]
    assert len(leaves.x) == 8
    assert any("models" in text for text in leaves.hovertext)
    assert list(figure.layout.xaxis.ticktext) == list(router.dendrogram(0, max_leaves=8).leaf_ids)


def test_dendrogram_figure_refuses_an_unfitted_source():
    with pytest.raises(TypeError, match="TreeRouter"):
        dendrogram_figure(object())


def test_image_grid_draws_one_tile_per_image_with_its_caption(tmp_path):
    import numpy as np
    from PIL import Image

    from probex.figures import image_grid_figure

    files = []
    for number in range(3):
        path = tmp_path / f"image_{number}.png"
        Image.fromarray(np.full((16, 16, 3), number * 80, dtype=np.uint8)).save(path)
        files.append(path)
    figure = image_grid_figure(files + [np.zeros((16, 16, 3), dtype=np.uint8)], titles=["a", "b", "c", "d"], columns=2)
    assert [trace.type for trace in figure.data] == ["image"] * 4
    assert [annotation.text for annotation in figure.layout.annotations] == ["a", "b", "c", "d"]
    assert int(figure.data[1].z[0][0][0]) == 80


def test_image_grid_refuses_no_images_and_mismatched_captions():
    import numpy as np

    from probex.figures import image_grid_figure

    with pytest.raises(ValueError, match="no images"):
        image_grid_figure([])
    with pytest.raises(ValueError, match="2 titles for 1 images"):
        image_grid_figure([np.zeros((4, 4, 3), dtype=np.uint8)], titles=["a", "b"])


def test_hovering_a_merge_tells_how_many_models_it_joins_and_the_top_merge_joins_them_all():
    small = TreeRouter().fit(concat(grow_tree("a", 6, root_seed=1), grow_tree("b", 5, root_seed=2, seed=3)))
    figure = dendrogram_figure(small)
    (merges,) = [trace for trace in figure.data if trace.name == "merges"]
    assert len(merges.x) == len(small.ids_) - 1  # one per merge of a full dendrogram
    top = max(range(len(merges.y)), key=lambda i: merges.y[i])
    assert merges.hovertext[top].startswith(f"merge of {len(small.ids_)} models")
    assert sorted(merges.y) == pytest.approx(sorted(small.architectures_[0].linkage[:, 2]))


def test_a_truncated_dendrograms_top_merge_still_counts_every_model(router):
    figure = dendrogram_figure(router, architecture=0, max_leaves=8)
    (merges,) = [trace for trace in figure.data if trace.name == "merges"]
    members = len(router.architectures_[0].positions)
    assert max(merges.hovertext, key=lambda text: int(text.split()[2].replace(",", ""))).startswith(f"merge of {members} ")


def test_trees_are_named_and_coloured_as_asked_in_the_legend_links_and_leaves():
    small = TreeRouter().fit(concat(grow_tree("a", 6, root_seed=1), grow_tree("b", 6, root_seed=2, seed=3)))
    labels = {name: f"named {small.tree_truth_[name]}" for name in small.tree_names_}
    colours = {"named a": "#000001", "named b": "#000002"}
    figure = dendrogram_figure(small, labels=labels, colours=colours, panel_titles=["six layers"])
    lines = {trace.name: trace.line.color for trace in figure.data if trace.mode == "lines"}
    assert {lines["named a"], lines["named b"]} == {"#000001", "#000002"}
    (leaves,) = [trace for trace in figure.data if trace.name == "models"]
    assert set(leaves.marker.color) == {"#000001", "#000002"}
    assert all("tree found: named" in text for text in leaves.hovertext)
    assert "six layers" in figure.layout.title.text and "tree_" not in figure.layout.title.text


def test_a_marked_model_is_drawn_beside_its_nearest_leaf_with_its_hover_text():
    from probex.figures import DendrogramMark

    small = TreeRouter().fit(concat(grow_tree("a", 6, root_seed=1), grow_tree("b", 6, root_seed=2, seed=3)))
    near = small.ids_[3]
    figure = dendrogram_figure(small, mark=DendrogramMark(panel=0, text="distance 1.0 (radius 2.0)",
                                                          tree=small.tree_names_[0], near_model=near))
    (star,) = [trace for trace in figure.data if trace.name == "your model"]
    data = small.dendrogram(0)
    assert star.x[0] == 10 * data.leaf_ids.index(near) + 5
    assert star.hovertext[0] == "distance 1.0 (radius 2.0)" and star.y[0] < 0
