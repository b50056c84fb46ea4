"""``probex route`` on a miniature zoo of three trees in two architectures."""

from __future__ import annotations

import importlib.util

import pytest

from probex.cli import main

from tests.trees.test_router import write_forest_zoo


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    return write_forest_zoo(tmp_path_factory.mktemp("forest") / "zoo")


def test_route_prints_trees_sizes_nearest_models_and_accuracy(zoo, capsys):
    assert main(["route", str(zoo)]) == 0
    out = capsys.readouterr().out
    assert "trees found: 3" in out
    rows = [line.split() for line in out.splitlines() if line.strip().startswith("tree_")]
    assert [(row[0], row[1], row[3]) for row in rows] == [("tree_0", "12", "a"), ("tree_1", "10", "b"),
                                                         ("tree_2", "8", "c")]
    assert rows[0][2].startswith("a_")
    assert "routing accuracy on the 30 clustered models: 1.000" in out


def test_route_threshold_option_changes_the_cut(zoo, capsys):
    assert main(["route", str(zoo), "--threshold", "1e9"]) == 0
    assert "trees found: 2" in capsys.readouterr().out


def test_route_writes_the_dendrogram_as_html(zoo, tmp_path, capsys):
    page = tmp_path / "trees.html"
    assert main(["route", str(zoo), "--html", str(page)]) == 0
    text = page.read_text(encoding="utf-8")
    assert "plotly" in text.lower() and "tree_0" in text and "a_10_000" in text
    assert f"dendrogram: {page}" in capsys.readouterr().out


@pytest.mark.skipif(importlib.util.find_spec("kaleido") is not None, reason="kaleido is installed: PNG works")
def test_route_png_without_kaleido_says_so_and_writes_html(zoo, tmp_path, capsys):
    assert main(["route", str(zoo), "--png", str(tmp_path / "trees.png")]) == 0
    captured = capsys.readouterr()
    assert "PNG needs the kaleido package" in captured.err
    assert (tmp_path / "trees.html").exists() and not (tmp_path / "trees.png").exists()


def test_route_unknown_layer_exits_2_with_the_available_layers(zoo, capsys):
    assert main(["route", str(zoo), "--layer", "nope"]) == 2
    err = capsys.readouterr().err
    assert "nope" in err and "Traceback" not in err
