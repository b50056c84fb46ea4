"""The Atlas's maps kept on disk, so a new server draws a map before it opens the zoo and loads experts.

A cold Atlas used to open the population (every model's header), load every tree's expert (torch,
scikit-learn), embed every model and only then draw a map whose coordinates were already cached
(benchmarks/bench_app.py, ``atlas``). The map needs none of that: its points (coordinates,
ids, concepts, images) and its facets table are saved here once drawn, and read back by a new
server, which opens the rest only when a page asks for it (a prompt to highlight, a selection).

Trust, as for probex's own caches (:mod:`probex.language.search_cache`): an entry is used only when
its key is the one computed now, and the key hashes, for every file and folder under the
population's root (its manifest, models, metadata, images and shipped experts; links followed),
the relative path, size, mtime_ns, ctime_ns, inode and device; and the same for every model file
the entry names outside the root. Any write anywhere changes a ctime, which no one can set back, so an edited zoo or
a retrained shipped expert is never drawn from a stale entry. Experts trained in a session are not
on disk and never use it. The frames are written as parquet, read back once and compared with what
was drawn before the entry is kept (a table that does not survive the round trip is not cached), and
the index file naming them is written last, atomically, with the CRC-32 of each.

One index file per population (``atlas/views-<hash>.json`` in probex's cache folder) lists its trees
with an aligned expert and, per tree drawn so far, its two parquet files.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

if TYPE_CHECKING:
    import pandas

logger = logging.getLogger(__name__)

#: Bump when what is stored changes, so old entries are not read.
VIEW_FORMAT = 1


@dataclass
class AtlasView:
    """One tree's map as the Atlas page draws it, read from disk (see the module docstring)."""

    trees: list[str]  # the population's trees with an aligned expert, in the page's order
    sources: dict[str, str]  # tree -> where its expert came from ("shipped")
    tokens: dict[str, str]  # tree -> the expert's token (names it in caches)
    points: "pandas.DataFrame"  # Atlas.points of the map (models, then words)
    table: "pandas.DataFrame"  # the facets table, one row per model in map order
    message: Optional[str]
    method: str
    key: str  # the population's key (stands for its content in in-memory caches)


def population_root(path: str) -> Path:
    """The folder a population lives in: the shipped demo jungle for "", else the folder typed."""
    if not path:
        from probex.jungle import SHIPPED

        return Path(SHIPPED)
    return Path(path).expanduser()


def _identity(path: str) -> str:
    """What a file or folder is now: of what a link points to (a zoo of links to models is common), else the link."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:  # a dangling link
        stat = os.lstat(path)
    return f"{stat.st_size}:{stat.st_mtime_ns}:{stat.st_ctime_ns}:{stat.st_ino}:{stat.st_dev}"


def population_key(root: Path, outside: Sequence[str] = ()) -> Optional[str]:
    """A hash of the identity of every file and folder under ``root`` and of the files ``outside`` it; None when
    the folder cannot be walked."""
    import probex

    root = root.resolve()
    digest = hashlib.sha256(json.dumps({"format": VIEW_FORMAT, "probex": getattr(probex, "__version__", ""),
                                        "root": str(root.resolve())}).encode("utf-8"))
    try:
        digest.update(f".\0{_identity(str(root))}\n".encode("utf-8"))
        skip, seen = _cache_root(), set()
        for folder, folders, files in os.walk(root, onerror=_raise, followlinks=True):
            stat = os.stat(folder)
            if (stat.st_dev, stat.st_ino) in seen:  # a link back to a folder already walked
                folders[:] = []
                continue
            seen.add((stat.st_dev, stat.st_ino))
            folders[:] = sorted(name for name in folders if os.path.join(folder, name) != skip)
            for name in folders + sorted(files):
                full = os.path.join(folder, name)
                digest.update(f"{os.path.relpath(full, root)}\0{_identity(full)}\n".encode("utf-8", "surrogateescape"))
        for file in sorted(outside):
            digest.update(f"outside:{file}\0{_identity(file)}\n".encode("utf-8", "surrogateescape"))
    except OSError as error:
        logger.info("%s: cannot walk the population (%s); the Atlas is not cached on disk", root, error)
        return None
    return digest.hexdigest()


def _cache_root() -> str:
    """probex's cache folder, left out of the walk when it lies under a population (writing it is no edit)."""
    from probex.storage import cache_dir

    return os.path.abspath(cache_dir("atlas").parent)


