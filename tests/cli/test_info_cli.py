"""The `probex` command line frame."""

import subprocess
import sys

import pytest
import torch

from probex.cli import main


@pytest.fixture
def torch_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_probex_info_names_the_device(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "device: cpu" in out or "device: cuda" in out


def test_the_console_script_runs_as_a_module():
    result = subprocess.run([sys.executable, "-m", "probex.cli", "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.startswith("probex ")


def test_threads_are_set_before_the_command_runs(capsys, torch_threads, monkeypatch):
    monkeypatch.delenv("PROBEX_THREADS", raising=False)
    assert main(["--threads", "1", "info"]) == 0
    assert "torch CPU threads: 1 " in capsys.readouterr().out


def test_threads_come_from_the_environment(capsys, torch_threads, monkeypatch):
    monkeypatch.setenv("PROBEX_THREADS", "1")
    assert main(["info"]) == 0
    assert "torch CPU threads: 1 " in capsys.readouterr().out


@pytest.mark.parametrize("argv, env", [(["--threads", "0", "info"], None), (["info"], "two")])
def test_a_bad_thread_count_is_a_clear_error(argv, env, capsys, torch_threads, monkeypatch):
    if env is None:
        monkeypatch.delenv("PROBEX_THREADS", raising=False)
    else:
        monkeypatch.setenv("PROBEX_THREADS", env)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "threads" in err and "Traceback" not in err
