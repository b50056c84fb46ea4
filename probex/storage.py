"""Where probex writes, and how it reads, so that nothing of a user's is lost or misread.

- Atomic writes: a file or a folder either appears whole under its final name, or not at all; a
  crash leaves at most a hidden temporary next to the target.
- Nothing is replaced that probex did not write. A saved folder (an expert, a router, a mixture)
  carries a small marker, ``.probex-artifact.json``, naming its kind and every entry probex put in
  it; :func:`atomic_directory` replaces an existing folder only when it is absent, empty, or such
  an artifact of the same kind holding nothing else. A file the user names as an output is
  replaced only when probex wrote it (:func:`check_output_file`).
- Names that come from data (tree names, zoo names, model ids) become file names only through
  :func:`safe_name`.
- Readers open only regular files (:func:`open_regular`): a FIFO, a device or a socket in a zoo is
  refused at once instead of blocking the reader.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import stat
import struct
import tempfile
import uuid
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator, Optional

from probex.errors import ProbeXError, ZooError

logger = logging.getLogger(__name__)

ARTIFACT_FILE = ".probex-artifact.json"
ARTIFACT_FORMAT = "probex-artifact"
#: The mark probex leaves in the files it writes for users (an HTML comment, a PNG text chunk,
#: parquet metadata), so that a later run may replace them and nothing else.
OUTPUT_MARK = "probex-output"
#: Folders no output may go to (kernel and device file systems).
SYSTEM_FOLDERS = ("/proc", "/sys", "/dev")


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


# -- names from data ------------------------------------------------------------------------------

_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_RESERVED_NAMES = frozenset({"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))})


def safe_name(name: str) -> str:
    """A file or folder name for a name that comes from data (a tree, a zoo, a model id).

    A name that is already safe (ASCII letters, digits, ``.``, ``_``, ``-``, starting with a letter
    or digit, at most 100 characters) is returned unchanged: ``cnn-supervised`` stays
    ``cnn-supervised``. Any other name becomes a readable stem (``/`` as ``--``, like the Hub's
    cache folders; other runs of characters as ``_``) plus ``~`` and 10 hex digits of its SHA-256:
    ``runwayml/stable-diffusion-v1-5`` -> ``runwayml--stable-diffusion-v1-5~<hash>``. No safe
    name contains ``~``, so two different names never share a path, and ``../`` or an absolute
    path never leaves the folder it is joined to.
    """
    text = str(name)
    if _SAFE_NAME.fullmatch(text) and not text.endswith(".") and text.split(".")[0].lower() not in _RESERVED_NAMES:
        return text
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", text.replace("/", "--")).strip("._-")[:60] or "name"
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    return f"{readable}~{digest}"


def is_relative_inside(relative: str) -> bool:
    """True when the relative POSIX path ``relative`` (a file name a server or a manifest gives) stays
    inside the folder it is joined to: not absolute, no ``..`` part, no empty part, no NUL or backslash."""
    text = str(relative)
    if not text or text.startswith("/") or "\0" in text or "\\" in text or re.match(r"^[A-Za-z]:", text):
        return False
    return all(part not in ("", ".", "..") for part in text.split("/"))


# -- reading only regular files -------------------------------------------------------------------

def _file_kind(mode: int) -> str:
    for test, kind in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return kind
    return "not a regular file"


def open_regular(path: str | os.PathLike) -> BinaryIO:
    """Open ``path`` for binary reading if it is a regular file (symbolic links to one are followed).

    A FIFO, socket, device or folder is refused without blocking (``O_NONBLOCK``): opening a FIFO
    for reading would otherwise wait for a writer forever.

    Raises:
        ZooError: not a regular file, or a NUL byte in the path.
        OSError: the file cannot be opened (missing, no permission).
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except ValueError:  # "embedded null byte"
        raise ZooError(f"{os.fsdecode(path)!r}: the path holds a NUL byte, so no such file can exist") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise ZooError(f"{os.fsdecode(path)}: {_file_kind(mode)}, not a regular file; probex reads only regular files")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular_bytes(path: str | os.PathLike, max_bytes: int, what: str = "file") -> bytes:
    """The whole content of a regular file of at most ``max_bytes`` bytes (ZooError otherwise)."""
    with open_regular(path) as handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ZooError(f"{os.fsdecode(path)}: the {what} is larger than {max_bytes:,} bytes; probex does not read it")
    return data


# -- atomic files -----------------------------------------------------------------------------------

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


# -- artifact folders: replaced only when probex wrote them ----------------------------------------

Legacy = Optional[Callable[[Path], bool]]


def _entries(folder: Path) -> list[str]:
    """Every file, link and folder under ``folder`` (links not followed), as sorted POSIX paths."""
    found = []
    for parent, dirs, files in os.walk(folder, followlinks=False):
        relative = Path(parent).relative_to(folder)
        found += [(relative / name).as_posix() for name in dirs + files]
    return sorted(found)


