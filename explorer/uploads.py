"""Uploaded model files: checked, written to a private temporary folder, opened as a one-model zoo.

Uploads are written into one folder per app process, made by ``tempfile.mkdtemp`` (mode 0700,
a new random name each time, so no other user can plant or read files in it and nothing is
reused by name), under a name derived from the content's hash. A file is written with
``O_EXCL | O_NOFOLLOW`` and reused only after checking it is still a regular file (not a link)
holding exactly the uploaded bytes: a planted file or a symbolic link is never read. Files are
never executed or unpickled. A bad upload (not safetensors, too large, corrupt) raises
``UploadError`` (a ``ProbeXError``) whose message the page shows with ``st.error``; the
safetensors header itself is validated by probex (``read_header``) before any tensor is trusted.

The header of an upload is parsed once per process: a page's reruns (every click) get the same
zoo (or the same refusal) back from a small in-memory cache keyed by the content's hash, without
parsing again.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import stat
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from probex.errors import ProbeXError

#: Larger uploads are refused before they are written anywhere (the jungle's models are < 1 MB).
MAX_UPLOAD_BYTES = 64 * 1024 * 1024
#: Uploads whose parsed zoo is kept in memory (the most recent ones).
CACHED_UPLOADS = 8

_lock = threading.Lock()
_folder: Path | None = None
_opened: OrderedDict[tuple[str, str], Any] = OrderedDict()  # (sha256, name) -> the one-model zoo, or its UploadError


def upload_limit_mb() -> int:
    """The file uploaders' own limit in MB (at least 1), so the browser refuses larger files before sending them."""
    return max(1, -(-MAX_UPLOAD_BYTES // 2**20))


class UploadError(ProbeXError):
    """An uploaded file that cannot be read as a model (the message says why and what to do)."""


def upload_folder() -> Path:
    """This process's private upload folder (mode 0700, made once by ``mkdtemp``; removed at exit)."""
    global _folder
    with _lock:
        if _folder is None or not _folder.is_dir():
            _folder = Path(tempfile.mkdtemp(prefix="probex-uploads-"))
            atexit.register(shutil.rmtree, _folder, ignore_errors=True)
        return _folder


def open_upload(name: str, data: bytes, max_bytes: int | None = None):
    """A ModelZoo holding the one uploaded model ``name`` with content ``data``.

    ``max_bytes`` defaults to :data:`MAX_UPLOAD_BYTES` (read when called). The same content
    uploaded again in this process returns the zoo parsed the first time.

    Raises:
        UploadError: not a .safetensors file, empty, larger than ``max_bytes`` or corrupt.
    """
    from probex.zoo import ModelRecord, ModelZoo

    max_bytes = MAX_UPLOAD_BYTES if max_bytes is None else max_bytes
    if not name.lower().endswith(".safetensors"):
        raise UploadError(f"{name}: not a .safetensors file. Upload the model's weights as safetensors "
                          "(pickled .bin/.pt/.ckpt files are never opened here).")
    if len(data) > max_bytes:
        raise UploadError(f"{name}: {len(data) / 2**20:.1f} MiB is larger than the {max_bytes / 2**20:.0f} MiB "
                          "this page reads; use the probex library or CLI for large models.")
    if not data:
        raise UploadError(f"{name}: the file is empty.")
    digest = hashlib.sha256(data).hexdigest()
    key = (digest, name)
    with _lock:
        if key in _opened:
            _opened.move_to_end(key)
            known = _opened[key]
            if isinstance(known, UploadError):
                raise known
            return known
    folder = upload_folder()
    path = folder / f"{digest[:32]}.safetensors"
    _write_once(path, data)
    record = ModelRecord(id=Path(name).stem or "upload", path=path)
    try:
        record.read_header()
        result: Any = ModelZoo(folder, "upload", [record], name=f"upload {name}")
    except ProbeXError as error:
        result = UploadError(f"{name}: {_without_path(str(error), path)}")
    with _lock:
        _opened[key] = result
        while len(_opened) > CACHED_UPLOADS:
            _opened.popitem(last=False)
    if isinstance(result, UploadError):
        raise result
    return result


def _holds(path: Path, data: bytes) -> bool:
    """True when ``path`` is a regular file (not a link, not a FIFO) holding exactly ``data``."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return False
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        return handle.read(len(data) + 1) == data


def _write_once(path: Path, data: bytes) -> None:
    """Make ``path`` a regular file holding ``data``: reused if it already is, else (re)written; never followed."""
    with _lock:
        if _holds(path, data):
            return
        if os.path.lexists(path):
            os.unlink(path)  # not the upload (a link, a FIFO, other bytes): replaced, never read
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
        fd = os.open(path, flags, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())


def read_upload(uploaded: Any, max_bytes: int | None = None):
    """``open_upload`` for a Streamlit UploadedFile (its size is checked before it is read)."""
    max_bytes = MAX_UPLOAD_BYTES if max_bytes is None else max_bytes
    size = getattr(uploaded, "size", None)
    if size is not None and size > max_bytes:
        raise UploadError(f"{uploaded.name}: {size / 2**20:.1f} MiB is larger than the {max_bytes / 2**20:.0f} MiB "
                          "this page reads; use the probex library or CLI for large models.")
    return open_upload(uploaded.name, uploaded.getvalue(), max_bytes)


def _without_path(message: str, path: Path) -> str:
    return message.replace(f"{path}: ", "").replace(str(path), "the file")
