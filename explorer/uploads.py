"""Uploaded model files: checked, written to a private temporary folder, opened as a one-model zoo.

Uploads are written under ``$TMPDIR/probex-uploads/<content hash>/`` (never executed or
unpickled). A bad upload (not safetensors, too large, corrupt) raises ``UploadError`` (a ``ProbeXError``)
whose message the page shows with ``st.error``; the safetensors header itself is validated by
probex (``read_header``) before any tensor is trusted.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Any

from probex.errors import ProbeXError
from probex.storage import atomic_write_bytes

#: Larger uploads are refused before they are written anywhere (the jungle's models are < 1 MB).
MAX_UPLOAD_BYTES = 64 * 1024 * 1024


def upload_limit_mb() -> int:
    """The file uploaders' own limit in MB (at least 1), so the browser refuses larger files before sending them."""
    return max(1, -(-MAX_UPLOAD_BYTES // 2**20))


class UploadError(ProbeXError, ValueError):
    """An uploaded file that cannot be read as a model (the message says why and what to do)."""


def open_upload(name: str, data: bytes, max_bytes: int | None = None):
    """A ModelZoo holding the one uploaded model ``name`` with content ``data``.

    ``max_bytes`` defaults to :data:`MAX_UPLOAD_BYTES` (read when called).

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
    # one private folder per content: a page's reruns reuse the file instead of writing it again
    folder = Path(tempfile.gettempdir()) / "probex-uploads" / hashlib.sha256(data).hexdigest()[:24]
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = folder / Path(name).name
    if not path.is_file() or path.stat().st_size != len(data):
        atomic_write_bytes(path, data)
    record = ModelRecord(id=Path(name).stem, path=path)
    try:
        record.read_header()
    except ProbeXError as error:
        raise UploadError(f"{name}: {_without_path(str(error), path)}") from None
    return ModelZoo(folder, "upload", [record], name=f"upload {name}")


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
