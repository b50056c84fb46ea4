"""Family 2: names from data (trees, zoos, ids) never become paths unsanitised.

A watched folder holds the zoo, the output folder, a victim folder and the cache; every command
that writes files named after trees or zoos runs on zoos whose names are hostile (``../``,
absolute paths into the victim, Hub-style ``owner/name``, control characters). Afterwards nothing
outside the command's output folder and the cache may have changed.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hostile import HOSTILE_NAMES, changed, snapshot, tiny_zoo, user_folder
from probex.cli import main
from probex.storage import safe_name


def _names(victim: Path) -> list[str]:
    """Hostile tree names, including absolute paths and climbs into ``victim``."""
    return [str(victim), str(victim / "sub"), f"../{victim.name}", f"../../{victim.parent.name}/{victim.name}",
            "runwayml/stable-diffusion-v1-5", "\x1b]0;title\x07tree"]


@pytest.fixture
def watched(tmp_path, monkeypatch):
    """(root, zoo, out, victim, cache): a watched root folder and the places inside it."""
    root = tmp_path / "watched"
    victim = user_folder(root / "victim")
    cache = root / "cache"
    monkeypatch.setenv("PROBEX_CACHE", str(cache))
    zoo = tiny_zoo(root / "zoo", _names(victim), per_tree=21, name="../../zoo-name/..")
    out = root / "out"
    out.mkdir()
    monkeypatch.chdir(out)
    return root, zoo, out, victim, cache


def _only_inside(paths: list[str], *allowed: Path) -> list[str]:
    return [path for path in paths if not any(path == str(folder) or path.startswith(str(folder) + os.sep) for folder in allowed)]


def test_safe_name_keeps_every_hostile_name_inside_its_folder_and_apart(tmp_path):
    names = list(HOSTILE_NAMES) + _names(tmp_path / "victim") + [f"tree/{i}" for i in range(50)]
    made = [safe_name(name) for name in names]
    for name, path_name in zip(names, made):
        joined = (tmp_path / path_name).resolve()
        assert joined.parent == tmp_path.resolve(), name
        assert path_name.isprintable() and len(path_name) <= 100, name
    assert len(set(made)) == len(set(names))  # no two names share a file
    assert len(names) >= 76


def test_sweep_all_trees_writes_only_into_the_results_folder(watched):
    root, zoo, out, victim, cache = watched
    results = out / "results" / "sweep.jsonl"
    before = snapshot(root)
    assert main(["sweep", str(zoo), "--tree", "all", "--epochs", "1", "--results", str(results)]) == 0
    moved = changed(before, snapshot(root))
    assert moved and _only_inside(moved, out / "results", cache) == []
    assert len(list((out / "results").glob("sweep-*.jsonl"))) == len(_names(victim))


def test_sweep_with_results_in_the_cache_writes_only_into_the_cache(watched):
    root, zoo, out, victim, cache = watched
    before = snapshot(root)
    assert main(["sweep", str(zoo), "--tree", "runwayml/stable-diffusion-v1-5", "--epochs", "1"]) == 0
    moved = changed(before, snapshot(root))
    assert moved and _only_inside(moved, cache) == []
    assert [path.name.startswith("zoo-name") for path in (cache / "sweeps").iterdir()] == [True]


def test_jungle_validate_writes_only_into_the_zoo_and_never_replaces_the_victim(watched):
    from probex.jungle.validation import validate_jungle
    from probex.zoo.extras import expert_dirs

    root, zoo, out, victim, cache = watched
    before = snapshot(root)
    validate_jungle(zoo, params={"epochs": 1})
    moved = changed(before, snapshot(root))
    assert _only_inside(moved, zoo / "experts", zoo / "sweeps", zoo / "validation.json",
                        zoo / "recommended_layers.json", cache) == []
    assert sorted(expert_dirs(zoo)) == sorted(_names(victim))  # each expert found again under its tree's name
    assert (victim / "thesis.tex").read_text() == "\\chapter{Results}\n"


def test_report_writes_only_into_its_output_folder(watched):
    root, zoo, out, victim, cache = watched
    report = out / "report"
    before = snapshot(root)
    assert main(["report", str(zoo), "--epochs", "1", "--out", str(report)]) == 0
    moved = changed(before, snapshot(root))
    assert moved and _only_inside(moved, report, cache) == []


def _fake_hub_module():
    """The fake Hub of tests/zoo/fake_hub.py (loaded under its own name)."""
    import importlib.util
    import sys

    name = "zoo_fake_hub"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).parents[1] / "zoo" / "fake_hub.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.mark.parametrize("hostile", ["../../escaped.safetensors", "sub/../../escaped.safetensors", "/tmp/escaped.safetensors"])
def test_file_names_listed_by_a_server_never_leave_the_download_folder(hostile, loopback, monkeypatch, tmp_path):
    from huggingface_hub import constants

    from probex.errors import ZooError
    from probex.zoo import hub

    module = _fake_hub_module()
    fake = module.FakeHub(loopback)
    monkeypatch.setenv("HF_ENDPOINT", fake.url)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr(hub.retry, "RETRY_DELAYS", (0.0,) * 8)
    repo = module.discriminative_repo(5)
    fake.add("alice/vit", {**repo, hostile: repo["model.safetensors"]})
    root = tmp_path / "watched"
    (root / "out").mkdir(parents=True)
    before = snapshot(root)
    with pytest.raises(ZooError, match="leave the download folder"):
        hub.download_repos(["alice/vit"], root / "out", layers=["classifier"])
    assert _only_inside(changed(before, snapshot(root)), root / "out") == []
    assert not (tmp_path / "escaped.safetensors").exists() and not Path("/tmp/escaped.safetensors").exists()
