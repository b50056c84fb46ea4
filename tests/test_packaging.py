"""A plain install works: the wheel carries the shipped data, and an installed probex finds it.

The test builds the wheel from a copy of the checkout (``pip wheel . --no-deps``, with the
installed setuptools: no network), installs it into a fresh virtual environment outside the
checkout (``--system-site-packages`` only for the heavy dependencies: torch, numpy, ...), and
from another folder opens the demo jungle, reads the class-name tables and runs the ``probex``
console script. About 1.5 minutes, most of it building the 68 MB wheel (14,800 files of the
demo jungle).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

CHECK = """
import sys
from pathlib import Path

import probex
from probex import jungle
from probex.zoo.classnames import cifar100_names, imagenet_classes, imagenet_name

where = Path(probex.__file__).resolve()
assert where.is_relative_to(Path(sys.argv[1]).resolve()), f"probex imported from {where}, not the venv"
assert not any(Path(entry or ".").resolve() == Path(sys.argv[2]) for entry in sys.path), "the checkout is importable"
zoo = jungle.load()
print("JUNGLE", len(zoo), sorted(zoo.trees)[:3])
print("RECOMMENDED", len(jungle.recommended_layers()))
print("IMAGENET", len({item.name for item in imagenet_classes()}), imagenet_name("n03126707"))
print("CIFAR", len(cifar100_names()), cifar100_names()[0])
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built from a copy of the checkout (so the build writes nothing into the repository)."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in ("probex", "assets"):
        shutil.copytree(REPO / folder, source / folder, ignore=ignore)
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist)],
                   cwd=source, check=True, capture_output=True, timeout=600)
    (built,) = dist.glob("probex-*.whl")
    return built


def test_the_wheel_holds_every_module_and_every_shipped_file(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {str(path.relative_to(REPO)) for path in (REPO / "probex").rglob("*.py")}
    assert sorted(modules - names) == []
    shipped = {"probex/assets/" + str(path.relative_to(REPO / "assets")) for path in (REPO / "assets").rglob("*")
               if path.is_file() and "__pycache__" not in path.parts}
    assert sorted(shipped - names) == []


def test_an_installed_wheel_opens_the_demo_jungle_and_the_class_tables_from_another_folder(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)],
                   check=True, capture_output=True, timeout=600)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env["PROBEX_CACHE"] = str(tmp_path / "cache")

    result = subprocess.run([str(python), "-c", CHECK, str(venv), str(REPO)], cwd=elsewhere, env=env,
                            capture_output=True, text=True, timeout=300)

    assert result.returncode == 0, result.stderr[-3000:]
    assert "JUNGLE 3100" in result.stdout and "RECOMMENDED 5" in result.stdout
    assert "IMAGENET 1000 construction crane" in result.stdout and "CIFAR 100 apple" in result.stdout
    cli = subprocess.run([str(venv / "bin" / "probex"), "layers", "--tree", "cnn-supervised"], cwd=elsewhere, env=env,
                         capture_output=True, text=True, timeout=300)
    assert cli.returncode == 0 and "conv1.weight" in cli.stdout, cli.stderr[-2000:]
