"""The study summary reads study_recipes.py's figure files and tells which layers meet issue 20's point 2."""

import json
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
SCRIPT = BENCHMARKS / "study_summary.py"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120)


def _runs(tests: list[float], parameters: int) -> list[dict]:
    return [{"test": test, "val": test, "parameters": parameters, "seconds": 1.0} for test in tests]


def _figures() -> dict:
    """Two layers: on "a" ProbeX clears Dense by 0.03 with 20x fewer parameters; on "b" it trails by 0.1."""
    return {"recipe": {"tree": "cnn-supervised", "architecture": "vit", "head": "own", "steps": 1.0, "lora_rank": None,
                       "models": 300},
            "seeds": [0, 1], "majority": 0.51, "chance": 0.5,
            "layers": {"a": {"shape": [4, 5], "probex": _runs([0.80, 0.82], 10), "dense": _runs([0.78, 0.78], 200),
                             "multi-view xtxu": _runs([0.90, 0.90], 25), "multi-view xu+xtxu": _runs([0.81, 0.81], 20)},
                       "b": {"shape": [6, 7], "probex": _runs([0.60, 0.60], 10), "linear probex": _runs([0.65, 0.65], 10),
                             "dense": _runs([0.70, 0.70], 50)}}}


def test_the_summary_names_the_layers_that_meet_point_2_and_the_best_views(tmp_path):
    study = tmp_path / "study_recipes_x.json"
    study.write_text(json.dumps(_figures()))
    out = tmp_path / "studies.md"
    result = _run(str(study), "--out", str(out))
    assert result.returncode == 0, result.stderr
    headline = next(line for line in result.stdout.splitlines() if line.startswith("| `study_recipes_x.json`"))
    cells = [cell.strip() for cell in headline.strip("|").split("|")]
    # the best views (xtxu) have 8x fewer parameters than Dense, not 10x; xu+xtxu meets both margins
    assert cells[2:] == ["2", "+0.030 (a)", "1", "0.780 (a)", "+0.120 (a, xtxu, 8.0x)", "1"]
    assert "| b | 6x7 | 0.600 | 0.650 | 0.700 | -0.100 | 5.0x |  |" in result.stdout
    assert out.read_text() == result.stdout
    assert _run(str(study), "--out", str(out)).returncode == 0  # its own output is replaced


def test_the_summary_never_replaces_another_file_and_refuses_what_is_not_a_study(tmp_path):
    study = tmp_path / "study.json"
    study.write_text(json.dumps(_figures()))
    mine = tmp_path / "notes.md"
    mine.write_text("my notes\n")
    result = _run(str(study), "--out", str(mine))
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "not a summary this script wrote" in result.stderr
    assert mine.read_text() == "my notes\n"
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"layers": {}}))
    result = _run(str(other))
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "not a figure file" in result.stderr


def test_the_shipped_studies_are_all_summarised_and_docs_studies_is_current():
    result = _run()
    assert result.returncode == 0, result.stderr
    for path in BENCHMARKS.glob("study_recipes*.json"):
        assert f"## `{path.name}`" in result.stdout
    assert (BENCHMARKS.parent / "docs" / "studies.md").read_text() == result.stdout  # regenerate it when a study changes
