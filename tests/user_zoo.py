"""Trees of a demo jungle saved as a user's own zoo, for tests that generic code knows no jungle names."""

import json
import shutil
from collections import defaultdict
from pathlib import Path


def copy_as_user_zoo(source, out, trees: dict, per_split: dict | None = None):
    """Some trees of a manifest zoo saved as a user's zoo: trees renamed (``{old: new}``), models copied, and
    nothing else — no declared roles, no recommended layers, no shipped experts or sweeps.

    ``per_split`` keeps at most that many models of each (tree, split). Returns ``out``.
    """
    source, out = Path(source), Path(out)
    manifest = json.loads((source / "probex_zoo.json").read_text())
    kept, counts = [], defaultdict(int)
    for entry in manifest["models"]:
        if entry["tree"] not in trees:
            continue
        key = (entry["tree"], entry["split"])
        if per_split is not None and counts[key] >= per_split.get(entry["split"], 0):
            continue
        counts[key] += 1
        number = sum(counts.values())
        new = {**entry, "id": f"{trees[entry['tree']]}/m{number:05d}", "tree": trees[entry["tree"]],
               "path": f"models/m{number:05d}.safetensors", "images": None}
        (out / "models").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / entry["path"], out / new["path"])
        if isinstance(entry.get("images"), dict):  # images shared per class: the tree's folder, copied once
            shared = out / "class_images" / trees[entry["tree"]]
            if not shared.exists():
                shutil.copytree(source / entry["images"]["per_label"], shared)
            new["images"] = {"per_label": shared.relative_to(out).as_posix()}
        elif entry.get("images"):
            images = out / "images" / f"m{number:05d}"
            shutil.copytree(source / entry["images"], images)
            new["images"] = images.relative_to(out).as_posix()
        kept.append(new)
    (out / "probex_zoo.json").write_text(json.dumps({"format": "probex-zoo", "version": 1, "name": "my-own-zoo",
                                                      "models": kept}))
    return out

