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
