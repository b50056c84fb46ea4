# %% [markdown]
# # 02 · Why Model Trees?
#
# The paper's motivating experiment, reproduced on the demo jungle. A *linear probe* (one linear
# layer on a model's flattened weights: the `DenseExpert`) is asked which classes a model was
# fine-tuned on (12 of 24 concepts; mean binary accuracy, chance 0.5). We compare:
#
# 1. **within a tree** (models fine-tuned from one shared root) vs **across a forest** of models
#    trained from independent random initialisations: the *intra- vs inter-tree gap*;
# 2. **positive transfer**: within a tree, more models help;
# 3. **negative transfer**: models of *other* trees mixed into the training set hurt;
# 4. **one expert per tree vs one shared expert** (and the router that makes per-tree experts
#    usable: a mixture of experts);
# 5. the paper's **Table 1**: each tree's expert at its best hidden layer, against Dense, with
#    parameter counts (as recorded by `probex jungle check`).
#
# All populations are small CNNs of the same architecture, read at the same layer
# (`conv2.weight`, 24 x 108), so the only difference is where their weights started from.
# Every number below is measured when the notebook runs.
#
# The notebook runs on any zoo whose trees say what they are (their *roles*): set
# `PROBEX_NOTEBOOK_ZOO` to a zoo folder (or edit the cell below) and `LAYER` to a layer its
# classifier trees share. Trees are found by role, never by name; a zoo without a forest skips
# the forest's part of the story.

# %% tags=["parameters"]
import os

ZOO = os.environ.get("PROBEX_NOTEBOOK_ZOO")   # a zoo folder of your own; unset: the demo jungle
LAYER = "conv2.weight"                         # the layer every compared population is read at

# %%
import logging
import warnings

import pandas as pd

logging.basicConfig(level=logging.WARNING)
warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", message="IProgress not found")
pd.set_option("display.precision", 3)

import plotly.graph_objects as go
import torch

from probex import DenseExpert, LayerBank, MixtureOfExperts, ModelZoo, TreeRouter, jungle
from probex.figures import weight_map_figure

PROBE = dict(epochs=100, patience=20, seed=0)   # a short run, the best epoch kept by validation


def linear_probe(train, val):
    """A linear probe (DenseExpert) fitted on ``train``, its epoch chosen on ``val``."""
    return DenseExpert(**PROBE).fit(train, val=(val, None))


def mix(*banks):
    """One LayerBank holding the models of several banks (of the same layer)."""
    return LayerBank(torch.cat([bank.X for bank in banks]), [r for bank in banks for r in bank.records], LAYER)

# %% [markdown]
# ## The three populations
#
# Two Model Trees (CNNs fine-tuned from a supervised root and from an attribute-trained root)
# and the forest (CNNs trained from scratch, each from its own random initialisation). In the
# raw weights the trees are two tight clouds; the forest is spread everywhere.

# %%
zoo = ModelZoo.open(ZOO) if ZOO else jungle.load()


def has_layer(tree):
    return LAYER in {info.name for info in zoo.select(tree=tree).catalog()}


# the classifier trees read at LAYER (with enough models to train, validate and test a probe), and the forest;
# a tree whose role names other probe views is not read by a linear probe (notebook 06, section 7, shows why)
from probex.experiments.harness import tree_views

readable = [tree for tree in zoo.trees_with_role("classifier") if has_layer(tree) and len(zoo.select(tree=tree)) >= 20]
trees = [tree for tree in readable if tree_views(zoo, tree) is None]
if len(trees) < len(readable):
    print(f"left out (their roles name other probe views): {', '.join(sorted(set(readable) - set(trees)))}")
forest_trees = [tree for tree in zoo.trees_with_role("forest") if has_layer(tree)]
if len(trees) < 2:
    raise ValueError(f"{zoo.root}: this notebook compares two classifier trees that share LAYER = {LAYER!r}; "
                     f"found {trees or 'none'}. Set LAYER to a layer two of your classifier trees share.")
populations = {tree: zoo.select(tree=tree) for tree in trees}
if forest_trees:
    populations["forest"] = zoo.select(tree=forest_trees)
else:
    print("This zoo has no forest (trees with the forest role): the parts that compare against it are skipped.")
