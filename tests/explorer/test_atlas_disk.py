"""The Atlas kept on disk (explorer.atlas_disk): read back exactly, and never trusted after any change."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from explorer import atlas_disk
from tests.app_charts import figure_specs


@pytest.fixture()
def population(tmp_path, monkeypatch) -> tuple[Path, Path]:
    """A folder of three model files and a manifest, and a probex cache of its own."""
    monkeypatch.setenv("PROBEX_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "zoo"
    (root / "models").mkdir(parents=True)
    for number in range(3):
        (root / "models" / f"m{number}.safetensors").write_bytes(b"weights" * (number + 1))
    (root / "probex_zoo.json").write_text('{"models": 3}')
    outside = tmp_path / "elsewhere.safetensors"
    outside.write_bytes(b"far away")
    return root, outside


def frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    points = pd.DataFrame({"x": np.array([0.5, 1.5, -2.0, 3.0], np.float32), "y": np.array([1, 2, 3, 4], np.float32),
                           "kind": ["model", "model", "model", "anchor"], "label": ["red star", "blue ring", "", "red star"],
                           "model_id": ["a/0", "a/1", "a/2", ""], "split": ["train", "test", "train", ""],
                           "tree": ["a", "a", "a", ""], "image": ["", "/x/1.png", "", ""]})
    table = pd.DataFrame({"model": ["a/0", "a/1", "a/2"], "lr": [1e-3, np.nan, 1e-4], "rank": [4, 8, 16],
                          "concept": ["red star", "blue ring", ""]})
    return points, table


def keep(root: Path, files: list[str], tree: str = "a") -> str | None:
    points, table = frames()
    return atlas_disk.save_view(str(root), tree, ["a", "b"], {"a": "shipped", "b": "shipped"},
                                {"a": "shipped-a", "b": "shipped-b"}, points, table, None, "umap", files)


def test_a_kept_map_reads_back_exactly_with_its_trees(population):
    root, outside = population
    key = keep(root, [str(root / "models" / "m0.safetensors"), str(outside)])
    assert key is not None
    view = atlas_disk.load_view(str(root))
    points, table = frames()
    assert view is not None and view.key == key
    pd.testing.assert_frame_equal(view.points, points)
    pd.testing.assert_frame_equal(view.table, table)
    assert view.trees == ["a", "b"] and view.tokens["b"] == "shipped-b" and view.method == "umap"
    assert atlas_disk.load_view(str(root), "b") is None  # tree b was never drawn


@pytest.mark.parametrize("edit", ["rewrite a model", "add a file", "touch the manifest", "edit a model outside"])
def test_any_change_to_the_population_makes_the_entry_untrusted(population, edit):
    root, outside = population
    assert keep(root, [str(outside)]) is not None
    if edit == "rewrite a model":
        (root / "models" / "m1.safetensors").write_bytes(b"weights" * 2)  # same size, new ctime and mtime
    elif edit == "add a file":
        (root / "models" / "new.safetensors").write_bytes(b"new")
    elif edit == "touch the manifest":
        os.utime(root / "probex_zoo.json", ns=(1, 1))
    else:
        outside.write_bytes(b"far away")
    assert atlas_disk.load_view(str(root)) is None


def test_a_damaged_entry_is_not_read(population):
    root, _ = population
    assert keep(root, []) is not None
    parquet = next(Path(os.environ["PROBEX_CACHE"], "atlas").glob("*.points.parquet"))
    data = bytearray(parquet.read_bytes())
    data[len(data) // 2] ^= 0xFF
    parquet.write_bytes(bytes(data))
    assert atlas_disk.load_view(str(root)) is None


def test_a_table_that_does_not_survive_parquet_is_not_kept(population):
    root, _ = population
    points, table = frames()
    table["mixed"] = [1, "two", 3.0]  # pyarrow refuses (or changes) a column of mixed types
    assert atlas_disk.save_view(str(root), "a", ["a"], {"a": "shipped"}, {"a": "t"}, points, table, None, "umap",
                                []) is None
    assert atlas_disk.load_view(str(root)) is None


def test_the_cache_folder_inside_a_population_is_no_change(population, monkeypatch):
    root, _ = population
    monkeypatch.setenv("PROBEX_CACHE", str(root / ".cache"))
    assert keep(root, []) is not None  # writing the entry under the root does not invalidate it
    assert atlas_disk.load_view(str(root)) is not None


def test_a_change_behind_a_link_in_the_population_is_seen(population, tmp_path):
    root, _ = population
    shared = tmp_path / "shared-experts"
    shared.mkdir()
    (shared / "expert.safetensors").write_bytes(b"expert")
    (root / "experts").symlink_to(shared)
    assert keep(root, []) is not None and atlas_disk.load_view(str(root)) is not None
    (shared / "expert.safetensors").write_bytes(b"retrain")  # a shipped expert retrained in the linked folder
    assert atlas_disk.load_view(str(root)) is None


def test_a_new_server_draws_the_same_atlas_from_disk(mini_jungle):
    import json

    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from explorer import state

    def atlas_page():
        app = AppTest.from_file(str(Path(__file__).resolve().parents[2] / "explorer" / "app.py"), default_timeout=240)
        app.session_state["population_path"] = str(mini_jungle)
        app.run()
        app.switch_page("views/atlas.py").run()
        assert not app.exception
        return figure_specs(app)

    drawn = atlas_page()
    assert atlas_disk.load_view(str(mini_jungle)) is not None  # kept for new servers
    st.cache_resource.clear()  # what a new server process starts with
    st.cache_data.clear()
    assert atlas_page() == drawn
    assert state.disk_atlas(str(mini_jungle), None) is not None  # and that is where it was drawn from
