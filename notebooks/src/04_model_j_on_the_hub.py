# %% [markdown]
# # 04 · Model-J on the Hub
#
# The paper's dataset, Model-J, lives on the Hugging Face Hub: one repo per discriminative model
# (`ProbeX/Model-J__MAE__model_idx_0929`, ...) and one repo per generative subset
# (`ProbeX/Model-J__SD_200`). With `probex` you download a subset, or only the layers you need
# (HTTP range requests: one layer of a file instead of the whole file), sweep the layers on a
# GPU, and rebuild the paper's tables. (On the demo jungle's tiny layers the Dense baseline is
# small; on Model-J's 768 x 768 layers it is the one with ~30x the parameters.)
#
# This notebook first tries the Hub and looks for a GPU. **Where either is missing it says so
# and runs the same steps on the demo jungle**, so it runs end to end anywhere. (The test suite
# runs both paths: offline, and online against a small fake Hub on this machine.) For reference,
# the paper reports on Model-J (real models): ProbeX 0.842 / 0.705 / 0.765 / 0.885 mean binary
# accuracy on ResNet / DINO / MAE / Sup.ViT against Dense 0.713 / 0.614 / 0.666 / 0.663 with
# about 30x the parameters; on SD_200, in-distribution 0.973 and zero-shot 0.898 (0.564 without
# the ReLU); router accuracy 100%.

# %%
import logging
import warnings

import pandas as pd

logging.basicConfig(level=logging.WARNING)
warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", message="IProgress not found")
pd.set_option("display.precision", 3)

import tempfile
from pathlib import Path

from probex import ModelZoo, TreeRouter, download_modelj, jungle, sweep_layers
from probex.errors import HubUnavailableError
from probex.zoo.hub import DownloadIncompleteError
from probex.figures import layer_sweep_figure
from probex.experts.training import resolve_device

work = Path(tempfile.mkdtemp(prefix="modelj-"))

# %% [markdown]
# ## 1. Where are we: a GPU? the Hub?

# %%
device = resolve_device("auto")
print(f"device: {device}" + ("" if device.type == "cuda" else
      " (no GPU here: the sweeps below use small settings so that they finish on a CPU)"))

# Model-J SD_200: all five splits (the zero-shot test needs val_holdout and test_holdout), and of
# each model only the paper's layer 46 (unet.down_blocks.2.attentions.1.transformer_blocks.0.attn2.to_q),
# read with HTTP range requests. The whole subset is about 70 GB; one layer of each model is a small
# part of that, and the summary below says how much was transferred.
SD_LAYER = "46"
try:
    report = download_modelj("SD_200", work, layers=[SD_LAYER])
    modelj = report.root
    print(report.summary())
except DownloadIncompleteError as error:   # some models could not be fetched: go on with those on disk
    modelj = error.report.root
    print(error.report.summary())
    print(f"(probex says: {error})")
except HubUnavailableError as error:
    modelj = None
    print("The Hugging Face Hub cannot be reached from here, so the steps below run on the demo jungle instead.")
    print(f"(probex says: {error})")

# %%
if modelj is not None:   # the real data
    zoo = ModelZoo.open(modelj)
    tree_zoo, candidate_layers, task = zoo, None, "align"
else:                    # the demo jungle's text-to-image tree, its LoRA query projections
    zoo = jungle.load()
    tree_zoo, candidate_layers, task = zoo.select(tree=zoo.trees_with_role("aligned")[0]), r"attn\.to_q$", "align"
print(tree_zoo)

# %% [markdown]
# ## 2. Layer-selective banks
#
# `zoo.bank(layer, split)` reads only that layer's bytes from every weight file (LoRA pairs
# merged as B @ A) and caches the stacked array on disk; experts train from it.

# %%
import time

