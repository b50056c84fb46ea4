"""A small demo jungle, built once per test session (about 40 s on two cores, validation included)."""

import pytest

from probex.cli import main


@pytest.fixture(scope="session")
def small_jungle(tmp_path_factory):
    out = tmp_path_factory.mktemp("jungle")
    assert main(["jungle", "build", "--out", str(out), "--size", "small", "--workers", "2"]) == 0
    return out