banks = {name: {split: population.bank(LAYER, split=split) for split in ("train", "val", "test")}
         for name, population in populations.items()}
pd.DataFrame({name: {split: len(bank) for split, bank in splits.items()} for name, splits in banks.items()}).T

# %%
train_all = mix(*(banks[name]["train"] for name in banks))
population_of = [name for name in banks for _ in range(len(banks[name]["train"]))]
weight_map_figure(train_all.X, {"population": population_of}, ids=train_all.ids,
                  title=f"Raw weights of {LAYER}, training models (PCA)")

# %% [markdown]
# ## 1. The intra- vs inter-tree gap
#
# The same linear probe, trained on 210 models and tested on 60 unseen ones: within each tree,
# and on the forest.

# %%
probes = {name: linear_probe(splits["train"], splits["val"]) for name, splits in banks.items()}
gap_table = pd.DataFrame([{"population": name, "training models": len(banks[name]["train"]),
                           "test mean binary accuracy": probe.score(banks[name]["test"])}
                          for name, probe in probes.items()]).set_index("population")
intra = gap_table.loc[trees, "test mean binary accuracy"].mean()
forest = gap_table.loc["forest", "test mean binary accuracy"] if forest_trees else None
if forest_trees:
    print(f"within a tree {intra:.3f}, across the forest {forest:.3f}: a gap of {intra - forest:.3f}")
else:
    print(f"within a tree {intra:.3f}; no forest here to measure the gap against")
gap_table

# %%
figure = go.Figure(go.Bar(x=gap_table.index, y=gap_table["test mean binary accuracy"],
                          marker_color=["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"][:len(trees)] + ["#7f7f7f"] * bool(forest_trees),
                          text=[f"{v:.3f}" for v in gap_table["test mean binary accuracy"]], textposition="outside"))
figure.add_hline(y=0.5, line_dash="dash", annotation_text="chance")
figure.update_layout(title="Linear probe: within a tree vs across random initialisations", template="plotly_white",
                     yaxis_title="test mean binary accuracy", yaxis_range=[0, 1.1], height=380)
figure

# %% [markdown]
# Within a tree the probe reads the training classes almost perfectly; across the forest it is
# at chance. Models of one tree share a coordinate system (their root), so the same weight
# coordinate means the same thing in every model; models trained from different random
# initialisations do not (their units can be permuted, rotated, rescaled).
#
# ## 2. Positive transfer within a tree
#
# Train the probe on the first *n* training models of a population (validation and test sets
# unchanged).

# %%
smallest = min(len(splits["train"]) for splits in banks.values())
sizes = [n for n in (10, 25, 50, 100) if n < smallest] + [smallest]   # the demo jungle: 10, 25, 50, 100, 210

def probe_on_first(name, n):
    """The test accuracy of a probe trained on the first n training models (all of them: section 1's probe)."""
    probe = probes[name] if n == len(banks[name]["train"]) else linear_probe(banks[name]["train"][:n], banks[name]["val"])
    return probe.score(banks[name]["test"])

growth = pd.DataFrame({name: [probe_on_first(name, n) for n in sizes] for name in banks},
                      index=pd.Index(sizes, name="training models"))
growth

# %%
figure = go.Figure([go.Scatter(x=sizes, y=growth[name], mode="lines+markers", name=name) for name in growth])
figure.add_hline(y=0.5, line_dash="dash", annotation_text="chance")
figure.update_layout(title="More models of the same tree help; more random-init models do not",
                     xaxis_title="training models", xaxis_type="log", yaxis_title="test mean binary accuracy",
                     yaxis_range=[0.4, 1.05], template="plotly_white", height=400)
figure

# %% [markdown]
# ## 3. Negative transfer: mixing in other trees
#
# Keep 50 models of one tree and add *k* models of another population (same architecture, same
# label vocabulary) to the training set. The probe is always tested on the first tree's test
# models.

# %%
kept = min(50, smallest)
added = [0] + [k for k in (25, 50, 100) if k < smallest] + [smallest]   # the demo jungle: 0, 25, 50, 100, 210
pairs = [(target, other) for target in trees for other in trees if other != target]
pairs += [(target, "forest") for target in trees if forest_trees]
mixing = {}
for target, other in pairs:
    mixing[f"{target} + {other}"] = [
        growth.loc[kept, target] if k == 0 else   # nothing added: the probe of section 2
        linear_probe(mix(banks[target]["train"][:kept], banks[other]["train"][:k]), banks[target]["val"]).score(banks[target]["test"])
        for k in added]
