"""The training benchmark runs end to end (its figures are measured by running it, not here)."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_training.py"


def test_the_training_benchmark_runs_every_setting_and_checks_its_readers_agree(tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, str(SCRIPT), "--tree", "mixer-supervised", "--epochs", "2",
                             "--official-epochs", "1", "--repeats", "1", "--out", str(out)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads(out.read_text())["trees"]["mixer-supervised"]
    from probex import jungle

    assert figures["layer"] == jungle.recommended_layers()["mixer-supervised"] and figures["models"] == 210
    assert set(figures["settings"]) == {"official", "per-core", "in-process"}
    assert figures["settings"]["official"]["batch_size"] == 128 and figures["settings"]["official"]["official_workers"] == 4
    assert all(setting["speed_ratio"] > 0 for setting in figures["settings"].values())
    assert "ratio" in result.stdout
