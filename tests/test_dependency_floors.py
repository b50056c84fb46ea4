"""The declared minimum versions of the runtime dependencies are versions probex works with.

The floors (``>=X``) of ``pyproject.toml``'s dependencies and its ``hub`` extra are installed
exactly (``pip install name==X``) into a fresh virtual environment, where they shadow the newer
versions of this machine; probex (from the checkout) then downloads from a fake Hub on loopback,
reads the files, builds banks and fits an expert and a router under them (tests/floors_smoke.py).
torch is the one dependency taken from the machine: an older torch is gigabytes to download, so
its floor is the version the suite runs on. The packages come from the package index (pip's
cache makes reruns quick: about 1 minute, 2-3 the first time); without the index the test is
skipped and says so.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent / "zoo"))  # the fake Hub lives beside the zoo tests

from fake_hub import FakeHub, add_modelj_mae, add_sd_unet_repo, discriminative_repo, loopback_factory  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
NETWORK_TROUBLE = ("Could not fetch URL", "NewConnectionError", "Temporary failure in name resolution",
                   "Network is unreachable", "Max retries exceeded", "ConnectTimeout", "ReadTimeout")


def declared_floors() -> dict[str, str]:
    """name -> floor of every ``name>=X`` among the dependencies and the ``hub`` extra (torch set apart)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    floors = {}
    for requirement in project["dependencies"] + project["optional-dependencies"]["hub"]:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9][0-9A-Za-z.]*)(,.*)?", requirement.replace(" ", ""))
        assert match, f"pyproject.toml: {requirement!r} declares no floor (name>=X)"
        floors[match.group(1)] = match.group(2)
    return floors


def test_every_runtime_dependency_declares_a_floor_and_torchs_is_the_tested_one():
    floors = declared_floors()
    assert {"torch", "numpy", "safetensors", "huggingface_hub"} <= set(floors)
    installed = tuple(int(part) for part in torch.__version__.split("+")[0].split(".")[:2])
    assert tuple(int(part) for part in floors["torch"].split(".")[:2]) == installed, (
        "torch's floor is the torch the suite runs on; a lower one needs a test with that torch")


def test_requirements_txt_declares_the_same_floors_as_pyproject():
    listed = dict(re.findall(r"^([A-Za-z0-9_.-]+)>=([0-9][0-9A-Za-z.]*)", (REPO / "requirements.txt").read_text(), re.MULTILINE))
    floors = declared_floors()
    assert {name: listed.get(name) for name in floors} == floors


def test_probex_works_with_the_declared_minimum_versions(tmp_path):
    floors = {name: version for name, version in declared_floors().items() if name != "torch"}
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", *(f"{name}=={version}" for name, version in floors.items())],
                             capture_output=True, text=True, timeout=900)
    if install.returncode != 0 and any(sign in install.stderr + install.stdout for sign in NETWORK_TROUBLE):
        pytest.skip(f"the package index is unreachable, so the floors cannot be installed: {install.stderr.strip()[-300:]}")
    assert install.returncode == 0, install.stderr[-3000:]

    servers = loopback_factory()
    try:
        hub = FakeHub(servers)
        add_sd_unet_repo(hub, {"train": 3, "val": 1})
        add_modelj_mae(hub, {"train": [0, 1, 2], "val": [3], "test": [4]})
        hub.add("alice/vit-cifar", discriminative_repo(7))
        env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "HF_TOKEN")}
        env.update(PYTHONPATH=str(REPO), HF_ENDPOINT=hub.url, HF_HUB_OFFLINE="0", HF_HOME=str(tmp_path / "hf-home"),
                   PROBEX_CACHE=str(tmp_path / "cache"))
        result = subprocess.run([str(python), str(REPO / "tests" / "floors_smoke.py"), json.dumps(floors), str(tmp_path / "work")],
                                cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    finally:
        servers.stop_all()
    assert result.returncode == 0 and "SMOKE OK" in result.stdout, (result.stdout[-2000:], result.stderr[-4000:])
