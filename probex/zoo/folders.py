"""Reading folders of model files: what every zoo layout shares.

The scan result (:class:`ZooScan`), image listing, split ordering, and reading a weight file's
header with failures collected as (path, reason) instead of raised, so one corrupt file never
stops a zoo from opening. A :class:`HeaderBudget` adds up the headers of one zoo against the
per-zoo limits (:mod:`probex.zoo.limits`); going over them stops the scan with a LimitError.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from probex.errors import ZooError
from probex.progress import Progress
from probex.zoo.limits import check_limit
from probex.zoo.records import ModelRecord, TreeRole
from probex.zoo.safefile import LENGTH_FIELD_BYTES, SafetensorsHeader, read_header

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif"})


@dataclass
class ZooScan:
    """What was found under a zoo root: its layout, its readable models and the ones left out."""

    root: Path
    layout: str
    records: list[ModelRecord]
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    name: str = ""
    description: str = ""
    roles: dict[str, TreeRole] = field(default_factory=dict)  # tree -> its declared role


def split_order(split: str | None) -> tuple[int, str]:
    """Sort key of split names: train, val, test first, then the others alphabetically."""
    rank = {"train": 0, "val": 1, "validation": 1, "test": 2}
    return (rank.get(split, 3), split or "") if split is not None else (4, "")


def list_images(folder: Path) -> list[Path]:
    """The image files directly inside ``folder``, sorted by name (empty if there is no folder).

    Only regular files (or links to them) count: a FIFO named ``x.png`` would block whoever opens it.
    """
    try:
        with os.scandir(folder) as entries:
            found = [Path(entry.path) for entry in entries
                     if Path(entry.name).suffix.lower() in IMAGE_SUFFIXES and entry.is_file()]
    except (FileNotFoundError, NotADirectoryError, PermissionError, ValueError):
        return []
    return sorted(found)


def subdirs(folder: Path) -> Iterator[Path]:
    """The visible sub-folders of ``folder``, sorted (none if it is missing)."""
    try:
        with os.scandir(folder) as entries:
            dirs = [Path(entry.path) for entry in entries if entry.is_dir() and not entry.name.startswith(".")]
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return iter(())
    return iter(sorted(dirs))


@dataclass
class HeaderBudget:
    """The header bytes and tensors read so far for one zoo, checked against the per-zoo limits."""

    root: Path
    header_bytes: int = 0
    tensors: int = 0

    def add(self, header: SafetensorsHeader) -> None:
        """Count one file's header; LimitError when the zoo as a whole passes a limit."""
        self.header_bytes += header.data_offset - LENGTH_FIELD_BYTES
        self.tensors += len(header.tensors)
        check_limit("PROBEX_MAX_ZOO_HEADER_BYTES", self.header_bytes, f"{self.root}: the headers of the zoo's files")
        check_limit("PROBEX_MAX_ZOO_TENSORS", self.tensors, f"{self.root}: the number of tensors in the zoo's files")


def read_header_or_skip(path: Path, skipped: list[tuple[Path, str]], budget: HeaderBudget | None = None) -> SafetensorsHeader | None:
    """The validated header of ``path``, or None after appending (path, reason) to ``skipped``.

    With a ``budget``, the header counts against the zoo's limits (a LimitError then stops the scan).
    """
    try:
        header = read_header(path)
    except ZooError as error:
        skipped.append((path, skip_reason(error, path)))
        return None
    if budget is not None:
        budget.add(header)
    return header


def skip_reason(error: Exception, path: Path) -> str:
    """An error message without the file name in front (the skipped list already names it)."""
    text = str(error)
    prefix = f"{path}: "
    return text[len(prefix):] if text.startswith(prefix) else text


def report_progress(progress: Progress | None, done: int, total: int, message: str) -> None:
    """Call ``progress(done, total, message)`` when there is a callback."""
    if progress is not None:
        progress(done, total, message)
