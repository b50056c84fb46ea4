"""Running a script of benchmarks/ as its users do: in its own process, its figures read from its JSON."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture
def run_benchmark(tmp_path):
    """run_benchmark(script, *args) -> (its JSON figures, its stdout); the script must exit 0 within 5 minutes."""

    def run(script: str, *args: str) -> tuple[dict, str]:
        out = tmp_path / f"{Path(script).stem}.json"
        result = subprocess.run([sys.executable, str(BENCHMARKS / script), *args, "--out", str(out)],
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        return json.loads(out.read_text()), result.stdout

    return run
