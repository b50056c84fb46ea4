"""The build benchmark's comparison and check, on the small jungle (its timings are measured by running it, not here)."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_jungle_build.py"


def _run(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout)


def test_a_second_build_on_this_machine_equals_the_first_file_for_file_and_its_check_is_kept(small_jungle, tmp_path):
    figures_file = tmp_path / "figures.json"
    result = _run("--size", "small", "--out", str(tmp_path / "jungle"), "--compare", str(small_jungle), "--check",
                  "--json", str(figures_file))
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads(figures_file.read_text())
    assert figures["size"] == "small" and figures["conditions"]["cpu"] and figures["conditions"]["torch_cpu_kernels"]
    groups = figures["compared_with"]["files"]
    models_and_images = {group: counts for group, counts in groups.items()
                         if group.split("/")[0] in ("discriminative", "generative", "roots")
                         and group.endswith(("*.safetensors", "*.png"))}
    assert any("mixer-supervised *.safetensors" in group for group in models_and_images)
    for group, counts in models_and_images.items():  # one machine, one seed: the same bytes
        assert counts["equal"] > 0 and counts["different"] == counts["missing"] == 0, group
    check = figures["check"]
    assert check["router"]["trees_found"] == check["router"]["true_trees"] == 5
    assert set(check["classifiers"]) == {"cnn-supervised", "cnn-attributes", "cnn-own-heads", "mixer-supervised"}
    assert all(0.0 <= row["probex"] <= 1.0 and row["dense_parameters"] > 0 for row in check["classifiers"].values())
    assert 0.0 <= check["aligned"]["mini-sd"]["expert"] <= 1.0 and check["forest"] is not None
    assert "compared with" in result.stdout and "check of this build" in result.stdout


def test_comparing_with_a_folder_that_is_no_jungle_is_refused_before_building(tmp_path):
    result = _run("--size", "small", "--out", str(tmp_path / "jungle"), "--compare", str(tmp_path),
                  "--json", str(tmp_path / "figures.json"), timeout=120)
    assert result.returncode == 2 and result.stderr.startswith("error: --compare")
    assert not (tmp_path / "jungle").exists() and not (tmp_path / "figures.json").exists()
