"""probex report: every analysis the zoo supports, as Markdown, HTML and JSON."""

import json

import pytest

from probex import jungle
from probex.cli import main
from probex.experiments.report import report_html

SECTIONS = ("## Router", "## Intra- vs inter-tree", "## Table 1", "## Table 2", "## Table 3", "## Table 4",
            "## Multi-view probes", "## Ablations of ProbeX", "## Table 5")


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
    assert set(report["table1"]) == {"cnn-supervised", "cnn-attributes", "mixer-supervised", "cnn-own-heads"}
    assert "MoE" in markdown and report["moe"]["unrouted"] == 0
    alignment = report["alignment"]["mini-sd"]
    assert {"in_distribution", "zero_shot", "n_parameters"} <= set(next(iter(alignment["table2"].values())))
    assert [row["k"] for row in alignment["table3"]["rows"]] == [1, 5, 10]


def test_the_report_sets_multiview_probes_beside_probex_and_ablates_the_view_subsets(written):
    report = json.loads((written / "report.json").read_text())
    for tree, row in report["table1"].items():  # all four views, or the views the tree's role names
        assert 0.0 <= row["multiview"] <= 1.0 and row["multiview_views"] == ("xtxu" if tree == "cnn-own-heads" else "all")
        assert row["multiview_parameters"] > 0
    assert report["sweeps"]["cnn-own-heads"]["views"] == "xtxu"  # its layer was swept with them
    assert "| cnn-own-heads | multi-view ProbeX (xtxu) |" in (written / "report.md").read_text()  # the parameter lesson
    assert any(name.startswith("multi-view ProbeX") for name in report["alignment"]["mini-sd"]["table2"])
    ablations = report["views"]
    assert {ablation["task"] for ablation in ablations.values()} == {"classes", "align"}
    for ablation in ablations.values():
        assert [row["views"] for row in ablation["rows"]] == ["xu", "xtu", "xxtu", "xtxu", "first", "second", "all"]
    markdown = (written / "report.md").read_text()
    assert "| multi-view |" in markdown and "SupViT 92.33" in markdown  # the paper's MVProbe figure beside ours
    for tree, row in report["table1"].items():  # and over three seeds, under Table 1
        comparison = row["views_comparison"]
        assert comparison["seeds"] == [0, 1, 2] and comparison["views"] == row["multiview_views"]
        assert f"| {tree} | {comparison['views']} | {comparison['probex_mean']:.3f} |" in markdown


def test_the_report_ablates_probe_sizes_encoder_depth_and_training_set_size_on_the_first_classifier_tree(written,
                                                                                                         small_jungle):
    report = json.loads((written / "report.json").read_text())
    ablations, first = report["ablations"], next(iter(report["table1"]))
    layer = report["table1"][first]["layer"]
    assert ablations["classifier_tree"] == first
    sizes = ablations["probe_sizes"]
    assert sizes["layer"] == layer and sizes["rows"][0]["setting"] == "default (scaled to the layer)"
    assert len({(row["r_U"], row["r_V"], row["r_T"]) for row in sizes["rows"]}) == len(sizes["rows"]) >= 4
    default = sizes["rows"][0]
    for row in sizes["rows"][1:]:  # a size above (below) its default adds (removes) parameters
        grown = [row[r] - default[r] for r in ("r_U", "r_V", "r_T") if row[r] != default[r]]
        assert grown and (row["n_parameters"] > default["n_parameters"]) == (sum(grown) > 0)
    depth = ablations["encoder_depth"]["rows"]
    assert [row["setting"] for row in depth] == ["depth 1", "depth 2", "depth 3"]
    assert [row["n_parameters"] for row in depth] == sorted({row["n_parameters"] for row in depth})
    transfer = ablations["training_size"][first]["rows"]
    counts = [row["training_models"] for row in transfer]
    assert counts == sorted(set(counts)) and counts[-1] == len(jungle.load(small_jungle).select(tree=first, split="train"))
    for row in sizes["rows"] + depth + transfer:
        assert 0.0 <= row["score"] <= 1.0 and row["n_parameters"] > 0
    # the default setting is trained once: the same expert is the depth-1 row and the all-models row
    assert depth[0]["score"] == default["score"] == transfer[-1]["score"]
    # Dense beside ProbeX on the same models; on all of them it is Table 1's Dense (same models, settings, seed)
    for row in transfer:
        assert 0.0 <= row["dense"] <= 1.0 and 0.0 <= row["dense_val"] <= 1.0
        assert row["dense_parameters"] == report["table1"][first]["dense_parameters"]
    assert transfer[-1]["dense"] == report["table1"][first]["dense"]
    markdown = (written / "report.md").read_text()
    assert "### Probe sizes" in markdown and "### Encoder depth" in markdown and "| r_U x 4 |" in markdown
    assert "| score | val | Dense | Dense val | margin | paper |" in markdown
    margin = transfer[0]["score"] - transfer[0]["dense"]
    assert f"| {transfer[0]['setting']} | {transfer[0]['fraction']:.2f} |" in markdown and f"{margin:+.3f}" in markdown


def test_the_report_measures_positive_transfer_and_names_the_only_text_encoder_on_the_aligned_tree(written):
    report = json.loads((written / "report.json").read_text())
    ablations = report["ablations"]
    assert ablations["aligned_tree"] == "mini-sd"
    transfer = ablations["training_size"]["mini-sd"]
    assert transfer["metric"].startswith("zero-shot") and len(transfer["rows"]) == 4
    assert all(0.0 <= row["score"] <= 1.0 for row in transfer["rows"])
    encoders = ablations["text_encoder"]
    # tests run offline, with no open_clip weights cached: MiniLM alone, and no invented second row
    assert encoders["available"] == ["minilm"] and encoders["rows"] == []
    assert "open_clip:ViT-L-14/openai" in encoders["unavailable"]
    markdown = (written / "report.md").read_text()
    assert "Only minilm is available on this machine" in markdown
    assert "### Training-set size, positive transfer (mini-sd" in markdown


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
