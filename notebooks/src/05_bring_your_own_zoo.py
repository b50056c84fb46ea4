# %% [markdown]
# # 05 · Bring your own zoo
#
# You have a folder of fine-tunes of one base model (here: LoRA fine-tunes of a text-to-image
# model, each with its training images) and want to know what each was trained on, find the
# ones that match a prompt, and place a new file among them. The steps: **open** the folder,
# **route** its models (which Model Tree are they from?), **train** an expert on the models whose
# concepts you know, and **search**.
#
# So that this notebook runs anywhere, it first builds such a folder in a temporary directory by
# copying a few models out of the demo jungle: plain safetensors files in the Model-J LoRA
# layout (`{split}/model_xxx/pytorch_lora_weights.safetensors` + `training_images/`), opened
# with no manifest.

# %%
import logging
import warnings

import pandas as pd

logging.basicConfig(level=logging.WARNING)
warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", message="IProgress not found")
pd.set_option("display.precision", 3)

import shutil
import tempfile
from pathlib import Path

from IPython.display import display

from probex import ModelIndex, ModelZoo, ProbeXAligner, TreeRouter, jungle, load_expert
from probex.errors import HubUnavailableError
from probex.figures import dendrogram_figure, image_grid_figure

# %% [markdown]
# ## 1. A folder of models
#
# Twelve concepts, a handful of models each, split into train / val / test; plus four models of
# *other* concepts that we keep aside as "new files" to identify later.

# %%
demo = jungle.load()
(aligned_tree,) = demo.trees_with_role("aligned")   # the jungle's text-to-image tree, mini-sd
source = demo.select(tree=aligned_tree)
concepts = sorted({record.labels[0] for record in source.select(split="train")})[:12]
per_split = {"train": 8, "val": 2, "test": 3}
folder = Path(tempfile.mkdtemp(prefix="my-lora-zoo-"))
for split, count in per_split.items():
    for concept in concepts:
        for record in [r for r in source.select(split=split) if r.labels[0] == concept][:count]:
            shutil.copytree(record.path.parent, folder / split / record.path.parent.name)
new_models = source.select(split="test_holdout").records[:4]   # "new files" of concepts not in the folder
print(f"{folder}: {sum(1 for _ in folder.rglob('*.safetensors'))} weight files")

my_zoo = ModelZoo.open(folder)
print(my_zoo)
pd.DataFrame([{"layer": info.name, "shape": info.shape, "kind": info.kind} for info in my_zoo.catalog()])

# %% [markdown]
# ## 2. Route: which Model Tree are these models from?
#
# Clustering the folder on its own finds how many trees it holds (here one: all are fine-tunes
# of one base model). A router fitted on a larger population (the demo jungle) also tells
# *which* known tree they belong to, and answers `None` for a model of a tree it has never seen.

# %%
own_router = TreeRouter().fit(my_zoo)
print(f"trees in the folder: {own_router.n_trees_}")
dendrogram_figure(own_router, title="My folder's models")

# %%
known = demo.select(tree=demo.trees_with_role("classifier", "aligned"), split="train")
jungle_router = TreeRouter().fit(known)
routed = pd.Series(jungle_router.route(my_zoo)).map(lambda tree: jungle_router.tree_truth_.get(tree, "unknown"))
print("my models routed to the jungle's trees:")
routed.value_counts()

# %% [markdown]
# ## 3. Train an expert on the models you know
#
# An aligned ProbeX expert on the layer the jungle's sweep recommends for this kind of model,
# trained on the folder's `train` split (epoch chosen on `val`), tested on its `test` split. The
# shipped expert of the jungle's `mini-sd` tree reads these models too, since they are fine-tunes
# of the same base model: its score is the reference.

# %%
layer = jungle.recommended_layers()[aligned_tree]
train, val, test = (my_zoo.bank(layer, split=split) for split in ("train", "val", "test"))
expert = ProbeXAligner(n_probes=32, proj_dim=32, rep_dim=64, epochs=80, patience=10, seed=0).fit(train, val=(val, None))
shipped = load_expert(jungle.expert_dirs()[aligned_tree])
shipped_test = [my_zoo.bank(name, split="test") for name in shipped.layers_]
pd.DataFrame({"test top-1 over my 12 concepts": {
    f"my expert ({len(train)} models, {layer})": expert.score(test, candidates=concepts),
    f"the jungle's shipped {aligned_tree} expert": shipped.score(shipped_test, candidates=concepts),
    "chance": 1 / len(concepts)}})

# %% [markdown]
# ## 4. Search
#
# `ModelIndex.build` encodes every model of the folder once; a prompt is then one matrix
# product. `top_labels` reads files that are not in the folder: four models of concepts none of the
# folder's models was trained on, read by the shipped expert against every concept name the
# jungle knows.

# %%
index = ModelIndex.build(expert, my_zoo)
prompt = f"a {concepts[3]}"
hits = index.search(prompt, k=5)
display(pd.DataFrame([{"rank": h.rank, "model": h.model_id, "split": h.split, "trained on": ", ".join(h.labels),
                       "cosine": h.score} for h in hits]))
image_grid_figure([h.images[0] for h in hits], titles=[f"{h.rank}. {h.labels[0]}" for h in hits], columns=5,
                  title=f"my folder, prompt {prompt!r}")

# %%
shipped_index = ModelIndex.build(shipped, my_zoo)
vocabulary = source.label_names   # every concept name the jungle knows
rows = []
for record in new_models:
    (best, similarity), *_ = shipped_index.top_labels(record.path, candidates=vocabulary, k=1)
    rows.append({"file": f"{record.split}/{record.path.parent.name}", "read as": best, "cosine": similarity,
                 "trained on (the truth)": record.labels[0]})
pd.DataFrame(rows)

# %% [markdown]
# ## 5. Your models on the Hub
#
# For a list of Hub repos (fine-tunes of one base model), `download_repos` fetches them in the
# Hugging Face cache layout, and with `layers=[...]` only those tensors (HTTP range requests),
# then `ModelZoo.open` reads the folder as above. Offline it fails at once with a message that
# says what to do instead.

# %%
from probex import download_repos

try:
    # one Model-J fine-tune as an example; list your own repos here (layers=[...] fetches only those tensors)
    hub_folder = download_repos(["ProbeX/Model-J__MAE__model_idx_0929"], Path(tempfile.mkdtemp()) / "hub")
    print("downloaded to", hub_folder)
except HubUnavailableError as error:
    print("The Hub is not reachable from here, so this step is skipped:")
    print(error)

# %%
shutil.rmtree(folder)   # the temporary folder of this notebook
