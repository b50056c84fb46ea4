"""What probex keeps in its cache folder, and clearing it.

probex caches what it can recompute: layer banks (``banks``), atlas coordinates (``atlas``),
text embeddings (``text``) and the results of layer sweeps run from the command line
(``sweeps``), each in ``$PROBEX_CACHE/<kind>`` (else ``~/.cache/probex/<kind>``). Nothing is
evicted on its own; :func:`cache_usage` says what is there and :func:`clear_cache` removes it,
all of it or by kind and age. Only those four folders are ever touched, so pointing
``$PROBEX_CACHE`` at a folder that holds other things is safe.

An entry is what one cached item wrote: a bank's arrays and index share a stem and count
as one; the hidden temporaries of a write cut short by a crash count as entries of their own.
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

from probex.errors import ProbeXError
from probex.storage import cache_dir

KINDS = ("banks", "atlas", "text", "sweeps")
DAY = 24 * 3600


@dataclass
class CacheEntry:
    """One cached item: its files, their size, and when it was last written or read."""

    kind: str
    name: str
    paths: list[Path]
    size: int
    last_used: float  # seconds since the epoch: the latest access or change time of its files

    def age_days(self, now: Optional[float] = None) -> float:
        return ((time.time() if now is None else now) - self.last_used) / DAY


def _kinds(kinds: Optional[Iterable[str]]) -> list[str]:
    chosen = list(KINDS if kinds is None else kinds)
    unknown = sorted(set(chosen) - set(KINDS))
    if unknown:
        raise ProbeXError(f"unknown cache kind(s) {unknown}; the kinds are {list(KINDS)}")
    return chosen


def _size_and_time(path: Path) -> tuple[int, float]:
    files = [path] if not path.is_dir() else [p for p in path.rglob("*") if p.is_file()]
    size, latest = 0, 0.0
    for file in files:
        stat = file.stat()
        size += stat.st_size
        latest = max(latest, stat.st_atime, stat.st_mtime)
    return size, latest or path.stat().st_mtime


def _entry_name(kind: str, file_name: str) -> str:
    """The entry a cached file belongs to: a bank's arrays and index share its stem, other files their name."""
    if kind == "banks":
        from probex.zoo.bank_cache import entry_of

        return entry_of(file_name)
    return file_name.rsplit(".", 1)[0]


def cache_entries(kinds: Optional[Iterable[str]] = None) -> list[CacheEntry]:
    """Every entry of the chosen kinds (default: all), oldest first."""
    entries = []
    for kind in _kinds(kinds):
        folder = cache_dir(kind)
        if not folder.is_dir():
            continue
        groups: dict[str, list[Path]] = {}
        for path in folder.iterdir():
            name = path.name if path.is_dir() or path.name.startswith(".") else _entry_name(kind, path.name)
            groups.setdefault(name, []).append(path)
        for name, paths in groups.items():
            measured = [_size_and_time(path) for path in paths]
            entries.append(CacheEntry(kind, name, sorted(paths), sum(size for size, _ in measured),
                                      max(latest for _, latest in measured)))
    return sorted(entries, key=lambda entry: entry.last_used)


def cache_usage(kinds: Optional[Iterable[str]] = None) -> dict[str, dict]:
    """kind -> {"folder", "entries", "bytes", "oldest_days"} for the chosen kinds (default: all)."""
    now = time.time()
    usage = {kind: {"folder": str(cache_dir(kind)), "entries": 0, "bytes": 0, "oldest_days": None} for kind in _kinds(kinds)}
    for entry in cache_entries(kinds):
        row = usage[entry.kind]
        row["entries"] += 1
        row["bytes"] += entry.size
        age = round(entry.age_days(now), 1)
        row["oldest_days"] = age if row["oldest_days"] is None else max(row["oldest_days"], age)
    return usage


def clear_cache(kinds: Optional[Iterable[str]] = None, older_than_days: Optional[float] = None) -> list[CacheEntry]:
    """Remove the entries of the chosen kinds (default: all), or only those unused for more than
    ``older_than_days``; returns what was removed. Files that vanish meanwhile are skipped."""
    if older_than_days is not None and not (math.isfinite(older_than_days) and older_than_days >= 0):
        raise ProbeXError(f"older_than_days must be a finite number >= 0; got {older_than_days}")
    now = time.time()
    removed = []
    for entry in cache_entries(kinds):
        if older_than_days is not None and entry.age_days(now) <= older_than_days:
            continue
        for path in entry.paths:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        removed.append(entry)
    return removed