mixing = pd.DataFrame(mixing, index=pd.Index(added, name=f"models of the other population added to {kept}"))
drops = mixing.iloc[0] - mixing.iloc[-1]
print(f"adding every model of the other population costs {drops.mean():.3f} test accuracy on average")
mixing

# %%
figure = go.Figure([go.Scatter(x=added, y=mixing[column], mode="lines+markers", name=column) for column in mixing])
figure.update_layout(title=f"{kept} models of a tree, plus k models of another population",
                     xaxis_title="models of the other population added", yaxis_title="test accuracy on the first tree",
                     template="plotly_white", height=400)
figure

# %% [markdown]
# ## 4. One expert per tree vs one shared expert
#
# With all training models, one probe per tree (section 1) against one probe trained on both
# trees together. A `MixtureOfExperts` makes per-tree experts usable on a mixed population: its
# `TreeRouter` sends each test model to its tree's expert without being told the tree.

# %%
both = trees
shared = linear_probe(mix(*(banks[name]["train"] for name in both)), mix(*(banks[name]["val"] for name in both)))
two_trees = zoo.select(tree=list(both))
moe = MixtureOfExperts(TreeRouter(), expert=DenseExpert(**PROBE)).fit(two_trees, layers=LAYER)
moe_rows = {row["tree"]: row for row in moe.score_table(two_trees.select(split="test"))}
comparison = pd.DataFrame({
    "one expert per tree": {name: probes[name].score(banks[name]["test"]) for name in both},
    "one shared expert": {name: shared.score(banks[name]["test"]) for name in both},
})
comparison.loc["mean over the trees"] = comparison.mean()
print(f"mixture of experts: {moe_rows['overall']['score']:.3f} on the same test models "
      f"({moe.router_.n_trees_} trees found, {moe_rows['overall']['unrouted']} test models unrouted)")
comparison

# %% [markdown]
# ## 5. The paper's Table 1: experts at each tree's best hidden layer
#
# Sections 1-4 read one shared layer with a linear probe. The paper's Table 1 gives each tree its
# own layer (the best of a validation sweep, never the head: its rows are the class slots) and
# compares ProbeX, multi-view ProbeX, Dense and StatNN with their parameter counts. `probex jungle
# check` measures it (about five minutes: StatNN and Dense are trained) and records it in the
# zoo's `check.json`; here we show what it recorded. On Model-J ProbeX beats Dense with 25-45x
# fewer parameters. On this jungle's small layers ProbeX is as good as Dense only where the classes
# are linear in the weights, and not better; on the tree whose models start their own random heads,
# the view its role names (X^T X U) reads what Dense cannot, with a tenth of its parameters.

# %%
from probex.experiments.harness import parameter_lesson
from probex.zoo.extras import shipped_figures

recorded = shipped_figures(zoo.root).get("classifiers", {})
table1 = {}
for name, row in recorded.items():
    lesson = parameter_lesson(row)
    table1[name] = {"layer": row["layer"], "ProbeX": row["probex"], "ProbeX params": row["probex_parameters"],
                    "multi-view": row.get("multiview"), "views": row.get("multiview_views"),
                    "multi-view params": row.get("multiview_parameters"), "Dense": row["dense"],
                    "Dense params": row["dense_parameters"], "StatNN": row["statnn"],
                    "best ProbeX - Dense": lesson["margin"], "fewer parameters": lesson["fewer"]}
if not table1:
    print("this zoo has no recorded figures (check.json): `probex report ZOO` measures Table 1 on any zoo")
pd.DataFrame(table1).T

# %% [markdown]
# **What to take away.** Learning from weights works within a Model Tree and fails across
# independently initialised models (section 1); within a tree, more models help (section 2);
# models from other trees, even of the same architecture and task, make a single probe worse
# (section 3). Hence the paper's design: a router finds the trees, and each tree gets its own
# expert (section 4), which also lets each tree use the layer that suits it best.
