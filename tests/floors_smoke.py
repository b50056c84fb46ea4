"""The smoke run of tests/test_dependency_floors.py, executed by a venv holding the declared minimum versions.

Usage: python floors_smoke.py FLOORS_JSON WORK_DIR  (HF_ENDPOINT names the fake Hub). It checks the
versions it runs with, then goes through what each dependency serves: downloads through
huggingface_hub (listings, snapshots, byte ranges), the Model-J table (pyarrow), safetensors
files, banks (numpy), an expert (torch, scikit-learn), the router (scipy), pandas, tqdm, pillow.
"""

import json
import sys
from importlib.metadata import version
from pathlib import Path

from packaging.version import Version  # noqa: E402

floors, work = json.loads(sys.argv[1]), Path(sys.argv[2])
wrong = {name: version(name) for name, floor in floors.items() if Version(version(name)) != Version(floor)}
assert not wrong, f"not at the floors: {wrong}"

import pandas as pd  # noqa: E402
from PIL import Image  # noqa: E402

from probex.experts.classifier import ProbeXClassifier  # noqa: E402
from probex.progress import tqdm_progress  # noqa: E402
from probex.trees.router import TreeRouter  # noqa: E402
from probex.zoo import ModelZoo  # noqa: E402
from probex.zoo.classnames import imagenet_name  # noqa: E402
from probex.zoo.hub import download_modelj, download_repos  # noqa: E402

with tqdm_progress("SD_200", disable=True) as progress:
    sd = download_modelj("SD_200", work, splits=["train", "val"], layers=["46"], progress=progress)
mae = download_modelj("MAE", work)
repos = download_repos(["alice/vit-cifar"], work / "repos", layers=["vit.encoder.layer.3.attention.query"])
assert sd.complete and mae.complete and repos.complete

sd_zoo = ModelZoo.open(sd.root)
bank = sd_zoo.bank("46", split="train", cache=work / "banks")
assert bank.layer == "unet.down_blocks.2.attentions.1.transformer_blocks.0.attn2.to_q" and sd_zoo.trees == ["SD_200"]
mae_zoo = ModelZoo.open(mae.root)
train = mae_zoo.bank("vit.encoder.layer.3.attention.query.weight", split="train", cache=False)
expert = ProbeXClassifier(n_probes=4, proj_dim=4, rep_dim=8, epochs=2, seed=0).fit(train)
router = TreeRouter().fit(mae_zoo.select(split="train"))
frame = pd.DataFrame({"layer": [bank.layer], "models": [len(bank)]})
Image.new("RGB", (2, 2)).save(work / "image.png")
print("SMOKE OK", len(bank), expert.score(train), router.n_trees_, imagenet_name(0), len(frame))
