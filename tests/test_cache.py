"""The cache folder: what is there, and clearing it by kind and age without touching anything else."""

import os
import time

import pytest

from probex.cache import cache_entries, cache_usage, clear_cache

DAY = 24 * 3600


def _write(path, size, days_old=0.0):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    when = time.time() - days_old * DAY
    os.utime(path, (when, when))
    return path


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PROBEX_CACHE", str(tmp_path))
    _write(tmp_path / "banks" / "head.weight.aaaa.npy", 1000, days_old=40)
    _write(tmp_path / "banks" / "head.weight.aaaa.json", 10, days_old=40)
    _write(tmp_path / "banks" / "conv1.weight.bbbb.npy", 500, days_old=1)
    _write(tmp_path / "banks" / "conv1.weight.bbbb.json", 10, days_old=1)
    _write(tmp_path / "banks" / ".conv2.weight.cccc.npy.x1y2.tmp", 70, days_old=3)  # a write cut short
    _write(tmp_path / "text" / "minilm-dddd.safetensors", 200, days_old=10)
    _write(tmp_path / "sweeps" / "zoo-tree-classes.jsonl", 30, days_old=0)
    _write(tmp_path / "notes" / "mine.txt", 5, days_old=400)  # not probex's: never touched
    _write(tmp_path / "keep.txt", 5, days_old=400)
    return tmp_path


def test_a_banks_files_are_one_entry_and_a_left_over_temporary_is_another(cache):
    entries = {entry.name: entry for entry in cache_entries(["banks"])}
    assert set(entries) == {"head.weight.aaaa", "conv1.weight.bbbb", ".conv2.weight.cccc.npy.x1y2.tmp"}
    assert entries["head.weight.aaaa"].size == 1010 and len(entries["head.weight.aaaa"].paths) == 2
    assert 39.9 < entries["head.weight.aaaa"].age_days() < 40.1


def test_usage_counts_entries_bytes_and_the_oldest_per_kind(cache):
    usage = cache_usage()
    assert list(usage) == ["banks", "atlas", "text", "sweeps", "search"]
    assert usage["banks"]["entries"] == 3 and usage["banks"]["bytes"] == 1590
    assert round(usage["banks"]["oldest_days"]) == 40
    assert usage["atlas"] == {"folder": str(cache / "atlas"), "entries": 0, "bytes": 0, "oldest_days": None}


def test_clearing_by_age_keeps_what_was_used_recently(cache):
    removed = clear_cache(older_than_days=7)
    assert sorted(entry.name for entry in removed) == ["head.weight.aaaa", "minilm-dddd"]
    assert not (cache / "banks" / "head.weight.aaaa.json").exists()
    assert (cache / "banks" / "conv1.weight.bbbb.npy").exists() and (cache / "sweeps" / "zoo-tree-classes.jsonl").exists()


def test_clearing_one_kind_leaves_the_others_and_foreign_files_alone(cache):
    removed = clear_cache(["banks"])
    assert len(removed) == 3 and not any((cache / "banks").iterdir())
    assert (cache / "text" / "minilm-dddd.safetensors").exists()
    clear_cache()
    assert (cache / "notes" / "mine.txt").exists() and (cache / "keep.txt").exists()
    assert cache_entries() == []


def test_unknown_kinds_and_negative_ages_are_refused(cache):
    with pytest.raises(ValueError, match="unknown cache kind"):
        clear_cache(["models"])
    with pytest.raises(ValueError, match=">= 0"):
        clear_cache(older_than_days=-1)
