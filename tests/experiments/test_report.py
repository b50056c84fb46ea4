"""probex report: every analysis the zoo supports, as Markdown, HTML and JSON."""

import json

import pytest

from probex import jungle
from probex.cli import main
from probex.experiments.report import report_html

SECTIONS = ("## Router", "## Intra- vs inter-tree", "## Table 1", "## Table 2", "## Table 3", "## Table 4",
            "## Multi-view probes", "## Table 5")


@pytest.fixture(scope="module")
def written(small_jungle, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    assert main(["report", str(small_jungle), "--out", str(out), "--epochs", "20"]) == 0
    return out


def test_the_report_of_the_demo_jungle_has_every_table(written):
    markdown = (written / "report.md").read_text()
    for section in SECTIONS:
        assert section in markdown
    report = json.loads((written / "report.json").read_text())
    assert set(report["table1"]) == {"cnn-supervised", "cnn-attributes", "mixer-supervised"}
    assert "MoE" in markdown and report["moe"]["unrouted"] == 0
    alignment = report["alignment"]["mini-sd"]
    assert {"in_distribution", "zero_shot", "n_parameters"} <= set(next(iter(alignment["table2"].values())))
    assert [row["k"] for row in alignment["table3"]["rows"]] == [1, 5, 10]


def test_the_report_sets_multiview_probes_beside_probex_and_ablates_the_view_subsets(written):
    report = json.loads((written / "report.json").read_text())
    for row in report["table1"].values():
        assert 0.0 <= row["multiview"] <= 1.0 and row["multiview_views"] == "all"
        assert row["multiview_parameters"] > 0
    assert any(name.startswith("multi-view ProbeX") for name in report["alignment"]["mini-sd"]["table2"])
    ablations = report["views"]
    assert {ablation["task"] for ablation in ablations.values()} == {"classes", "align"}
    for ablation in ablations.values():
        assert [row["views"] for row in ablation["rows"]] == ["xu", "xtu", "xxtu", "xtxu", "first", "second", "all"]
    markdown = (written / "report.md").read_text()
    assert "| multi-view |" in markdown and "SupViT 92.33" in markdown  # the paper's MVProbe figure beside ours


def test_every_swept_layer_is_a_row_of_table_5(written, small_jungle):
    report = json.loads((written / "report.json").read_text())
    zoo = jungle.load(small_jungle)
    for tree, sweep in report["sweeps"].items():
        names = {info.name for info in zoo.select(tree=tree).catalog() if info.kind != "vector"}
        assert {row["layer"] for row in sweep["layers"]} == names


def test_a_second_report_resumes_the_sweeps(written, small_jungle, capsys):
    sweeps = {path.name: path.read_text() for path in (written / "sweeps").iterdir()}
    assert main(["report", str(small_jungle), "--out", str(written), "--epochs", "20"]) == 0
    assert {path.name: path.read_text() for path in (written / "sweeps").iterdir()} == sweeps


def test_the_html_page_turns_markdown_tables_into_html_tables():
    page = report_html("# Title\n\nsome **bold** text\n\n| a | b |\n|---|---|\n| 1 | <2> |\n")
    assert "<h1>Title</h1>" in page and "<b>bold</b>" in page
    assert "<th>a</th>" in page and "<td>&lt;2&gt;</td>" in page
