"""Argument checks of the command line, used as argparse ``type=`` functions.

Each one turns the text of one argument into its value or raises ``argparse.ArgumentTypeError``
with what is wrong; the parser then ends the command with one line and exit status 2 before
any work starts (``probex sweep: argument --shard: ...``).
"""

from __future__ import annotations

import argparse
import math
import os
import re
from pathlib import Path
from typing import Callable

from probex.errors import ProbeXError

#: Upper bounds that no real use reaches; above them a number is a typo (or an attack).
MAX_EPOCHS = 1_000_000
MAX_COUNT = 10_000_000


def _int(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def int_in(low: int, high: int) -> Callable[[str], int]:
    """A whole number in [low, high]."""

    def check(text: str) -> int:
        value = _int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is out of range; give a whole number from {low} to {high:,}")
        return value

    check.__name__ = "whole number"
    return check


positive_int = int_in(1, MAX_COUNT)
non_negative_int = int_in(0, MAX_COUNT)
epochs = int_in(1, MAX_EPOCHS)


def _float(text: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def non_negative_float(text: str) -> float:
    """A finite number >= 0 (NaN and infinities refused)."""
    value = _float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value:g} is negative; give a number >= 0")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0."""
    value = _float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value:g} is not positive; give a number > 0")
    return value


def regex(text: str) -> str:
    """A valid regular expression (kept as text)."""
    try:
        re.compile(text)
    except re.error as error:
        raise argparse.ArgumentTypeError(f"{text!r} is not a valid regular expression ({error})") from None
    return text


def shard(text: str) -> tuple[int, int]:
    """``i/n`` with 0 <= i < n."""
    from probex.experiments.sweep import parse_shard

    try:
        return parse_shard(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def text(value: str) -> str:
    """Non-blank text (a prompt, a label, a name)."""
    if not value.strip():
        raise argparse.ArgumentTypeError("empty; give some text")
    if "\0" in value:
        raise argparse.ArgumentTypeError("holds a NUL byte")
    return value


def _path_text(value: str) -> str:
    if not value.strip():
        raise argparse.ArgumentTypeError("an empty path")
    if "\0" in value:
        raise argparse.ArgumentTypeError("the path holds a NUL byte")
    return value


def existing_folder(value: str) -> str:
    """A folder that exists (a zoo, a jungle, an expert)."""
    path = Path(_path_text(value)).expanduser()
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{value}: no such folder")
    return str(path)


def existing_file(value: str) -> Path:
    """A regular file that exists (a model file, a labels file)."""
    path = Path(_path_text(value)).expanduser()
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{value}: no such file")
    return path


def output_file(*suffixes: str) -> Callable[[str], Path]:
    """A file probex may write: not in a system folder, not a user's file (see ``storage.check_output_file``)."""
    from probex.storage import check_output_file

    def check(value: str) -> Path:
        path = Path(_path_text(value)).expanduser()
        if suffixes and path.suffix.lower() not in suffixes:
            raise argparse.ArgumentTypeError(f"{value}: give a file name ending in {' or '.join(suffixes)}")
        try:
            check_output_file(path)
        except (ProbeXError, OSError) as error:
            raise argparse.ArgumentTypeError(str(error)) from None
        return path

    check.__name__ = "output file"
    return check


def output_folder(kind: str, legacy: Callable[[Path], bool] | None = None) -> Callable[[str], Path]:
    """A folder probex may save a ``kind`` artifact to (absent, empty, or an earlier one of that kind)."""
    from probex.storage import SYSTEM_FOLDERS, check_replaceable

    def check(value: str) -> Path:
        path = Path(os.path.abspath(Path(_path_text(value)).expanduser()))
        if any(str(path) == folder or str(path).startswith(folder + "/") for folder in SYSTEM_FOLDERS):
            raise argparse.ArgumentTypeError(f"{path}: a system folder; choose another place")
        try:
            check_replaceable(path, kind, legacy)
        except (ProbeXError, OSError) as error:
            raise argparse.ArgumentTypeError(str(error)) from None
        parent = next((folder for folder in path.parents if os.path.lexists(folder)), None)
        if parent is not None and (not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK)):
            raise argparse.ArgumentTypeError(f"{path}: cannot create a folder in {parent}; choose another place")
        return path

    check.__name__ = "output folder"
    return check


def text_encoder(spec: str) -> str:
    """``minilm`` or ``open_clip:<model>/<pretrained tag or .safetensors file>``."""
    from probex.language.text import OPEN_CLIP_PREFIX, SUPPORTED_SPECS

    if spec == "minilm":
        return spec
    rest = spec[len(OPEN_CLIP_PREFIX):] if spec.startswith(OPEN_CLIP_PREFIX) else ""
    model, _, pretrained = rest.partition("/")
    if not model or not pretrained:
        raise argparse.ArgumentTypeError(f"{spec!r} is not a text encoder; supported: {', '.join(SUPPORTED_SPECS)}")
    return spec


def repo_id(value: str) -> str:
    """A Hub repo id, ``owner/name``."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}", value) or ".." in value:
        raise argparse.ArgumentTypeError(f"{value!r} is not a Hub repo id (owner/name, letters, digits, . _ -)")
    return value


def writable_folder(value: str) -> str:
    """A folder probex may create files in (a cache folder): not a system folder, not a file."""
    from probex.storage import SYSTEM_FOLDERS

    path = Path(os.path.abspath(Path(_path_text(value)).expanduser()))
    if any(str(path) == folder or str(path).startswith(folder + "/") for folder in SYSTEM_FOLDERS):
        raise argparse.ArgumentTypeError(f"{path}: a system folder; choose another place")
    existing = next((folder for folder in (path, *path.parents) if os.path.lexists(folder)), None)
    if existing is not None and (not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK)):
        raise argparse.ArgumentTypeError(f"{path}: {existing} is not a folder probex may write in")
    return str(path)


def expert_folder(value: str) -> Path:
    """A folder an expert may be saved to: new, empty, or an expert saved before (never a user's folder)."""
    from probex.experts import base  # torch is imported only when the argument is given

    return output_folder(base.FORMAT, base._saved_before_markers)(value)


def results_file(value: str) -> Path:
    """A sweep's results file: absent, empty or a sweep's own (rows are appended to it)."""
    from probex.experiments.sweep import check_results_file

    path = Path(writable_folder(str(Path(_path_text(value)).expanduser().parent))) / Path(value).name
    try:
        check_results_file(path)
    except (ProbeXError, OSError) as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return path


def report_folder(value: str) -> Path:
    """A folder a report may be written to: new, empty, or an earlier report's."""
    from probex.storage import ARTIFACT_FILE, SYSTEM_FOLDERS

    path = Path(os.path.abspath(Path(_path_text(value)).expanduser()))
    if any(str(path) == folder or str(path).startswith(folder + "/") for folder in SYSTEM_FOLDERS):
        raise argparse.ArgumentTypeError(f"{path}: a system folder; choose another place")
    if os.path.lexists(path) and (path.is_symlink() or not path.is_dir()):
        raise argparse.ArgumentTypeError(f"{path}: exists and is not a folder; choose another place for the report")
    if path.is_dir() and any(path.iterdir()) and not (path / ARTIFACT_FILE).is_file() and not (path / "report.json").is_file():
        raise argparse.ArgumentTypeError(f"{path}: exists and is not a probex report folder; probex never writes "
                                         "into folders it did not make. Choose another folder.")
    writable_folder(str(path))
    return path
