"""Atomic writes: a file or a folder either appears whole under its final name, or not at all.

A crash or a kill in the middle of a write leaves at most a hidden temporary next to the target,
never a half-written file under the name that readers trust.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from probex.errors import ProbeXError

logger = logging.getLogger(__name__)


def cache_dir(kind: str) -> Path:
    """probex's cache folder for one kind of entry: ``$PROBEX_CACHE/<kind>``, else ``~/.cache/probex/<kind>``.

    The folders together are kept under a size cap (``$PROBEX_CACHE_MAX_GB``; see :mod:`probex.cache`).
    """
    root = os.environ.get("PROBEX_CACHE")
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "probex") / kind


def after_cache_write(target: Path) -> None:
    """Keep the cache under its cap once a new entry lands in one of its folders; never fails the write."""
    from probex.cache import KINDS, enforce_cache_limit

    try:
        folder = target.parent.resolve()
        if any(folder == cache_dir(kind).resolve() for kind in KINDS):
            enforce_cache_limit(protect=[target])
    except (OSError, ValueError) as error:
        logger.warning("cache cap not enforced after writing %s: %s", target, error)


def check_output_path(path: str | os.PathLike, what: str = "output", folder: bool = False,
                      ours: Optional[Callable[[Path], bool]] = None) -> Path:
    """Check, before any work, that an output can be written and would replace nothing that is not ours.

    A file (``folder=False``): it is not a folder, and it or its nearest existing parent folder
    is writable. A folder (``folder=True``, replaced as a whole by :func:`atomic_directory`):
    also, if it exists, it is empty or ``ours(path)`` says it is what probex wrote there before.

    Raises:
        ProbeXError: one line naming ``what``, the path and what to do.
    """
    path = Path(path).expanduser()
    if folder and path.exists() and not path.is_dir():
        raise ProbeXError(f"{what} {path}: is a file; give a folder")
    if not folder and path.is_dir():
        raise ProbeXError(f"{what} {path}: is a folder; give a file name")
    if folder and path.is_dir() and any(path.iterdir()) and not (ours is not None and ours(path)):
        raise ProbeXError(f"{what} {path}: a folder with other files in it, which saving would replace; "
                          "give a new or empty folder")
    existing = path if path.exists() else next(parent for parent in path.parents if parent.exists())
    target = existing if existing.is_dir() else existing.parent
    if not existing.is_dir() and existing != path:
        raise ProbeXError(f"{what} {path}: {existing} is a file, not a folder")
    if not os.access(target, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ProbeXError(f"{what} {path}: not writable here ({target}); choose a folder you can write to")
    return path


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # not every platform can open a directory
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success it is renamed onto ``target``.

    Use it with writers that want a path (``safetensors.torch.save_file``, ``np.save``)::

        with atomic_path(out / "bank.npy") as tmp:
            np.save(tmp, array)
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    finally:
        if tmp.exists():
            tmp.unlink()
    after_cache_write(target)


def atomic_write_bytes(target: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``target`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(target: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``target`` atomically."""
    atomic_write_bytes(target, text.encode("utf-8"))


def atomic_write_json(target: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``target`` atomically."""
    atomic_write_text(target, json.dumps(obj, indent=2, sort_keys=True) + "\n")


@contextmanager
def atomic_directory(target: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder; on success it replaces ``target`` as a whole.

    Readers see either the old folder or the new one. The old folder is moved aside first and
    removed only once the new one is in place.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        _fsync_dir(tmp)
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
            os.replace(target, old)
        os.replace(tmp, target)
        _fsync_dir(target.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
