"""The cache folder: what is there, and clearing it by kind and age without touching anything else."""

import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from probex.cache import DEFAULT_MAX_GB, cache_entries, cache_limit_bytes, cache_usage, clear_cache, enforce_cache_limit
from probex.storage import atomic_write_bytes

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


# -- the size cap -----------------------------------------------------------------------------


def test_over_the_cap_the_least_recently_used_entries_go_first(cache):
    # 1590 bytes of banks + 200 text + 30 sweeps = 1820; under 600 bytes: the oldest three go (40, 10, 3 days)
    evicted = enforce_cache_limit(limit=600)
    assert [entry.name for entry in evicted] == ["head.weight.aaaa", "minilm-dddd", ".conv2.weight.cccc.npy.x1y2.tmp"]
    assert sum(entry.size for entry in cache_entries()) == 540
    assert (cache / "banks" / "conv1.weight.bbbb.npy").exists() and (cache / "sweeps" / "zoo-tree-classes.jsonl").exists()


def test_under_the_cap_nothing_is_evicted(cache):
    assert enforce_cache_limit(limit=10_000) == [] and enforce_cache_limit(limit=None) == []
    assert len(cache_entries()) == 5


def test_eviction_never_touches_files_outside_the_cache_folders_nor_what_a_link_points_to(cache, tmp_path_factory):
    outside = tmp_path_factory.mktemp("user-data") / "precious.npy"
    outside.write_bytes(b"y" * 5000)
    (cache / "banks" / "linked.0123456789abcdef0123.npy").symlink_to(outside)
    enforce_cache_limit(limit=0)
    assert cache_entries() == []
    assert (cache / "notes" / "mine.txt").exists() and (cache / "keep.txt").exists()
    assert outside.read_bytes() == b"y" * 5000


def test_a_bank_that_another_process_has_mapped_or_is_writing_is_never_evicted(cache):
    reading = cache / "banks" / "head.weight.aaaa.npy"
    np.save(reading, np.zeros((64, 8), np.float32))
    os.utime(reading, (1, 1))  # the least recently used entry by its times
    writing = _write(cache / "banks" / ".big.weight.npy.k3j4.tmp", 50, days_old=90)
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time, numpy as np
        mapped = np.load({str(reading)!r}, mmap_mode="r")
        handle = open({str(writing)!r}, "ab")
        print("ready", flush=True)
        time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        evicted = enforce_cache_limit(limit=0)
        assert reading.exists() and writing.exists()
        assert {entry.name for entry in evicted} == {"conv1.weight.bbbb", "minilm-dddd", "zoo-tree-classes",
                                                     ".conv2.weight.cccc.npy.x1y2.tmp"}
    finally:
        holder.kill()
        holder.wait()
    assert {entry.name for entry in enforce_cache_limit(limit=0)} == {"head.weight.aaaa", ".big.weight.npy.k3j4.tmp"}


def test_a_new_entry_written_into_the_cache_evicts_older_ones_and_is_kept_itself(cache, monkeypatch):
    monkeypatch.setenv("PROBEX_CACHE_MAX_GB", "0.0000012")  # 1200 bytes
    atomic_write_bytes(cache / "atlas" / "map-0123456789abcdef.safetensors", b"z" * 1100)
    assert (cache / "atlas" / "map-0123456789abcdef.safetensors").exists()
    assert sum(entry.size for entry in cache_entries()) <= 1200
    assert not (cache / "banks" / "head.weight.aaaa.npy").exists()  # the oldest went first
    assert (cache / "notes" / "mine.txt").exists()


def test_writing_outside_the_cache_evicts_nothing(cache, monkeypatch, tmp_path_factory):
    monkeypatch.setenv("PROBEX_CACHE_MAX_GB", "0")
    atomic_write_bytes(tmp_path_factory.mktemp("out") / "report.json", b"{}")
    atomic_write_bytes(cache / "notes" / "more.txt", b"mine")
    assert len(cache_entries()) == 5


@pytest.mark.parametrize("value, expected", [(None, 20_000_000_000), ("0.5", 500_000_000), ("0", 0), ("off", None)])
def test_the_cap_comes_from_the_environment_with_a_documented_default(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv("PROBEX_CACHE_MAX_GB", raising=False)
    else:
        monkeypatch.setenv("PROBEX_CACHE_MAX_GB", value)
    assert cache_limit_bytes() == expected
    assert DEFAULT_MAX_GB == 20.0


@pytest.mark.parametrize("value", ["-1", "lots", "nan", "1e400"])
def test_a_nonsense_cap_is_refused_with_the_variable_named(monkeypatch, value):
    monkeypatch.setenv("PROBEX_CACHE_MAX_GB", value)
    with pytest.raises(ValueError, match="PROBEX_CACHE_MAX_GB"):
        cache_limit_bytes()


def test_building_a_bank_over_the_cap_evicts_the_older_bank_and_keeps_the_new_one(tmp_path, monkeypatch):
    from probex.zoo import ModelZoo
    from tests.zoo.zoo_fixtures import write_generative_zoo

    monkeypatch.setenv("PROBEX_CACHE", str(tmp_path / "cache"))
    write_generative_zoo(tmp_path / "zoo", images_per_model=0)
    zoo = ModelZoo.open(tmp_path / "zoo")
    first, second = [info.name for info in zoo.catalog()][:2]
    zoo.bank(first)
    size = sum(entry.size for entry in cache_entries(["banks"]))
    monkeypatch.setenv("PROBEX_CACHE_MAX_GB", str(1.5 * size / 1e9))  # room for one bank, not two
    bank = zoo.bank(second)
    names = [entry.name for entry in cache_entries(["banks"])]
    assert len(names) == 1 and names[0].startswith(second.replace("/", "_")[:40])
    assert len(bank) == len(zoo) and len(zoo.bank(second)) == len(zoo)  # the new entry is whole and reused
