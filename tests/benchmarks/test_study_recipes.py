"""The recipe study runs end to end on a few models (its figures are measured by running it, not here)."""

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "study_recipes.py"


def _run(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    """The study run directly, for the runs that must fail (run_benchmark asserts success)."""
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout)


def test_the_recipe_study_fine_tunes_a_variant_and_scores_every_expert_on_every_hidden_layer(run_benchmark):
    figures, stdout = run_benchmark("study_recipes.py", "--tree", "mixer-supervised", "--head", "masked",
                                    "--models", "20", "--steps", "0.1")
    assert figures["recipe"] == {"tree": "mixer-supervised", "architecture": "wide-mixer", "head": "masked", "steps": 0.1, "lora_rank": 4, "models": 20}
    assert set(figures["layers"]) == {"block1.channel_fc2", "block2.channel_fc2"}  # the LoRA layers, merged; no head
    for row in figures["layers"].values():
        assert row["shape"] == [64, 512]
        assert set(row) == {"shape", "probex", "linear probex", "dense"}
        assert row["dense"][0]["parameters"] == 24 * 64 * 512 + 24
        assert all(0.0 <= run["test"] <= 1.0 for runs in (row["probex"], row["dense"]) for run in runs)
    assert 0.5 <= figures["majority"] <= 1.0 and "majority rule" in stdout


def test_another_architecture_pretrains_a_root_once_and_reuses_it(run_benchmark, tmp_path):
    args = ("--tree", "mixer-supervised", "--architecture", "wider-mixer", "--models", "20", "--steps", "0.05",
            "--root-steps", "10", "--experts", "dense", "--layers", "block2.channel_fc2")
    figures, stdout = run_benchmark("study_recipes.py", *args, "--save-root", str(tmp_path / "roots"))
    assert "is not a wider-mixer" in stdout and "pre-training a wider-mixer root (10 steps)" in stdout
    assert (tmp_path / "roots" / "mixer-supervised.safetensors").is_file()
    assert figures["recipe"]["architecture"] == "wider-mixer"
    assert figures["layers"]["block2.channel_fc2"]["shape"] == [128, 1024]
    assert figures["layers"]["block2.channel_fc2"]["dense"][0]["parameters"] == 24 * 128 * 1024 + 24
    _, again = run_benchmark("study_recipes.py", *args, "--roots", str(tmp_path / "roots"))
    assert "pre-training" not in again  # the saved root of the same architecture is loaded


def test_save_root_refuses_to_overwrite_a_root_file(tmp_path):
    existing = tmp_path / "mixer-supervised.safetensors"
    existing.write_bytes(b"the user's file")
    result = _run("--save-root", str(tmp_path), "--out", str(tmp_path / "o.json"))
    assert result.returncode == 2 and "never overwrites" in result.stderr
    assert existing.read_bytes() == b"the user's file" and not (tmp_path / "o.json").exists()


def test_a_models_file_is_written_once_reused_and_refused_for_another_recipe(run_benchmark, tmp_path):
    models_file = tmp_path / "models.safetensors"
    args = ("--tree", "mixer-supervised", "--models", "20", "--steps", "0.05", "--layers", "block2.channel_fc2",
            "--models-file", str(models_file))
    first, stdout = run_benchmark("study_recipes.py", *args, "--experts", "dense", "multi-view", "--views", "xtxu", "all")
    assert models_file.is_file() and "models written to" in stdout
    row = first["layers"]["block2.channel_fc2"]
    assert set(row) == {"shape", "dense", "multi-view xtxu", "multi-view all"}
    assert row["multi-view xtxu"][0]["parameters"] < row["multi-view all"][0]["parameters"]
    again, stdout = run_benchmark("study_recipes.py", *args, "--experts", "dense")
    assert "models read from" in stdout and again["models_read_from_file"] and not first["models_read_from_file"]
    assert again["fine_tune_seconds"] == first["fine_tune_seconds"]  # the figure of the run that fine-tuned them
    assert again["layers"]["block2.channel_fc2"]["dense"][0]["test"] == first["layers"]["block2.channel_fc2"]["dense"][0]["test"]
    before = models_file.read_bytes()
    other = _run(*args[:2], "--models", "21", *args[4:], "--out", str(tmp_path / "o.json"), timeout=300)
    assert other.returncode == 2 and "holds other models" in other.stderr and other.stderr.count("\n") == 1
    assert models_file.read_bytes() == before and not (tmp_path / "o.json").exists()


def test_unknown_views_are_refused_before_any_work(tmp_path):
    result = _run("--experts", "multi-view", "--views", "xtxu", "xyz", "--out", str(tmp_path / "o.json"))
    assert result.returncode == 2 and result.stderr.startswith("error: --views xyz") and result.stderr.count("\n") == 1
    assert not (tmp_path / "o.json").exists()


def test_a_models_file_that_is_a_folder_is_refused_before_any_work(tmp_path):
    result = _run("--models-file", str(tmp_path), "--out", str(tmp_path / "o.json"))
    assert result.returncode == 2 and "is not a file" in result.stderr and result.stderr.count("\n") == 1
    assert not (tmp_path / "o.json").exists()


def test_the_wide_cnn_gives_a_192_channel_conv3_and_an_unknown_layer_is_one_line(run_benchmark, tmp_path):
    models_file = tmp_path / "models.safetensors"
    args = ("--tree", "cnn-own-heads", "--architecture", "wide-cnn", "--head", "own", "--models", "20",
            "--steps", "0.05", "--root-steps", "10", "--experts", "dense", "--models-file", str(models_file))
    figures, _ = run_benchmark("study_recipes.py", *args, "--layers", "conv3", "--save-root", str(tmp_path / "roots"))
    assert figures["recipe"]["architecture"] == "wide-cnn" and figures["recipe"]["head"] == "own"
    assert figures["layers"]["conv3"]["shape"] == [192, 24 * 9]
    assert figures["layers"]["conv3"]["dense"][0]["parameters"] == 24 * 192 * 216 + 24
    other = tmp_path / "other.safetensors"
    result = _run(*args[:-1], str(other), "--layers", "conv9", "--roots", str(tmp_path / "roots"), "--out", str(tmp_path / "o.json"))
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "no hidden layer conv9" in result.stderr and "conv1, conv2, conv3" in result.stderr
    assert not (tmp_path / "o.json").exists() and not other.exists()  # refused before fine-tuning anything


def test_the_vit_is_fine_tuned_and_read_on_its_matrices_but_not_its_positions(run_benchmark, tmp_path):
    figures, _ = run_benchmark("study_recipes.py", "--tree", "cnn-supervised", "--architecture", "vit", "--models", "20",
                               "--steps", "0.05", "--root-steps", "10", "--experts", "dense",
                               "--save-root", str(tmp_path / "roots"))
    assert figures["recipe"]["architecture"] == "vit"
    blocks = {f"block{b}.{name}": shape for b in (1, 2)
              for name, shape in (("qkv", [192, 64]), ("proj", [64, 64]), ("fc1", [256, 64]), ("fc2", [64, 256]))}
    assert {layer: row["shape"] for layer, row in figures["layers"].items()} == {"embed": [64, 48], **blocks}
    assert figures["layers"]["block1.fc1"]["dense"][0]["parameters"] == 24 * 256 * 64 + 24