def _first_entries(folder: Path, n: int = 4) -> list[str]:
    """Up to ``n`` names directly inside ``folder`` (a user's folder may be huge: it is never walked)."""
    with os.scandir(folder) as scan:
        names = []
        for entry in scan:
            names.append(entry.name)
            if len(names) >= n:
                break
    return sorted(names)


def _read_marker(folder: Path) -> dict | None:
    marker = folder / ARTIFACT_FILE
    try:
        value = json.loads(read_regular_bytes(marker, 64 * 1024 * 1024, "artifact marker"))
    except (OSError, ValueError):
        return None
    if not isinstance(value, dict) or value.get("format") != ARTIFACT_FORMAT or not isinstance(value.get("kind"), str):
        return None
    return value


def _listing(entries: list[str]) -> str:
    return ", ".join(entries[:3]) + (f" and {len(entries) - 3} more" if len(entries) > 3 else "")


def _absolute(target: str | os.PathLike) -> Path:
    path = Path(os.path.abspath(os.fsdecode(target)))
    if not path.name:
        raise ProbeXError(f"{target}: probex cannot write a folder at the file system's root; choose a sub-folder")
    return path


def check_replaceable(target: str | os.PathLike, kind: str, legacy: Legacy = None) -> None:
    """Raise ProbeXError unless a ``kind`` folder may be written at ``target``.

    It may when ``target`` is absent, an empty folder, or a probex artifact of the same kind that
    holds only what probex put there (``legacy(target)``, when given, recognises folders of this
    kind written before markers existed).
    """
    target = Path(target)
    if not os.path.lexists(target):
        return
    if target.is_symlink():
        raise ProbeXError(f"{target}: a symbolic link; probex writes its {kind} folders only to real paths. "
                          "Choose another folder.")
    if not target.is_dir():
        raise ProbeXError(f"{target}: exists and is not a folder; probex would write a {kind} folder there. "
                          "Choose another path.")
    first = _first_entries(target)
    if not first:
        return
    marker = _read_marker(target)
    if marker is None:
        if legacy is not None and legacy(target):
            return
        raise ProbeXError(f"{target}: exists and was not written by probex as a {kind} folder (it holds "
                          f"{', '.join(first)}{', ...' if len(first) > 3 else ''}); probex never replaces what "
                          "it did not write. Choose another folder, or move this one away first.")
    if marker["kind"] != kind:
        raise ProbeXError(f"{target}: holds a probex {marker['kind']} folder, not a {kind}; choose another folder.")
    listed = marker.get("entries")
    if listed is None:  # a folder written in place (claim_directory): never replaced as a whole
        raise ProbeXError(f"{target}: a probex {kind} folder that is written in place, not replaced; "
                          "choose another folder.")
    if not isinstance(listed, list) or not all(isinstance(entry, str) for entry in listed):
        raise ProbeXError(f"{target}: its {ARTIFACT_FILE} is damaged; move the folder away or choose another one.")
    listed = set(listed)
    foreign = [entry for entry in _entries(target) if entry != ARTIFACT_FILE and entry not in listed]
    if foreign:
        raise ProbeXError(f"{target}: a probex {kind} folder that now also holds what probex did not write "
                          f"({_listing(foreign)}); move those out or choose another folder.")


def _write_marker(folder: Path, kind: str, entries: list[str] | None) -> None:
    atomic_write_json(folder / ARTIFACT_FILE, {"format": ARTIFACT_FORMAT, "kind": kind, "entries": entries})


