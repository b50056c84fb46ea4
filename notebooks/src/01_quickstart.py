# %% [markdown]
# # 01 · Quickstart: what was this model trained on?
#
# Most public models are fine-tunes of a few base models: **Model Trees**. Within one tree, a
# single layer's weights already tell what a model was fine-tuned on. In this notebook you
#
# 1. open the demo jungle that ships with `probex` and look at its trees (a dendrogram);
# 2. train one ProbeX expert on one tree and layer;
# 3. ask it what an unseen model was trained on;
# 4. look at the training images of an unseen text-to-image model next to what the shipped
#    aligned expert reads from its weights.
#
# Everything runs on a laptop CPU in about a minute.

# %%
import logging
import warnings

import pandas as pd

logging.basicConfig(level=logging.WARNING)
warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", message="IProgress not found")
pd.set_option("display.precision", 3)

from probex import ModelIndex, ProbeXClassifier, TreeRouter, jungle, load_expert
from probex.figures import dendrogram_figure, image_grid_figure, training_curves_figure
from probex.experts.training import resolve_device

print("device:", resolve_device("auto"))

# %% [markdown]
# ## 1. The demo jungle
#
# `jungle.load()` opens the shipped jungle (about a second: it reads file headers, not weights).
# Its models are small, really trained image classifiers fine-tuned from three roots, a *forest*
# of classifiers trained from independent random initialisations (each is a tree of its own),
# and LoRA fine-tunes of a tiny text-to-image model (`mini-sd`).

# %%
zoo = jungle.load()
print(zoo)

forest = set(zoo.trees_with_role("forest"))   # the manifest says what each tree is for

def family(tree):
    """The forest's one-model trees are counted together."""
    return "forest (random inits)" if tree in forest else tree

pd.crosstab(pd.Series([family(r.tree) for r in zoo], name="tree"), pd.Series([r.split for r in zoo], name="split"),
            margins=True, margins_name="all")

# %% [markdown]
# ## 2. Finding the trees
#
# The `TreeRouter` groups models by architecture, then clusters each architecture's models on
# one layer (Ward linkage) and reads the number of trees off the dendrogram. It is never told
# how many trees there are. We fit it on the training models and route every other model.

# %%
trees = zoo.trees_with_role("classifier", "aligned")   # every tree but the forest
population = zoo.select(tree=trees)
router = TreeRouter().fit(population.select(split="train"))
unseen = population.select(split=[split for split in population.splits if split != "train"])
routing_accuracy = router.score(unseen)
print(f"{router.n_trees_} trees found ({len(trees)} true trees); "
      f"routing accuracy on {len(unseen)} unseen models: {routing_accuracy:.3f}")
pd.DataFrame(router.tree_table())

# %%
dendrogram_figure(router)

# %% [markdown]
# ## 3. Train one ProbeX expert
#
# ProbeX passes a few learned probe vectors through one weight matrix and maps the responses to
# the classes the model was fine-tuned on (12 of 24 concepts per model; each concept is one
# binary output, so chance is 0.5). We use the layer the jungle's own validation sweep
# recommends for the tree, and a short training run (the shipped expert trained longer).

# %%
tree = "cnn-attributes"
layer = jungle.recommended_layers()[tree]
tree_zoo = zoo.select(tree=tree)
train, val, test = (tree_zoo.bank(layer, split=split) for split in ("train", "val", "test"))
print(f"{tree}, layer {layer}: X of shape {tuple(train.X.shape)} (models, d_W, d_H)")

expert = ProbeXClassifier(epochs=60, patience=15, seed=0).fit(train, val=(val, None))
shipped = load_expert(jungle.expert_dirs()[tree])
scores = pd.DataFrame([
    {"expert": "trained just now", "test mean binary accuracy": expert.score(test), "parameters": expert.n_parameters_},
    {"expert": "shipped with the jungle", "test mean binary accuracy": shipped.score(test), "parameters": shipped.n_parameters_},
    {"expert": "chance", "test mean binary accuracy": 0.5, "parameters": 0},
])
scores

# %%
training_curves_figure(expert.history_, title=f"ProbeX on {tree} / {layer}")

# %% [markdown]
# ## 4. What was this unseen model trained on?
#
# Take a model from the test split: the router sends it to its tree, and the tree's expert reads
# its classes from the weights. The table compares the prediction with the truth.

# %%
model = test.records[0]
(routed_tree,) = router.route(zoo.select(ids=[model.id]))
(predicted,) = expert.predict(test[[0]])
predicted, truth = set(predicted), set(model.labels)
print(f"{model.id}: routed to {routed_tree}, the cluster whose models come from {router.tree_truth_[routed_tree]}")
pd.DataFrame({"concept": sorted(predicted | truth),
              "predicted": [name in predicted for name in sorted(predicted | truth)],
              "trained on": [name in truth for name in sorted(predicted | truth)]})

# %% [markdown]
# ## 5. Weights meet images
#
# The text-to-image tree (`mini-sd`) ships its models' training images and an *aligned* expert
# that maps weights into a text space. For a model of a concept that the expert never saw in
# training, we ask for the best-matching concept names and show the images the model was
# fine-tuned on. Notebook 03 tells this part of the story in full.

# %%
(aligned_tree,) = zoo.trees_with_role("aligned")   # the tree aligned with text: mini-sd
aligner = load_expert(jungle.expert_dirs()[aligned_tree])
index = ModelIndex.build(aligner, zoo, splits="test_holdout")
model = index.records[0]
top = index.top_labels(model.id, k=3)
print(f"{model.id} was fine-tuned on {model.labels[0]!r}; the expert reads:")
for name, similarity in top:
    print(f"  {name:20s} cosine {similarity:.3f}")
image_grid_figure(model.images, titles=[f"image {i}" for i in range(len(model.images))],
                  title=f"{model.id}: training images ({model.labels[0]})")

# %% [markdown]
# Next: notebook 02 shows *why* the trees matter, 03 puts weights and words in one space,
# 04 runs the same steps on the real Model-J dataset and 05 on your own folder of models.
