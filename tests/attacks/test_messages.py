"""Family 7: what reaches the user's terminal is safe and clear, and one error type covers it all.

- a file opened by mistake never has its bytes quoted (as a number or as text) in a message;
- control characters in names from files (ANSI escapes, bidi overrides) never reach the terminal raw;
- a NUL byte in a manifest path leaves that model out with a reason, not the zoo;
- manifest paths that leave the zoo's folder are read and reported (one warning);
- a closed pipe ends the command quietly;
- the library raises ProbeXError (a ValueError) for what users cause, and the cache is never cleared by NaN.
"""

from __future__ import annotations

import ast
import json
import logging
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hostile import tiny_zoo
from probex.cli import main
from probex.errors import ProbeXError, ZooError
from probex.zoo import ModelZoo
from probex.zoo.manifest import save_model_file, write_manifest
from probex.zoo.records import ModelRecord
from probex.zoo.safefile import read_header

ROOT = Path(__file__).resolve().parents[2]

SECRETS = [b"API_KEY=sk-0123456789abcdef\n", b"password=hunter2\n", b"-----BEGIN OPENSSH PRIVATE KEY-----\n",
           b"ghp_abcdefghijklmnopqrstuvwxyz0123456789", b"AKIAIOSFODNN7EXAMPLE", b"#!/bin/sh\nrm -rf /\n",
           b"{\"token\": \"abc\"}", b"\x00\x00\x00\x01secret", b"hf_abcdefghijklmnop", b"export TOKEN=xyz\n"]


@pytest.mark.parametrize("secret", SECRETS, ids=range(len(SECRETS)))
def test_a_file_opened_by_mistake_is_never_quoted_in_the_message(secret, tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(secret)
    with pytest.raises(ZooError) as caught:
        read_header(path)
    message = str(caught.value).replace(str(path), "")
    number = int.from_bytes((secret + b"\0" * 8)[:8], "little")
    assert str(number) not in message
    for word in secret.decode("latin-1").replace("\n", " ").split():
        if len(word) > 3:
            assert word not in message, (word, message)


NAMES_WITH_ESCAPES = ["\x1b[2J\x1b[Hcleared", "\x1b]0;pwned\x07title", "bell\x07", "carriage\rreturn", "\x9b31mC1",
                      "right\u202eto left", "back\x08space", "del\x7fete"]


def _zoo_with_escapes(root: Path) -> Path:
    records = []
    for number, name in enumerate(NAMES_WITH_ESCAPES):
        path = root / f"m{number}.safetensors"
        save_model_file(path, {name: torch.randn(3, 2), "fc.weight": torch.randn(2, 2)}, id=f"{name}-{number}",
                        tree=name, labels=[name])
        records.append(ModelRecord(id=f"{name}-{number}", path=path, tree=name, labels=[name]))
    write_manifest(root, records, name="\x1b[31mzoo")
    return root


def _unsafe(text: str) -> list[str]:
    return [character for character in text if (ord(character) < 32 and character not in "\n\t") or 0x7F <= ord(character) < 0xA0
            or 0x202A <= ord(character) <= 0x202E]


def test_control_characters_in_names_never_reach_the_terminal(tmp_path, capsys):
    zoo = _zoo_with_escapes(tmp_path / "zoo")
    assert main(["zoo", "info", str(zoo), "--layers", "0"]) == 0
    assert main(["zoo", "bank", str(zoo), "nope", "--cache-dir", str(tmp_path / "cache")]) == 2
    out, err = capsys.readouterr()
    assert "cleared" in out and "pwned" in out  # the names are shown ...
    assert _unsafe(out) == [] and _unsafe(err) == []  # ... with their control characters made visible
    assert len(NAMES_WITH_ESCAPES) == 8


def test_a_nul_byte_in_a_manifest_path_leaves_out_that_model_only(tmp_path):
    zoo = tiny_zoo(tmp_path / "zoo", ["t"], per_tree=4)
    manifest = json.loads((zoo / "probex_zoo.json").read_text())
    manifest["models"][1]["path"] = "models/t0-m1.safe\x00tensors"
    manifest["models"][2]["images"] = "images\x00"
    (zoo / "probex_zoo.json").write_text(json.dumps(manifest))
    opened = ModelZoo.open(zoo)
    assert len(opened) == 3 and len(opened.skipped) == 1
    assert "NUL" in opened.skipped[0][1]


def test_paths_leaving_the_zoo_are_read_and_reported_once(tmp_path, caplog):
    outside = tmp_path / "elsewhere"
    zoo = tiny_zoo(tmp_path / "zoo", ["t"], per_tree=3)
    manifest = json.loads((zoo / "probex_zoo.json").read_text())
    outside.mkdir()
    for number, entry in enumerate(manifest["models"]):
        moved = outside / f"m{number}.safetensors"
        (zoo / entry["path"]).rename(moved)
        entry["path"] = f"../elsewhere/{moved.name}" if number else str(moved)
    (zoo / "probex_zoo.json").write_text(json.dumps(manifest))
    with caplog.at_level(logging.WARNING):
        opened = ModelZoo.open(zoo)
    assert len(opened) == 3
    warnings = [record.getMessage() for record in caplog.records if "outside the zoo" in record.getMessage()]
    assert len(warnings) == 1 and "3 model(s)" in warnings[0]


def test_a_closed_pipe_ends_the_command_quietly(tmp_path):
    records = []
    path = tmp_path / "zoo" / "wide.safetensors"
    save_model_file(path, {f"block.{i:04d}.a.rather.long.layer.name.weight": torch.zeros(2, 2) for i in range(3000)},
                    id="wide")
    records.append(ModelRecord(id="wide", path=path))
    write_manifest(tmp_path / "zoo", records, name="wide")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([sys.executable, "-m", "probex.cli", "zoo", "info", str(tmp_path / "zoo"), "--layers", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    process.stdout.readline()  # `| head -1`
    process.stdout.close()
    err = process.stderr.read().decode()
    assert process.wait(timeout=60) == 0
    assert err == "", err


def test_the_library_raises_probex_errors_for_what_users_cause():
    assert issubclass(ProbeXError, ValueError) and issubclass(ZooError, ProbeXError)
    bare = []
    for path in sorted((ROOT / "probex").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) and getattr(node.exc.func, "id", None) == "ValueError":
                bare.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    # internal invariants: a JSON constant hook, the jungle's batch split
    allowed = {"probex/zoo/safefile.py", "probex/jungle/unet.py"}
    assert [site for site in bare if site.split(":")[0] not in allowed] == []


def test_clearing_the_cache_with_nan_or_a_negative_age_removes_nothing(tmp_path, monkeypatch):
    from probex.cache import clear_cache

    monkeypatch.setenv("PROBEX_CACHE", str(tmp_path))
    (tmp_path / "banks").mkdir()
    (tmp_path / "banks" / "x.npy").write_bytes(b"\0" * 100)
    for age in (math.nan, -1.0, math.inf, -math.inf):
        with pytest.raises(ProbeXError):
            clear_cache(older_than_days=age)
    assert (tmp_path / "banks" / "x.npy").exists()
