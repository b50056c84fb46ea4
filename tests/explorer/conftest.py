"""A mini jungle for the explorer's tests: a few models of each tree and split of the shipped demo jungle.

The weight files, training images, shipped experts, sweeps and check figures are symbolic
links to the shipped jungle; only the manifest is new, so the fixture costs milliseconds and
every page runs on real models in a fraction of the full jungle's time.
"""

import json
from collections import defaultdict
from pathlib import Path

import pytest

from probex import jungle

PER_SPLIT = {"train": 36, "val": 10, "test": 12, "val_holdout": 24, "test_holdout": 40}
FOREST_MODELS = 3
SHARED = ("discriminative", "generative", "experts", "sweeps", "roots", "check.json", "recommended_layers.json",
          "validation.json", "build.json")


@pytest.fixture(scope="session")
def mini_jungle(tmp_path_factory) -> Path:
    shipped = jungle.SHIPPED
    if not (shipped / "probex_zoo.json").is_file():
        pytest.skip(f"the shipped demo jungle is not in {shipped} (build it with `probex jungle build`)")
    folder = tmp_path_factory.mktemp("mini-jungle")
    for name in SHARED:
        if (shipped / name).exists():
            (folder / name).symlink_to(shipped / name)
    manifest = json.loads((shipped / "probex_zoo.json").read_text())
    forest_trees = {tree for tree, role in manifest["trees"].items() if role["role"] == "forest"}
    kept, counts, forest = [], defaultdict(int), 0
    for entry in manifest["models"]:
        if entry["tree"] in forest_trees:
            forest += 1
            if forest <= FOREST_MODELS:
                kept.append(entry)
            continue
        key = (entry["tree"], entry["split"])
        if counts[key] < PER_SPLIT[entry["split"]]:
            counts[key] += 1
            kept.append(entry)
    manifest.update(models=kept, name="mini-jungle")
    (folder / "probex_zoo.json").write_text(json.dumps(manifest))
    return folder
