"""The `probex` command line frame."""

import subprocess
import sys

from probex.cli import main


def test_probex_info_names_the_device(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "device: cpu" in out or "device: cuda" in out


def test_the_console_script_runs_as_a_module():
    result = subprocess.run([sys.executable, "-m", "probex.cli", "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.startswith("probex ")
