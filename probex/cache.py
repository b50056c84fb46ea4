"""What probex keeps in its cache folder, and clearing it.

probex caches what it can recompute: layer banks (``banks``), atlas coordinates (``atlas``),
text embeddings (``text``), the results of layer sweeps run from the command line
(``sweeps``) and each tree's expert outputs for whole-zoo search (``search``), each in
``$PROBEX_CACHE/<kind>`` (else ``~/.cache/probex/<kind>``). :func:`cache_usage` says what is
there and :func:`clear_cache` removes it, all of it or by kind and age. Only those five folders
are ever touched, so pointing ``$PROBEX_CACHE`` at a folder that holds other things is safe.

The cache has a size cap, ``$PROBEX_CACHE_MAX_GB`` (default :data:`DEFAULT_MAX_GB` GB; ``off``
for none). Whenever probex writes an entry into it (:func:`probex.storage.after_cache_write`), the
least recently used entries are evicted until the five folders fit under the cap again
(:func:`enforce_cache_limit`). Never evicted: the entry just written, and any file that a
process has open or memory-mapped (a bank being written or read; on Linux this is read from
``/proc``, elsewhere entries used in the last :data:`RECENT_SECONDS` seconds are kept).
"Last used" is the latest access or change time of an entry's files.

An entry is what one cached item wrote: a bank's arrays and index share a stem and count
as one; the hidden temporaries of a write cut short by a crash count as entries of their own.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

from probex.errors import ProbeXError
from probex.storage import cache_dir

logger = logging.getLogger(__name__)

KINDS = ("banks", "atlas", "text", "sweeps", "search")
DAY = 24 * 3600
MAX_GB_ENV = "PROBEX_CACHE_MAX_GB"
#: The cap when ``$PROBEX_CACHE_MAX_GB`` is not set, in GB (10^9 bytes).
DEFAULT_MAX_GB = 20.0
#: Where open files cannot be listed: entries used this recently are never evicted.
RECENT_SECONDS = 600
_OFF = ("off", "none", "inf", "unlimited")


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
    """Bytes and last use of a cache path; a symbolic link counts as itself, never as what it points to."""
    if path.is_symlink() or not path.is_dir():
        files = [path]
    else:
        files = [p for p in path.rglob("*") if p.is_symlink() or p.is_file()]
    size, latest = 0, 0.0
    for file in files:
        stat = file.lstat()
        size += stat.st_size
        latest = max(latest, stat.st_atime, stat.st_mtime)
    return size, latest or path.lstat().st_mtime


def _entry_name(kind: str, path: Path) -> str:
    """The entry a cached file belongs to: a folder or a hidden temporary is one; a bank's arrays and
    index share its stem; other files their name less the suffix."""
    if path.name.startswith(".") or (path.is_dir() and not path.is_symlink()):
        return path.name
    if kind == "banks":
        from probex.zoo.bank_cache import entry_of

        return entry_of(path.name)
    return path.name.rsplit(".", 1)[0]


def cache_entries(kinds: Optional[Iterable[str]] = None) -> list[CacheEntry]:
    """Every entry of the chosen kinds (default: all), oldest first."""
    entries = []
    for kind in _kinds(kinds):
        folder = cache_dir(kind)
        if not folder.is_dir():
            continue
        groups: dict[str, list[Path]] = {}
        for path in folder.iterdir():
            groups.setdefault(_entry_name(kind, path), []).append(path)
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
        _remove(entry)
        removed.append(entry)
    return removed


def _remove(entry: CacheEntry) -> None:
    for path in entry.paths:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)  # a link goes, what it points to stays


# ---------------------------------------------------------------------------------------------
# the size cap


def cache_limit_bytes() -> Optional[int]:
    """The cap in bytes from ``$PROBEX_CACHE_MAX_GB`` (default :data:`DEFAULT_MAX_GB`), or None when it is off.

    Raises:
        ProbeXError: the variable is neither a number of GB >= 0 nor ``off``.
    """
    text = os.environ.get(MAX_GB_ENV, "").strip()
    if not text:
        return int(DEFAULT_MAX_GB * 1e9)
    if text.lower() in _OFF:
        return None
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value >= 0 or value == float("inf"):
        raise ProbeXError(f"${MAX_GB_ENV} must be a size in GB (e.g. 20 or 0.5) or 'off'; got {text!r}")
    return int(value * 1e9)


def describe_limit() -> str:
    """One line for ``probex cache info`` and the app: the cap, or why there is none."""
    try:
        limit = cache_limit_bytes()
    except ValueError as error:
        return f"no cap: {error}"
    if limit is None:
        return f"no cap (${MAX_GB_ENV}=off)"
    source = f"${MAX_GB_ENV}" if os.environ.get(MAX_GB_ENV, "").strip() else f"default; set ${MAX_GB_ENV}"
    return f"cap {limit / 1e9:g} GB ({source}); the least recently used entries are evicted above it"


def _paths_in_use(root: Path) -> Optional[set[str]]:
    """Paths under ``root`` that any visible process has open or memory-mapped; None where /proc is missing."""
    proc = Path("/proc")
    if not (proc / "self" / "maps").exists():
        return None
    prefix = str(root.resolve()) + os.sep
    used: set[str] = set()
    for pid in os.listdir(proc):
        if not pid.isdigit():
            continue
        try:
            with open(proc / pid / "maps", encoding="utf-8", errors="replace") as handle:
                for line in handle:
                    path = line.rstrip("\n").split(maxsplit=5)[5:]
                    if path and path[0].startswith(prefix):
                        used.add(path[0].removesuffix(" (deleted)"))
            for fd in os.listdir(proc / pid / "fd"):
                target = os.readlink(proc / pid / "fd" / fd)
                if target.startswith(prefix):
                    used.add(target)
        except OSError:  # the process ended, or is not ours to look into
            continue
    return used


def _in_use(entry: CacheEntry, used: Optional[set[str]], now: float) -> bool:
    if used is None:
        return now - entry.last_used < RECENT_SECONDS
    for path in entry.paths:
        resolved = str(path.resolve()) if not path.is_symlink() else str(path.parent.resolve() / path.name)
        if resolved in used or (path.is_dir() and any(name.startswith(resolved + os.sep) for name in used)):
            return True
    return False


def enforce_cache_limit(protect: Iterable[str | os.PathLike] = (), limit: Optional[int] = -1) -> list[CacheEntry]:
    """Evict the least recently used entries until the cache folders fit under the cap; returns them.

    Args:
        protect: paths whose entries stay whatever their age (the entry just written).
        limit: bytes; -1 (default) reads :func:`cache_limit_bytes`; None means no cap.
    """
    limit = cache_limit_bytes() if limit == -1 else limit
    if limit is None:
        return []
    entries = cache_entries()
    total = sum(entry.size for entry in entries)
    if total <= limit:
        return []
    kept = {(Path(path).parent.name, _entry_name(Path(path).parent.name, Path(path))) for path in protect}
    used = _paths_in_use(cache_dir(KINDS[0]).parent) if entries else set()
    now = time.time()
    evicted = []
    for entry in entries:  # oldest first
        if total <= limit:
            break
        if (entry.kind, entry.name) in kept or _in_use(entry, used, now):
            continue
        _remove(entry)
        total -= entry.size
        evicted.append(entry)
    if evicted:
        logger.info("cache over its cap of %.3g GB: evicted %d least recently used entries (%.3g GB)",
                    limit / 1e9, len(evicted), sum(entry.size for entry in evicted) / 1e9)
    if total > limit:
        logger.warning("the probex cache holds %.3g GB, above its cap of %.3g GB, in entries now in use; "
                       "raise $%s or clear the cache", total / 1e9, limit / 1e9, MAX_GB_ENV)
    return evicted
