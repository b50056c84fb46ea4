"""The bank cache: one entry per layer per zoo, trusted only when it provably matches the files.

An entry is a few plain ``.npy`` arrays and an index, in the cache folder, named by the layer
and the first 24 hex digits of its key:

- ``<stem>.X.npy`` (a dense layer, [N, d_W, d_H]), or ``<stem>.B.npy``, ``<stem>.A.npy`` and
  ``<stem>.scale.npy`` (a LoRA layer's factors, see :mod:`probex.zoo.factored`);
- ``<stem>.json``: the index (format, key, ids, skipped models, each array's byte size and
  CRC-32, and the CRC-32 of the index itself), written last.

The key hashes the layer, the dtype, and for every model its id, file path, size, mtime_ns,
ctime_ns, inode and device, and its LoRA alpha: any write to a model file changes its ctime,
which no one can set back, so an edited model gives a new key even with its size and mtime
restored. On load an entry is used only when the index's own checksum holds, its key is the
one computed now, its ids are exactly the models asked for (in order, less the skipped ones),
and every array has its recorded size and CRC-32. Anything else rebuilds the entry; cached
values are never returned unverified.

The CRC-32 reads each array once with plain reads (zlib, about 2 GB/s on one core here; the
memory map is not touched, so verifying adds nothing to the process's memory); a process
remembers the arrays it verified by their file identity, so loading an unchanged entry again
costs a ``stat``.

Writes go to temporaries named ``.<file>.<host>.<pid>.<random>.tmp`` and are renamed into
place; a kill leaves at most such temporaries, which the next build removes once their
process is gone.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import socket
import time
import uuid
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from probex.storage import after_cache_write
from probex.zoo.records import FileIdentity, file_identity

logger = logging.getLogger(__name__)

#: Bump when the way banks are computed or stored changes, so old entries are not reused.
CACHE_FORMAT = 2

_READ_BYTES = 16 * 2**20
_HOST = re.sub(r"[^A-Za-z0-9-]+", "-", socket.gethostname())[:40] or "host"
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)\.[0-9a-f]{8}\.tmp$")
_ENTRY_FILE = re.compile(r"^(?P<stem>.+\.[0-9a-f]{24})\.(?:[A-Za-z]+\.npy|json)$")
_VERIFIED: dict[str, tuple[FileIdentity, int]] = {}  # path -> (identity, crc32) verified in this process


def cache_key(layer: str, dtype: str, models: Sequence[tuple[str, Path, FileIdentity, object]],
              presented: object = None) -> str:
    """Hash of what a bank is built from: ``models`` are (id, weight file, file identity, LoRA scaling);
    ``presented`` is how the layer is presented (its kind and matrix shape)."""
    material = {
        "format": CACHE_FORMAT,
        "layer": layer,
        "dtype": dtype,
        "presented": presented,
        "models": [[model_id, os.path.abspath(path), list(identity), alpha] for model_id, path, identity, alpha in models],
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def entry_stem(layer: str, key: str) -> str:
    """The file-name stem of a cache entry (the layer made safe as a file name, then the key)."""
    return f"{re.sub(r'[^A-Za-z0-9._-]+', '_', layer)[:80]}.{key[:24]}"


def entry_of(file_name: str) -> str:
    """The stem of the cache entry a file of the cache folder belongs to (its name less the suffixes
    after the key; the name less its last suffix for a file that is not a bank's)."""
    match = _ENTRY_FILE.match(file_name)
    return match.group("stem") if match else file_name.rsplit(".", 1)[0]


def file_crc32(path: Path) -> int:
    """CRC-32 of a file's bytes, read in 16 MB pieces with plain reads."""
    crc = 0
    buffer = bytearray(_READ_BYTES)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as handle:
        while True:
            count = handle.readinto(buffer)
            if not count:
                return crc
            crc = zlib.crc32(view[:count], crc)


def index_checksum(index: dict[str, Any]) -> int:
    """CRC-32 of the index's canonical JSON without its ``checksum`` field."""
    body = {key: value for key, value in index.items() if key != "checksum"}
    return zlib.crc32(json.dumps(body, sort_keys=True).encode())


def remember_verified(path: Path, crc: int) -> None:
    """Note that ``path`` (as it is now) holds bytes of CRC-32 ``crc``, so loads in this process need not read it."""
    _VERIFIED[str(path)] = (file_identity(path), crc)


def _verified(path: Path, crc: int) -> bool:
    known = _VERIFIED.get(str(path))
    identity = file_identity(path)
    if known == (identity, crc):
        return True
    if file_crc32(path) != crc:
        return False
    _VERIFIED[str(path)] = (identity, crc)
    return True


def load_entry(cache_dir: Path, stem: str, key: str, expected_ids: Sequence[str],
               arrays: Sequence[str]) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
    """The entry's arrays (memory-mapped copy-on-write) and index, or None when it is absent or not trusted.

    ``expected_ids`` are the ids of the models the bank is built from, in order; the index must
    list them all, in that order, as kept or skipped. ``arrays`` names the arrays to load.
    """
    index_path = cache_dir / f"{stem}.json"
    started = time.perf_counter()
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        logger.warning("%s: unreadable cache index (%s); rebuilding the bank", index_path, error)
        return None
    problem = _index_problem(index, key, expected_ids, arrays)
    if problem is None:
        try:
            loaded = {}
            for name in arrays:
                entry = index["arrays"][name]
                path = cache_dir / f"{stem}.{name}.npy"
                if path.stat().st_size != entry["bytes"]:
                    problem = f"{path.name} is not the size its index records"
                    break
                if not _verified(path, entry["crc32"]):
                    problem = f"{path.name} does not match its checksum"
                    break
                loaded[name] = np.load(path, mmap_mode="c")
                if list(loaded[name].shape) != entry["shape"]:
                    problem = f"{path.name} is not the shape its index records"
                    break
        except FileNotFoundError as error:
            problem = f"{Path(error.filename or '').name or 'an array'} is missing"
        except (OSError, ValueError) as error:
            problem = f"unreadable array ({error})"
    if problem is not None:
        logger.warning("%s: %s; rebuilding the bank", index_path, problem)
        return None
    logger.debug("%s verified in %.3f s", index_path, time.perf_counter() - started)
    return loaded, index


def _index_problem(index: Any, key: str, expected_ids: Sequence[str], arrays: Sequence[str]) -> str | None:
    """Why an index cannot be trusted, or None."""
    if not isinstance(index, dict) or index.get("format") != CACHE_FORMAT:
        return "another cache format"
    if index.get("checksum") != index_checksum(index):
        return "the index does not match its checksum"
    if index.get("key") != key:
        return "the index belongs to another bank"
    try:
        kept, skipped = list(index["ids"]), [item[0] for item in index["skipped"]]
        if sorted(kept + skipped) != sorted(expected_ids) or len(set(kept)) != len(kept):
            return "the index lists other models"
        position = {model_id: i for i, model_id in enumerate(expected_ids)}
        order = [position[model_id] for model_id in kept]
        if order != sorted(order):
            return "the index lists the models in another order"
        for name in arrays:
            entry = index["arrays"][name]
            if not (isinstance(entry["bytes"], int) and isinstance(entry["crc32"], int) and entry["shape"][0] == len(kept)):
                return f"the index's record of {name} is malformed"
    except (KeyError, TypeError, IndexError):
        return "the index is malformed"
    return None


def write_index(cache_dir: Path, stem: str, index: dict[str, Any]) -> dict[str, Any]:
    """Write the index (with its checksum) last: it is what makes the arrays trusted. Returns it as written."""
    index = dict(index, format=CACHE_FORMAT)
    index["checksum"] = index_checksum(index)
    with temporary_path(cache_dir / f"{stem}.json") as tmp:
        tmp.write_text(json.dumps(index), encoding="utf-8")
    after_cache_write(cache_dir / f"{stem}.json")  # the entry is whole: keep the cache under its cap
    return index


@contextmanager
def temporary_path(target: Path) -> Iterator[Path]:
    """Yield a temporary beside ``target`` named after this process; on success it is renamed onto ``target``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(target)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def temporary_name(target: Path) -> Path:
    """A fresh temporary path beside ``target``, recognisable by :func:`remove_stale_temporaries`."""
    return target.with_name(f".{target.name}.{_HOST}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def remove_stale_temporaries(cache_dir: Path) -> int:
    """Remove temporaries of this host whose process is gone (killed builds); returns how many."""
    removed = 0
    if not cache_dir.is_dir():
        return 0
    for path in cache_dir.glob(".*.tmp"):
        match = _TEMPORARY.match(path.name)
        if match is None or match.group("host") != _HOST or _alive(int(match.group("pid"))):
            continue
        try:
            path.unlink()
            removed += 1
        except FileNotFoundError:
            pass
    if removed:
        logger.info("%s: removed %d temporaries left by killed builds", cache_dir, removed)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