catalog = tree_zoo.catalog()
layer = catalog[0].name
started = time.perf_counter()
bank = tree_zoo.bank(layer, split="train", cache=False)   # read from every weight file now
from_files = time.perf_counter() - started
tree_zoo.bank(layer, split="train")                       # built once into the disk cache ...
started = time.perf_counter()
bank = tree_zoo.bank(layer, split="train")               # ... and read back from it
print(f"{bank}: {from_files:.2f} s from {len(bank)} weight files, {time.perf_counter() - started:.2f} s from the cache")
pd.DataFrame([{"layer": info.name, "d_W x d_H": f"{info.shape[0]}x{info.shape[1]}", "kind": info.kind} for info in catalog])

# %% [markdown]
# ## 3. Sweep the layers
#
# The best layer differs per tree, so the paper trains one expert per layer and keeps the best by
# validation. `sweep_layers` does that; with `results=...` every finished layer is appended to a
# file, so an interrupted sweep resumes. On a GPU use the experts' full settings; here a small,
# short run per layer.

# %%
settings = {"epochs": 500, "patience": 50} if device.type == "cuda" else \
           {"epochs": 20, "patience": 5, "n_probes": 32, "proj_dim": 32, "rep_dim": 64}
sweep = sweep_layers(tree_zoo, task=task, layers=candidate_layers, params={**settings, "device": "auto"},
                     results=work / "sweep.jsonl")
zero_shot = "n/a" if sweep.best.zero_shot_test is None else f"{sweep.best.zero_shot_test:.3f}"
print(f"best layer by validation: {sweep.best.layer} (val {sweep.best.val:.3f}, zero-shot test {zero_shot})")
sweep.to_frame()[["layer", "shape", "val", "test", "zero_shot_test", "n_parameters", "seconds", "best"]]

# %%
layer_sweep_figure(sweep.scores, title=f"Layer sweep ({task}): validation per layer")

# %% [markdown]
# ## 4. The paper's tables, in miniature
#
# Training-class prediction per tree (the paper's first table): ProbeX (the jungle's shipped
# expert at its recommended layer) against the Dense baseline (trained now on the same layer),
# with both parameter counts, on the test models; and the router's accuracy on models it never
# saw. On the real data these rows are ResNet, DINO, MAE and Sup.ViT. (StatNN, the third
# baseline, takes minutes on a CPU: `probex jungle check` measures it.)
#
# One tree is read through other probe views: the models of `cnn-own-heads` start their heads
# from their own random initialisations, as fine-tunes on the Hub do, so the class signal in
# the last conv layer is multiplied by a random output-side direction per model. No linear
# read-out of the weights sees it (Dense stays near chance); the input-side second-order view
# Xᵀ X U (`views="xtxu"`, from MVProbe) removes that random side, and its shipped expert reads
# the classes with a tenth of Dense's parameters.

# %%
from probex import DenseExpert, load_expert

demo = jungle.load()
recommended, experts = jungle.recommended_layers(), jungle.expert_dirs()
rows = {}
for tree in demo.trees_with_role("classifier"):
    tree_models = demo.select(tree=tree)
    train, val, test = (tree_models.bank(recommended[tree], split=split) for split in ("train", "val", "test"))
    probex_expert = load_expert(experts[tree])
    dense = DenseExpert(epochs=100, patience=20, seed=0).fit(train, val=(val, None))
    rows[tree] = {"layer": recommended[tree], "ProbeX": probex_expert.score(test), "views": probex_expert.views,
                  "ProbeX parameters": probex_expert.n_parameters_, "Dense": dense.score(test),
                  "Dense parameters": dense.n_parameters_, "chance": 0.5, "test models": len(test)}
pd.DataFrame(rows).T

# %%
population = demo.select(tree=demo.trees_with_role("classifier", "aligned"))
router = TreeRouter().fit(population.select(split="train"))
unseen = population.select(split=[split for split in population.splits if split != "train"])
print(f"router: {router.n_trees_} trees found; accuracy on {len(unseen)} unseen models: {router.score(unseen):.3f}")

# %%
import shutil

shutil.rmtree(work)   # this notebook's temporary folder (downloads, the sweep's results file)
