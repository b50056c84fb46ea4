"""What a zoo folder may ship beside its models: recommended layers, layer sweeps, pre-trained experts, figures.

A validated zoo (the demo jungle, or any zoo after ``probex jungle validate`` style sweeps)
holds, at its root::

    recommended_layers.json    {tree: best layer by validation}
    sweeps/<tree>.jsonl        one row per layer of the tree's sweep
    experts/<tree>/            a pre-trained expert (load with probex.load_expert)
    check.json                 the figures measured on it (``probex jungle check``)

Every function here reads; none writes. A zoo without them gives empty answers.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

logger = logging.getLogger(__name__)

RECOMMENDED_FILE = "recommended_layers.json"
SWEEPS_FOLDER = "sweeps"
EXPERTS_FOLDER = "experts"
FIGURES_FILE = "check.json"


def recommended_layers(root: str | Path) -> dict[str, str]:
    """tree -> the best layer by the zoo's own validation sweep ({} when it has none)."""
    return _read_json(Path(root) / RECOMMENDED_FILE) or {}


def expert_dirs(root: str | Path) -> dict[str, Path]:
    """tree -> the folder of the expert shipped for it (those that exist).

    The tree is the one the expert's config names (its ``metadata.tree``) when the folder's name is
    that name made safe (:func:`probex.storage.safe_name`), else the folder's name: a config cannot
    claim another tree's name.
    """
    from probex.storage import json_field, safe_name

    folder = Path(root) / EXPERTS_FOLDER
    if not folder.is_dir():
        return {}
    found = {}
    for child in sorted(folder.iterdir()):
        if not child.is_dir() or not (child / "config.json").is_file():
            continue
        metadata = json_field(child / "config.json", "metadata")
        tree = metadata.get("tree") if isinstance(metadata, dict) else None
        found[tree if isinstance(tree, str) and safe_name(tree) == child.name else child.name] = child
    return found


def sweep_file(root: str | Path, tree: str) -> Path | None:
    """The shipped sweep of one tree (a JSON-lines file), or None."""
    from probex.storage import safe_name

    path = Path(root) / SWEEPS_FOLDER / f"{safe_name(tree)}.jsonl"
    return path if path.is_file() else None


def shipped_figures(root: str | Path) -> dict:
    """The figures measured on the zoo (``check.json``), {} when it has none."""
    return _read_json(Path(root) / FIGURES_FILE) or {}


def _read_json(path: Path):
    from probex.storage import read_regular_bytes

    if not path.is_file():
        return None
    try:
        return json.loads(read_regular_bytes(path, 64 * 2**20, "JSON file"))
    except (OSError, ValueError) as error:
        logger.warning("%s: unreadable (%s); ignored", path, error)
        return None
