"""What a download did (its report) and what earlier runs of it finished (its journal).

The journal is one JSON-lines file in the download's folder, ``.probex-download.jsonl``,
appended to as the download goes: the listings it read from the Hub (the subset's commit, its
files, the model lists) and each model it finished, with the files that make it up. A rerun of
the same command reads it first and asks the Hub for nothing it already has: finished models
whose files are still on disk are skipped without a request, and the listings are reused, so a
rerun continues the revision the first run started. A line cut short by a kill is ignored.
Delete the file to start over from the Hub's newest revision.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from probex.errors import ZooError

logger = logging.getLogger(__name__)

JOURNAL_NAME = ".probex-download.jsonl"

#: The reason given for models an earlier run finished.
ALREADY_PRESENT = "already present (finished by an earlier run)"


class DownloadJournal:
    """The journal of one download folder (see the module docstring); safe to use from several threads."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.path = self.root / JOURNAL_NAME
        self._lock = threading.Lock()
        self._listings: dict[str, Any] = {}
        self._finished: dict[tuple[str, str], list[str]] = {}
        self._read()

    def _read(self) -> None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return
        except (OSError, UnicodeDecodeError) as error:
            logger.warning("%s: unreadable (%s); starting the download afresh", self.path, error)
            return
        for line in text.splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a kill
            if not isinstance(entry, dict):
                continue
            if "listing" in entry:
                self._listings[str(entry["listing"])] = entry.get("value")
            elif "done" in entry and isinstance(entry.get("files"), list):
                self._finished[(str(entry["done"]), str(entry.get("what")))] = [str(name) for name in entry["files"]]

    def _append(self, entry: dict[str, Any]) -> None:
        line = json.dumps(entry, sort_keys=True) + "\n"
        with self._lock:
            self.root.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a+", encoding="utf-8") as handle:
                handle.seek(0, os.SEEK_END)
                if handle.tell() > 0:
                    handle.seek(handle.tell() - 1)
                    if handle.read(1) != "\n":  # a line cut short by a kill: end it first
                        handle.write("\n")
                handle.write(line)
                handle.flush()

    def listing(self, key: str) -> Any:
        """A listing an earlier run read from the Hub (a commit, a file list, a model list), or None."""
        return self._listings.get(key)

    def keep_listing(self, key: str, value: Any) -> None:
        self._listings[key] = value
        self._append({"listing": key, "value": value})

    def finished(self, item: str, what: str) -> bool:
        """True when an earlier run finished ``item`` as ``what`` asks, and its files are all still on disk."""
        files = self._finished.get((item, what))
        return files is not None and all((self.root / name).exists() for name in files)

    def finish(self, item: str, what: str, files: list[Path]) -> None:
        """Record that ``item`` is complete, made of ``files`` (inside the download folder)."""
        names = sorted(str(Path(path).relative_to(self.root)) for path in files)
        self._finished[(item, what)] = names
        self._append({"done": item, "what": what, "files": names})


@dataclass
class DownloadReport:
    """What one download run did, model by model.

    A report stands for the folder it filled wherever a path is expected
    (``ModelZoo.open(report)``, ``Path(report)``).

    Attributes:
        root: the folder the models are in.
        what: the download, in words (``"Model-J SD_200"``).
        downloaded: models fetched by this run.
        skipped: (model, reason) of models not fetched on purpose (already present).
        failed: (model, reason) of models that could not be fetched.
        bytes_received: bytes this run wrote (weights, layers, side files).
    """

    root: Path
    what: str = "download"
    downloaded: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    bytes_received: int = 0

    def __fspath__(self) -> str:
        return str(self.root)

    @property
    def complete(self) -> bool:
        """True when every model asked for is on disk (downloaded now or before)."""
        return not self.failed

    @property
    def total(self) -> int:
        return len(self.downloaded) + len(self.skipped) + len(self.failed)

    def summary(self, limit: int = 20) -> str:
        """The report in a few lines: counts, the reasons for skipped models, each failure."""
        lines = [f"{self.what} in {self.root}: {self.total} models",
                 f"  downloaded: {len(self.downloaded)} ({_size(self.bytes_received)})"]
        reasons: dict[str, int] = {}
        for _, reason in self.skipped:
            reasons[reason] = reasons.get(reason, 0) + 1
        lines.append(f"  skipped: {len(self.skipped)}" + "".join(f"\n    {count}: {reason}" for reason, count in reasons.items()))
        lines.append(f"  failed: {len(self.failed)}")
        lines += [f"    {item}: {reason}" for item, reason in self.failed[:limit]]
        if len(self.failed) > limit:
            lines.append(f"    ... {len(self.failed) - limit} more")
        return "\n".join(lines)


class DownloadIncompleteError(ZooError):
    """Some models could not be downloaded; ``report`` says which and why. Everything else is on disk."""

    def __init__(self, report: DownloadReport):
        first, reason = report.failed[0]
        super().__init__(
            f"{len(report.failed)} of {report.total} models of {report.what} are missing (first: {first}: {reason}); "
            "run the same download again to fetch them: models already on disk are not fetched again"
        )
        self.report = report


def _size(count: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} bytes"