@contextmanager
def atomic_directory(target: str | os.PathLike, kind: str, legacy: Legacy = None) -> Iterator[Path]:
    """Yield an empty temporary folder; on success it replaces ``target`` as a whole.

    ``kind`` names what is saved (``"probex-expert"``). ``target`` must be absent, empty, or a
    probex artifact of that kind holding only what probex wrote (see :func:`check_replaceable`);
    anything else raises ProbeXError before the work starts and again before the swap. Readers
    see the old folder or the new one: the old folder is kept until the new one is complete and
    in place, then removed.
    """
    target = _absolute(target)
    check_replaceable(target, kind, legacy)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        _write_marker(tmp, kind, _entries(tmp))
        _fsync_dir(tmp)
        check_replaceable(target, kind, legacy)  # again: the folder may have changed while we worked
        old = None
        if os.path.lexists(target):
            old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
            os.replace(target, old)
        try:
            os.replace(tmp, target)
        except BaseException:
            if old is not None:
                os.replace(old, target)
            raise
        _fsync_dir(target.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def claim_directory(target: str | os.PathLike, kind: str, legacy: Legacy = None) -> Path:
    """Make ``target`` a folder probex writes ``kind`` files into in place (a report, its sweeps).

    It must be absent, empty, or already claimed for the same kind (``legacy(target)``, when given,
    recognises such folders written before markers existed); it is then marked as such.
    Files in it are written one by one (atomically each); the folder is never replaced as a whole.
    """
    target = _absolute(target)
    if os.path.lexists(target):
        if target.is_symlink() or not target.is_dir():
            raise ProbeXError(f"{target}: exists and is not a folder; probex would write a {kind} folder there. "
                              "Choose another path.")
        marker = _read_marker(target)
        if marker is not None and marker["kind"] == kind and marker.get("entries") is None:
            return target
        if marker is None and legacy is not None and legacy(target):
            _write_marker(target, kind, None)
            return target
        if marker is not None or _first_entries(target):
            raise ProbeXError(f"{target}: exists and is not a probex {kind} folder; probex never writes into "
                              "folders it did not make. Choose another folder.")
    target.mkdir(parents=True, exist_ok=True)
    _write_marker(target, kind, None)
    return target


def json_field(path: Path, key: str) -> Any:
    """``key`` of the small JSON object in file ``path``, or None (for ``legacy`` recognisers)."""
    try:
        value = json.loads(read_regular_bytes(path, 16 * 1024 * 1024, "JSON file"))
    except (OSError, ValueError):
        return None
    return value.get(key) if isinstance(value, dict) else None


def holds_only(folder: Path, names: set[str]) -> bool:
    """True when every entry of ``folder`` is a regular file named in ``names`` (for ``legacy`` recognisers)."""
    entries = list(folder.iterdir())
    return bool(entries) and all(entry.name in names and entry.is_file() and not entry.is_symlink() for entry in entries)


# -- single output files -----------------------------------------------------------------------------

def written_by_probex(path: Path) -> bool:
    """True when the file at ``path`` carries probex's output mark (or is a CSV export of probex)."""
    try:
        with open_regular(path) as handle:
            head = handle.read(64 * 1024)
            size = os.fstat(handle.fileno()).st_size
            handle.seek(max(0, size - 1024 * 1024))
            tail = handle.read()
    except (OSError, ProbeXError):
        return False
    mark = OUTPUT_MARK.encode()
    if mark in head or mark in tail:
        return True
    return path.suffix.lower() == ".csv" and head.startswith(b"id,split,tree,")


def check_output_file(path: str | os.PathLike, what: str = "output file") -> Path:
    """``path`` as a file probex may write for the user, or ProbeXError saying why not.

    Refused: a path in ``/proc``, ``/sys`` or ``/dev``; an existing folder, link or special file;
    an existing non-empty file probex did not write (:func:`written_by_probex`); a parent that is a
    file or a folder probex may not write in.
    """
    path = Path(os.path.abspath(os.fsdecode(path)))
    if any(str(path) == folder or str(path).startswith(folder + "/") for folder in SYSTEM_FOLDERS):
        raise ProbeXError(f"{path}: a system folder; write the {what} somewhere else")
    if os.path.lexists(path):
        if path.is_symlink() or not path.is_file():
            raise ProbeXError(f"{path}: exists and is not a regular file; choose another name for the {what}")
        if path.stat().st_size and not written_by_probex(path):
            raise ProbeXError(f"{path}: exists and was not written by probex; probex never overwrites it. "
                              f"Choose another name for the {what}, or move the file away first.")
    parent = next((folder for folder in path.parents if os.path.lexists(folder)), None)
    if parent is not None and not parent.is_dir():
        raise ProbeXError(f"{path}: {parent} is a file, not a folder; choose another place for the {what}")
    if parent is not None and not os.access(parent, os.W_OK | os.X_OK):
        raise ProbeXError(f"{path}: cannot write in {parent} (permission denied); choose another place for the {what}")
    return path


def mark_output_file(path: str | os.PathLike, suffix: str | None = None) -> None:
    """Leave probex's output mark in a file just written (HTML: a comment; PNG: a text chunk).

    ``suffix`` names the format when ``path`` is a temporary without it (``".html"``, ``".png"``).
    """
    path = Path(path)
    suffix = (suffix or path.suffix).lower()
    if suffix in (".html", ".htm"):
        with open(path, "ab") as handle:
            handle.write(f"\n<!-- {OUTPUT_MARK} -->\n".encode())
    elif suffix == ".png":
        data = path.read_bytes()
        if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
            end_of_ihdr = 8 + 12 + struct.unpack(">I", data[8:12])[0]
            body = b"tEXt" + b"Software\0" + OUTPUT_MARK.encode()
            chunk = struct.pack(">I", len(body) - 4) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)
            path.write_bytes(data[:end_of_ihdr] + chunk + data[end_of_ihdr:])
