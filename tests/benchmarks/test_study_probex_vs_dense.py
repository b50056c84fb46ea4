"""The ProbeX-vs-Dense study runs end to end on the small jungle (its figures are measured by running it, not here)."""

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "study_probex_vs_dense.py"


def test_the_study_compares_probex_and_dense_on_fewer_models_noisy_models_and_other_settings(run_benchmark, small_jungle):
    figures, stdout = run_benchmark("study_probex_vs_dense.py", "--jungle", str(small_jungle), "--epochs", "3",
                                    "--trees", "cnn-supervised")
    assert figures["params"]["epochs"] == 3 and figures["seeds"] == [0, 1, 2]
    layer = figures["layers"]["cnn-supervised"]
    counts = [row["training_models"] for row in figures["fractions"]]
    assert counts == sorted(set(counts)) and counts[-1] == figures["fractions"][-1]["of"]
    assert [row["noise"] for row in figures["noise"]] == [0.0, 1.0, 3.0]
    assert len(figures["settings"]) == 7 and figures["settings"][0]["setting"] == "ProbeX (default)"
    for row in figures["fractions"] + figures["noise"] + figures["settings"]:
        for expert in ("probex", "dense"):
            assert len(row[expert]["seeds"]) == 3 and all(0.0 <= score <= 1.0 for score in row[expert]["seeds"])
        assert abs(row["margin"] - (row["probex"]["mean"] - row["dense"]["mean"])) < 1e-12
    for row in figures["fractions"]:
        assert row["tree"] == "cnn-supervised" and row["layer"] == layer
        assert row["dense_parameters"] > row["probex_parameters"] > 0
    assert "margin" in stdout and "written:" in stdout


def test_a_tree_without_a_recommended_layer_is_refused_in_one_line(small_jungle, tmp_path):
    result = subprocess.run([sys.executable, str(SCRIPT), "--jungle", str(small_jungle), "--trees", "no-such-tree",
                             "--out", str(tmp_path / "out.json")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.startswith("error: ") and "no-such-tree" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "out.json").exists()