def _raise(error: OSError) -> None:
    raise error


def _index_file(root: Path) -> Path:
    from probex.storage import cache_dir

    name = hashlib.sha256(str(root.resolve()).encode("utf-8")).hexdigest()[:24]
    return cache_dir("atlas") / f"views-{name}.json"


def _read_index(root: Path) -> Optional[dict]:
    try:
        index = json.loads(_index_file(root).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return index if isinstance(index, dict) and index.get("format") == VIEW_FORMAT else None


def load_view(path: str, tree: Optional[str] = None) -> Optional[AtlasView]:
    """The map of ``tree`` (default: the population's first tree) when an entry can be trusted, else None."""
    import pandas as pd

    root = population_root(path)
    index = _read_index(root)
    if index is None:
        return None
    tree = index["trees"][0] if tree is None and index.get("trees") else tree
    view = index.get("views", {}).get(tree)
    if view is None:
        return None
    key = population_key(root, index.get("outside", []))
    if key is None or key != index.get("key"):
        return None
    frames = {}
    for part in ("points", "table"):
        file = _index_file(root).with_name(view[part])
        try:
            data = file.read_bytes()
            if zlib.crc32(data) != view[f"{part}_crc32"]:
                raise ValueError("its bytes do not match their checksum")
            frames[part] = pd.read_parquet(io.BytesIO(data))
        except (OSError, ValueError, KeyError, ImportError) as error:
            logger.warning("%s: unreadable Atlas entry (%s); drawing the map from the zoo", file, error)
            return None
    return AtlasView(trees=list(index["trees"]), sources=dict(index["sources"]), tokens=dict(index["tokens"]),
                     points=frames["points"], table=frames["table"], message=view.get("message"),
                     method=view.get("method", "umap"), key=key)


def save_view(path: str, tree: str, trees: Sequence[str], sources: dict[str, str], tokens: dict[str, str],
              points: "pandas.DataFrame", table: "pandas.DataFrame", message: Optional[str], method: str,
              model_files: Sequence[str]) -> Optional[str]:
    """Keep one tree's map for new servers; returns the population's key, or None when it was not kept (a failure to
    write is logged, never raised: the cache only saves time)."""
    import pandas as pd

    from probex.storage import atomic_write_bytes

    root = population_root(path)
    inside = str(root.resolve()) + os.sep
    outside = [file for file in sorted({str(Path(file).resolve()) for file in model_files})
               if not file.startswith(inside)]
    index_file = _index_file(root)
    try:  # before the key: a cache folder made under the population changes its folder's times
        index_file.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        logger.warning("cannot keep the Atlas of tree %s on disk (%s)", tree, error)
        return None
    key = population_key(root, outside)
    if key is None:
        return None
    index = _read_index(root)
    if index is None or index.get("key") != key:
        index = {"format": VIEW_FORMAT, "key": key, "outside": outside, "views": {}}
    index.update(trees=list(trees), sources=dict(sources), tokens=dict(tokens))
    stem = f"{index_file.stem}.{hashlib.sha256(f'{key}:{tree}'.encode('utf-8')).hexdigest()[:16]}"
    view = {"message": message, "method": method}
    try:
        for part, frame in (("points", points), ("table", table)):
            buffer = io.BytesIO()
            frame.reset_index(drop=True).to_parquet(buffer, index=False)
            data = buffer.getvalue()
            back = pd.read_parquet(io.BytesIO(data))
            if not back.equals(frame.reset_index(drop=True)) or list(back.dtypes) != list(frame.dtypes):
                logger.info("the Atlas's %s of tree %s does not survive parquet; not cached", part, tree)
                return None
            file = index_file.with_name(f"{stem}.{part}.parquet")
            atomic_write_bytes(file, data)
            view[part], view[f"{part}_crc32"] = file.name, zlib.crc32(data)
        index["views"][tree] = view
        atomic_write_bytes(index_file, json.dumps(index).encode("utf-8"))
    except (OSError, ValueError, TypeError, ImportError) as error:  # pyarrow refuses some mixed object columns
        logger.warning("cannot keep the Atlas of tree %s on disk (%s)", tree, error)
        return None
    return key
