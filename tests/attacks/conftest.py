"""Shared ground for the attack tests: a tiny zoo, a user's folder and files, a scratch working folder."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # hostile.py, the builders

from hostile import tiny_zoo, user_folder  # noqa: E402


@pytest.fixture(scope="session")
def ground(tmp_path_factory) -> dict[str, Path]:
    """Things the attacks point at: a small zoo, a user's folder, a user's files, a broken expert."""
    root = tmp_path_factory.mktemp("ground")
    zoo = tiny_zoo(root / "zoo", ["tree-a", "tree-b"], per_tree=6)
    user = user_folder(root / "userdir")
    (root / "notes.txt").write_text("my notes\n")
    (root / "secret.env").write_text("API_KEY=sk-0123456789abcdef\n")
    (root / "mine.html").write_text("<html><body>my page</body></html>\n")
    (root / "mine.csv").write_text("name,value\nx,1\n")
    (root / "mine.jsonl").write_text('{"my": "own data"}\n')
    broken = root / "expert-without-class"
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps({"format": "probex-expert", "params": {}}))
    return {"root": root, "zoo": zoo, "user": user, "notes": root / "notes.txt", "secret": root / "secret.env",
            "html": root / "mine.html", "csv": root / "mine.csv", "jsonl": root / "mine.jsonl", "broken": broken}


def _zoo_conftest():
    """The loopback HTTP server of tests/zoo (loaded under its own name: it is a conftest there)."""
    import importlib.util

    name = "zoo_loopback_server"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).parents[1] / "zoo" / "conftest.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while the file runs
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture
def loopback():
    """Loopback HTTP servers (``serve_files``, ``serve``), stopped after the test (see tests/zoo/conftest.py)."""
    factory = _zoo_conftest().LoopbackFactory()
    yield factory
    factory.stop_all()
