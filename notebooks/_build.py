"""Write the tutorial notebooks from the cell texts below: ``python notebooks/_build.py``.

The notebooks are kept as code here so that their diffs stay readable; the .ipynb files are
written without outputs (the test suite executes them: tests/notebooks/test_notebooks.py).
Edit a notebook here, run this script, and commit both.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent
SETUP = '''\
import logging
import warnings

import pandas as pd

logging.basicConfig(level=logging.WARNING)
warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", message="IProgress not found")
pd.set_option("display.precision", 3)'''


def md(text: str) -> tuple[str, str]:
    return "markdown", text.strip("\n")


def code(text: str) -> tuple[str, str]:
    return "code", text.strip("\n")


def build(name: str) -> nbformat.NotebookNode:
    """The notebook ``name`` (a key of NOTEBOOKS), without outputs."""
    notebook = new_notebook(
        cells=[new_markdown_cell(text) if kind == "markdown" else new_code_cell(text) for kind, text in NOTEBOOKS[name]],
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                  "language_info": {"name": "python"}})
    for number, cell in enumerate(notebook.cells):
        cell.id = f"cell-{number:02d}"  # stable ids: a rebuild of an unchanged notebook changes nothing
    nbformat.validate(notebook)
    return notebook


def write(name: str) -> Path:
    path = HERE / f"{name}.ipynb"
    nbformat.write(build(name), path)
    return path


# ------------------------------------------------------------------------------------------------
QUICKSTART = [
    md("""
# 01 · Quickstart: what was this model trained on?

Most public models are fine-tunes of a few base models: **Model Trees**. Within one tree, a
single layer's weights already tell what a model was fine-tuned on. In this notebook you

1. open the demo jungle that ships with `probex` and look at its trees (a dendrogram);
2. train one ProbeX expert on one tree and layer;
3. ask it what an unseen model was trained on;
4. look at the training images of an unseen text-to-image model next to what the shipped
   aligned expert reads from its weights.

Everything runs on a laptop CPU in about a minute.
"""),
    code(SETUP + '''

from probex import ModelIndex, ProbeXClassifier, TreeRouter, jungle, load_expert
from probex.figures import dendrogram_figure, image_grid_figure, training_curves_figure
from probex.experts.training import resolve_device

print("device:", resolve_device("auto"))'''),
    md("""
## 1. The demo jungle

`jungle.load()` opens the shipped jungle (about a second: it reads file headers, not weights).
Its models are small, really trained image classifiers fine-tuned from three roots, a *forest*
of classifiers trained from independent random initialisations (each is a tree of its own),
and LoRA fine-tunes of a tiny text-to-image model (`mini-sd`).
"""),
    code('''
zoo = jungle.load()
print(zoo)

forest = set(zoo.trees_with_role("forest"))   # the manifest says what each tree is for

def family(tree):
    """The forest's one-model trees are counted together."""
    return "forest (random inits)" if tree in forest else tree

pd.crosstab(pd.Series([family(r.tree) for r in zoo], name="tree"), pd.Series([r.split for r in zoo], name="split"),
            margins=True, margins_name="all")'''),
    md("""
## 2. Finding the trees

The `TreeRouter` groups models by architecture, then clusters each architecture's models on
one layer (Ward linkage) and reads the number of trees off the dendrogram. It is never told
how many trees there are. We fit it on the training models and route every other model.
"""),
    code('''
trees = zoo.trees_with_role("classifier", "aligned")   # every tree but the forest
population = zoo.select(tree=trees)
router = TreeRouter().fit(population.select(split="train"))
unseen = population.select(split=[split for split in population.splits if split != "train"])
routing_accuracy = router.score(unseen)
print(f"{router.n_trees_} trees found ({len(trees)} true trees); "
      f"routing accuracy on {len(unseen)} unseen models: {routing_accuracy:.3f}")
pd.DataFrame(router.tree_table())'''),
    code('''
dendrogram_figure(router)'''),
    md("""
## 3. Train one ProbeX expert

ProbeX passes a few learned probe vectors through one weight matrix and maps the responses to
the classes the model was fine-tuned on (12 of 24 concepts per model; each concept is one
binary output, so chance is 0.5). We use the layer the jungle's own validation sweep
recommends for the tree, and a short training run (the shipped expert trained longer).
"""),
    code('''
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
scores'''),
    code('''
training_curves_figure(expert.history_, title=f"ProbeX on {tree} / {layer}")'''),
    md("""
## 4. What was this unseen model trained on?

Take a model from the test split: the router sends it to its tree, and the tree's expert reads
its classes from the weights. The table compares the prediction with the truth.
"""),
    code('''
model = test.records[0]
(routed_tree,) = router.route(zoo.select(ids=[model.id]))
(predicted,) = expert.predict(test[[0]])
predicted, truth = set(predicted), set(model.labels)
print(f"{model.id}: routed to {routed_tree}, the cluster whose models come from {router.tree_truth_[routed_tree]}")
pd.DataFrame({"concept": sorted(predicted | truth),
              "predicted": [name in predicted for name in sorted(predicted | truth)],
              "trained on": [name in truth for name in sorted(predicted | truth)]})'''),
    md("""
## 5. Weights meet images

The text-to-image tree (`mini-sd`) ships its models' training images and an *aligned* expert
that maps weights into a text space. For a model of a concept that the expert never saw in
training, we ask for the best-matching concept names and show the images the model was
fine-tuned on. Notebook 03 tells this part of the story in full.
"""),
    code('''
aligner = load_expert(jungle.expert_dirs()["mini-sd"])
index = ModelIndex.build(aligner, zoo, splits="test_holdout")
model = index.records[0]
top = index.top_labels(model.id, k=3)
print(f"{model.id} was fine-tuned on {model.labels[0]!r}; the expert reads:")
for name, similarity in top:
    print(f"  {name:20s} cosine {similarity:.3f}")
image_grid_figure(model.images, titles=[f"image {i}" for i in range(len(model.images))],
                  title=f"{model.id}: training images ({model.labels[0]})")'''),
    md("""
Next: notebook 02 shows *why* the trees matter, 03 puts weights and words in one space,
04 runs the same steps on the real Model-J dataset and 05 on your own folder of models.
"""),
]


WHY_TREES = [
    md("""
# 02 · Why Model Trees?

The paper's motivating experiment, reproduced on the demo jungle. A *linear probe* (one linear
layer on a model's flattened weights: the `DenseExpert`) is asked which classes a model was
fine-tuned on (12 of 24 concepts; mean binary accuracy, chance 0.5). We compare:

1. **within a tree** (models fine-tuned from one shared root) vs **across a forest** of models
   trained from independent random initialisations: the *intra- vs inter-tree gap*;
2. **positive transfer**: within a tree, more models help;
3. **negative transfer**: models of *other* trees mixed into the training set hurt;
4. **one expert per tree vs one shared expert** (and the router that makes per-tree experts
   usable: a mixture of experts).

All populations are small CNNs of the same architecture, read at the same layer
(`conv2.weight`, 24 x 108), so the only difference is where their weights started from.
Every number below is measured when the notebook runs.
"""),
    code(SETUP + """

import plotly.graph_objects as go
import torch

from probex import DenseExpert, LayerBank, MixtureOfExperts, TreeRouter, jungle
from probex.figures import weight_map_figure

LAYER = "conv2.weight"
PROBE = dict(epochs=100, patience=20, seed=0)   # a short run, the best epoch kept by validation


def linear_probe(train, val):
    \"\"\"A linear probe (DenseExpert) fitted on ``train``, its epoch chosen on ``val``.\"\"\"
    return DenseExpert(**PROBE).fit(train, val=(val, None))


def mix(*banks):
    \"\"\"One LayerBank holding the models of several banks (of the same layer).\"\"\"
    return LayerBank(torch.cat([bank.X for bank in banks]), [r for bank in banks for r in bank.records], LAYER)"""),
    md("""
## The three populations

Two Model Trees (CNNs fine-tuned from a supervised root and from an attribute-trained root)
and the forest (CNNs trained from scratch, each from its own random initialisation). In the
raw weights the trees are two tight clouds; the forest is spread everywhere.
"""),
    code("""
zoo = jungle.load()
forest_trees = zoo.trees_with_role("forest")
populations = {"cnn-supervised": zoo.select(tree="cnn-supervised"),
               "cnn-attributes": zoo.select(tree="cnn-attributes"),
               "forest": zoo.select(tree=forest_trees)}
banks = {name: {split: population.bank(LAYER, split=split) for split in ("train", "val", "test")}
         for name, population in populations.items()}
pd.DataFrame({name: {split: len(bank) for split, bank in splits.items()} for name, splits in banks.items()}).T"""),
    code("""
train_all = mix(*(banks[name]["train"] for name in banks))
population_of = [name for name in banks for _ in range(len(banks[name]["train"]))]
weight_map_figure(train_all.X, {"population": population_of}, ids=train_all.ids,
                  title=f"Raw weights of {LAYER}, training models (PCA)")"""),
    md("""
## 1. The intra- vs inter-tree gap

The same linear probe, trained on 210 models and tested on 60 unseen ones: within each tree,
and on the forest.
"""),
    code("""
probes = {name: linear_probe(splits["train"], splits["val"]) for name, splits in banks.items()}
gap_table = pd.DataFrame([{"population": name, "training models": len(banks[name]["train"]),
                           "test mean binary accuracy": probe.score(banks[name]["test"])}
                          for name, probe in probes.items()]).set_index("population")
intra = gap_table.loc[["cnn-supervised", "cnn-attributes"], "test mean binary accuracy"].mean()
forest = gap_table.loc["forest", "test mean binary accuracy"]
print(f"INTRA_TREE_ACCURACY = {intra:.3f}")
print(f"FOREST_ACCURACY = {forest:.3f}")
print(f"INTRA_INTER_GAP = {intra - forest:.3f}")
gap_table"""),
    code("""
figure = go.Figure(go.Bar(x=gap_table.index, y=gap_table["test mean binary accuracy"],
                          marker_color=["#1f77b4", "#ff7f0e", "#7f7f7f"],
                          text=[f"{v:.3f}" for v in gap_table["test mean binary accuracy"]], textposition="outside"))
figure.add_hline(y=0.5, line_dash="dash", annotation_text="chance")
figure.update_layout(title="Linear probe: within a tree vs across random initialisations", template="plotly_white",
                     yaxis_title="test mean binary accuracy", yaxis_range=[0, 1.1], height=380)
figure"""),
    md("""
Within a tree the probe reads the training classes almost perfectly; across the forest it is
at chance. Models of one tree share a coordinate system (their root), so the same weight
coordinate means the same thing in every model; models trained from different random
initialisations do not (their units can be permuted, rotated, rescaled).

## 2. Positive transfer within a tree

Train the probe on the first *n* training models of a population (validation and test sets
unchanged).
"""),
    code("""
sizes = [10, 25, 50, 100, 210]

def probe_on_first(name, n):
    \"\"\"The test accuracy of a probe trained on the first n training models (all of them: section 1's probe).\"\"\"
    probe = probes[name] if n == len(banks[name]["train"]) else linear_probe(banks[name]["train"][:n], banks[name]["val"])
    return probe.score(banks[name]["test"])

growth = pd.DataFrame({name: [probe_on_first(name, n) for n in sizes] for name in banks},
                      index=pd.Index(sizes, name="training models"))
for name in ("cnn-supervised", "cnn-attributes"):
    print(f"POSITIVE_TRANSFER_{name.upper().replace('-', '_')} = {growth[name].iloc[-1] - growth[name].iloc[0]:.3f}")
growth"""),
    code("""
figure = go.Figure([go.Scatter(x=sizes, y=growth[name], mode="lines+markers", name=name) for name in growth])
figure.add_hline(y=0.5, line_dash="dash", annotation_text="chance")
figure.update_layout(title="More models of the same tree help; more random-init models do not",
                     xaxis_title="training models", xaxis_type="log", yaxis_title="test mean binary accuracy",
                     yaxis_range=[0.4, 1.05], template="plotly_white", height=400)
figure"""),
    md("""
## 3. Negative transfer: mixing in other trees

Keep 50 models of one tree and add *k* models of another population (same architecture, same
label vocabulary) to the training set. The probe is always tested on the first tree's test
models.
"""),
    code("""
kept, added = 50, [0, 25, 50, 100, 210]
pairs = [("cnn-supervised", "cnn-attributes"), ("cnn-attributes", "cnn-supervised"),
         ("cnn-supervised", "forest"), ("cnn-attributes", "forest")]
mixing = {}
for target, other in pairs:
    mixing[f"{target} + {other}"] = [
        growth.loc[kept, target] if k == 0 else   # nothing added: the probe of section 2
        linear_probe(mix(banks[target]["train"][:kept], banks[other]["train"][:k]), banks[target]["val"]).score(banks[target]["test"])
        for k in added]
mixing = pd.DataFrame(mixing, index=pd.Index(added, name=f"models of the other population added to {kept}"))
drops = mixing.iloc[0] - mixing.iloc[-1]
print(f"NEGATIVE_TRANSFER_MEAN_DROP = {drops.mean():.3f}")
mixing"""),
    code("""
figure = go.Figure([go.Scatter(x=added, y=mixing[column], mode="lines+markers", name=column) for column in mixing])
figure.update_layout(title=f"{kept} models of a tree, plus k models of another population",
                     xaxis_title="models of the other population added", yaxis_title="test accuracy on the first tree",
                     template="plotly_white", height=400)
figure"""),
    md("""
## 4. One expert per tree vs one shared expert

With all training models, one probe per tree (section 1) against one probe trained on both
trees together. A `MixtureOfExperts` makes per-tree experts usable on a mixed population: its
`TreeRouter` sends each test model to its tree's expert without being told the tree.
"""),
    code("""
both = ("cnn-supervised", "cnn-attributes")
shared = linear_probe(mix(*(banks[name]["train"] for name in both)), mix(*(banks[name]["val"] for name in both)))
two_trees = zoo.select(tree=list(both))
moe = MixtureOfExperts(TreeRouter(), expert=DenseExpert(**PROBE)).fit(two_trees, layers=LAYER)
moe_rows = {row["tree"]: row for row in moe.score_table(two_trees.select(split="test"))}
comparison = pd.DataFrame({
    "one expert per tree": {name: probes[name].score(banks[name]["test"]) for name in both},
    "one shared expert": {name: shared.score(banks[name]["test"]) for name in both},
})
comparison.loc["both trees"] = comparison.mean()
print(f"PER_TREE_ACCURACY = {comparison.loc['both trees', 'one expert per tree']:.3f}")
print(f"SHARED_ACCURACY = {comparison.loc['both trees', 'one shared expert']:.3f}")
print(f"MIXTURE_OF_EXPERTS_ACCURACY = {moe_rows['overall']['score']:.3f} "
      f"({moe.router_.n_trees_} trees found, {moe_rows['overall']['unrouted']} test models unrouted)")
comparison"""),
    md("""
**What to take away.** Learning from weights works within a Model Tree and fails across
independently initialised models (section 1); within a tree, more models help (section 2);
models from other trees, even of the same architecture and task, make a single probe worse
(section 3). Hence the paper's design: a router finds the trees, and each tree gets its own
expert (section 4), which also lets each tree use the layer that suits it best.
"""),
]


LANGUAGE = [
    md("""
# 03 · Weights meet language

The `mini-sd` tree holds 1,600 LoRA fine-tunes of a tiny text-to-image model, each on one
procedural concept ("a purple heart") with its training images. An **aligned** ProbeX expert
maps a model's weights into the embedding space of a text encoder (MiniLM, bundled and
offline), trained with a CLIP-like loss over the class prompts. Because the text side is a map
of *any* text's embedding, the expert can name concepts it never saw in training.

You will see: the held-out concepts, zero-shot classification, the paper's ReLU ablation, the
atlas of models and words (UMAP), prompt search with the models' images, retrieval and
one-class classification. Every figure comes with its chance level.
"""),
    code(SETUP + """

import numpy as np
import plotly.graph_objects as go
from IPython.display import display

from probex import ModelIndex, ProbeXAligner, build_atlas, jungle, load_expert
from probex.experts.aligner import names_of
from probex.experiments.metrics import retrieval_precision_at_k
from probex.figures import atlas_figure, image_grid_figure, training_curves_figure
from probex.experiments.harness import alignment_figures, banks_for, chance_levels"""),
    md("""
## 1. Training concepts and held-out concepts

The `train`, `val` and `test` splits share the training concepts; `val_holdout` and
`test_holdout` hold models of concepts that no expert sees in training.
"""),
    code("""
zoo = jungle.load()
tree_zoo = zoo.select(tree="mini-sd")
splits = ("train", "test", "val_holdout", "test_holdout")
training = sorted({record.labels[0] for record in tree_zoo.select(split="train")})
held_out = sorted({record.labels[0] for record in tree_zoo.select(split="test_holdout")})
print(f"{len(training)} training concepts, {len(held_out)} held-out concepts")
print("held out:", ", ".join(held_out))
pd.Series({split: len(tree_zoo.select(split=split)) for split in tree_zoo.splits}, name="models")"""),
    md("""
## 2. The shipped aligned expert

`jungle.expert_dirs()["mini-sd"]` is the expert the jungle was shipped with (two layers,
trained with the build's validation). `alignment_figures` measures every use of its space on
models it never saw: in-distribution top-1 (test models, training concepts), zero-shot top-1
(held-out models, held-out concepts), kNN, one-class ROC-AUC, retrieval and prompt search.
"""),
    code("""
shipped = load_expert(jungle.expert_dirs()["mini-sd"])

shipped_banks = banks_for(tree_zoo, shipped.layers_, splits)
chance = chance_levels(len(training), len(held_out))
results = {"shipped (" + " + ".join(shipped.layers_) + ")": alignment_figures(shipped, shipped_banks, held_out)}
pd.DataFrame({**results, "chance": chance}).T"""),
    md("""
## 3. Train your own, and the ReLU ablation

One layer (the jungle's recommended one), a small expert (32 probes) and a short run, so that
it trains in seconds on a CPU. The paper's ablation removes the non-linearity between the
probe responses and the encoder (`activation="none"`, the linear ProbeX): zero-shot accuracy
drops sharply without it.
"""),
    code("""
from probex.experiments.metrics import knn_accuracy

layer = jungle.recommended_layers()["mini-sd"]
layer_banks = banks_for(tree_zoo, [layer], splits)
val_holdout = (layer_banks["val_holdout"], None)   # the best epoch is chosen on held-out concepts
test_names = names_of(layer_banks["test"][0].labels)
train_names = names_of(layer_banks["train"][0].labels)
aligners = {}
for activation in ("relu", "none"):
    aligner = ProbeXAligner(activation=activation, n_probes=32, proj_dim=32, rep_dim=64, epochs=80, patience=10,
                            seed=0).fit(layer_banks["train"], val=val_holdout)
    aligners[activation] = aligner
    results[f"{layer}, activation={activation}"] = {
        "in_distribution": aligner.score(layer_banks["test"], candidates=training),
        "zero_shot": aligner.score(layer_banks["test_holdout"], candidates=held_out),
        "knn": knn_accuracy(aligner.encode(layer_banks["train"]), train_names, aligner.encode(layer_banks["test"]), test_names),
    }
    print(f"ZERO_SHOT_{activation.upper()} = {results[f'{layer}, activation={activation}']['zero_shot']:.3f}")
pd.DataFrame({**results, "chance": chance}).T[["in_distribution", "zero_shot", "knn"]]"""),
    code("""
training_curves_figure(aligners["relu"].history_, title=f"ProbeX aligner on {layer} (validation: zero-shot on val_holdout)")"""),
    md("""
## 4. Zero-shot: naming concepts never seen in training

Each held-out model is matched against the held-out concept names only (chance
1/16). Below: the accuracy per held-out concept for the shipped expert.
"""),
    code("""
test_holdout = shipped_banks["test_holdout"]
truth = names_of(test_holdout[0].labels)
predicted = shipped.zero_shot(test_holdout, held_out)
per_concept = (pd.DataFrame({"concept": truth, "correct": np.asarray(truth) == np.asarray(predicted)})
               .groupby("concept")["correct"].mean().sort_values())
figure = go.Figure(go.Bar(x=per_concept.index, y=per_concept.values, marker_color="#4c78a8"))
figure.add_hline(y=1 / len(held_out), line_dash="dash", annotation_text="chance")
figure.update_layout(title="Zero-shot top-1 per held-out concept (shipped expert, test_holdout)",
                     yaxis_title="accuracy", yaxis_range=[0, 1.05], template="plotly_white", height=380)
figure"""),
    md("""
## 5. The atlas: models and words in one map

`build_atlas` projects the models' embeddings and the concept names (as text anchors) together
with UMAP (cosine). A model lands near the words that describe it; prompts are placed on the
same map without refitting.
"""),
    code("""
index = ModelIndex.build(shipped, zoo, splits=["test", "test_holdout"])
atlas = build_atlas(index).with_prompts(["a purple heart", "something green and round"])
atlas_figure(atlas, color="label", show_anchor_text=False)"""),
    md("""
## 6. Prompt search, with the images the models were trained on

`index.search(prompt)` ranks the indexed models by cosine similarity to the prompt. Below: the
best matches for a held-out concept, and the first training image of each.
"""),
    code("""
prompt = f"a {held_out[0]}"
hits = index.search(prompt, k=6)
display(pd.DataFrame([{"rank": hit.rank, "model": hit.model_id, "split": hit.split, "trained on": ", ".join(hit.labels),
                       "cosine": hit.score} for hit in hits]))
image_grid_figure([hit.images[0] for hit in hits], titles=[f"{hit.rank}. {hit.labels[0]}" for hit in hits],
                  columns=6, title=f"prompt: {prompt!r}")"""),
    md("""
## 7. Retrieval and one-class classification

Retrieval: for each held-out model, is its nearest other model of the same concept? In the
expert's space versus on the raw (merged LoRA) weights of the same layer. One-class
classification (ROC-AUC) asks whether a model of a concept can be told from the others using
only models of that concept (kNN and Ledoit-Wolf); see the table in section 2.
"""),
    code("""
held_banks = [layer_banks["val_holdout"][0], layer_banks["test_holdout"][0]]
held_names = np.asarray(names_of(held_banks[0].labels) + names_of(held_banks[1].labels))
raw = np.concatenate([bank.X.float().reshape(len(bank), -1).numpy() for bank in held_banks])
embedded = np.concatenate([aligners["relu"].encode([bank]) for bank in held_banks])
pd.DataFrame({"retrieval precision@1": {
    "raw weights": retrieval_precision_at_k(raw, held_names, k=1),
    "ProbeX aligner space": retrieval_precision_at_k(embedded, held_names, k=1),
    "chance": 1 / len(held_out)}})"""),
]


MODELJ = [
    md("""
# 04 · Model-J on the Hub

The paper's dataset, Model-J, lives on the Hugging Face Hub: one repo per discriminative model
(`ProbeX/Model-J__MAE__model_idx_0929`, ...) and one repo per generative subset
(`ProbeX/Model-J__SD_200`). With `probex` you download a subset, or only the layers you need
(HTTP range requests: one layer of a file instead of the whole file), sweep the layers on a
GPU, and rebuild the paper's tables. (On the demo jungle's tiny layers the Dense baseline is
small; on Model-J's 768 x 768 layers it is the one with ~30x the parameters.)

This notebook first tries the Hub and looks for a GPU. **Where either is missing it says so
and runs the same steps on the demo jungle**, so it runs end to end anywhere. (The test suite
runs both paths: offline, and online against a small fake Hub on this machine.) For reference,
the paper reports on Model-J (real models): ProbeX 0.842 / 0.705 / 0.765 / 0.885 mean binary
accuracy on ResNet / DINO / MAE / Sup.ViT against Dense 0.713 / 0.614 / 0.666 / 0.663 with
about 30x the parameters; on SD_200, in-distribution 0.973 and zero-shot 0.898 (0.564 without
the ReLU); router accuracy 100%.
"""),
    code(SETUP + """

import tempfile
from pathlib import Path

from probex import ModelZoo, TreeRouter, download_modelj, jungle, sweep_layers
from probex.errors import HubUnavailableError
from probex.zoo.hub import DownloadIncompleteError
from probex.figures import layer_sweep_figure
from probex.experts.training import resolve_device

work = Path(tempfile.mkdtemp(prefix="modelj-"))"""),
    md("""
## 1. Where are we: a GPU? the Hub?
"""),
    code("""
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
    print(f"(probex says: {error})")"""),
    code("""
if modelj is not None:   # the real data
    zoo = ModelZoo.open(modelj)
    tree_zoo, candidate_layers, task = zoo, None, "align"
else:                    # the demo jungle's text-to-image tree, its LoRA query projections
    zoo = jungle.load()
    tree_zoo, candidate_layers, task = zoo.select(tree="mini-sd"), r"attn\\.to_q$", "align"
print(tree_zoo)"""),
    md("""
## 2. Layer-selective banks

`zoo.bank(layer, split)` reads only that layer's bytes from every weight file (LoRA pairs
merged as B @ A) and caches the stacked array on disk; experts train from it.
"""),
    code("""
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
pd.DataFrame([{"layer": info.name, "d_W x d_H": f"{info.shape[0]}x{info.shape[1]}", "kind": info.kind} for info in catalog])"""),
    md("""
## 3. Sweep the layers

The best layer differs per tree, so the paper trains one expert per layer and keeps the best by
validation. `sweep_layers` does that; with `results=...` every finished layer is appended to a
file, so an interrupted sweep resumes. On a GPU use the experts' full settings; here a small,
short run per layer.
"""),
    code("""
settings = {"epochs": 500, "patience": 50} if device.type == "cuda" else \\
           {"epochs": 20, "patience": 5, "n_probes": 32, "proj_dim": 32, "rep_dim": 64}
sweep = sweep_layers(tree_zoo, task=task, layers=candidate_layers, params={**settings, "device": "auto"},
                     results=work / "sweep.jsonl")
zero_shot = "n/a" if sweep.best.zero_shot_test is None else f"{sweep.best.zero_shot_test:.3f}"
print(f"best layer by validation: {sweep.best.layer} (val {sweep.best.val:.3f}, zero-shot test {zero_shot})")
sweep.to_frame()[["layer", "shape", "val", "test", "zero_shot_test", "n_parameters", "seconds", "best"]]"""),
    code("""
layer_sweep_figure(sweep.scores, title=f"Layer sweep ({task}): validation per layer")"""),
    md("""
## 4. The paper's tables, in miniature

Training-class prediction per tree (the paper's first table): ProbeX (the jungle's shipped
expert at its recommended layer) against the Dense baseline (trained now on the same layer),
with both parameter counts, on the test models; and the router's accuracy on models it never
saw. On the real data these rows are ResNet, DINO, MAE and Sup.ViT. (StatNN, the third
baseline, takes minutes on a CPU: `probex jungle check` measures it.)
"""),
    code("""
from probex import DenseExpert, load_expert

demo = jungle.load()
recommended, experts = jungle.recommended_layers(), jungle.expert_dirs()
rows = {}
for tree in ("cnn-supervised", "cnn-attributes", "mixer-supervised"):
    tree_models = demo.select(tree=tree)
    train, val, test = (tree_models.bank(recommended[tree], split=split) for split in ("train", "val", "test"))
    probex_expert = load_expert(experts[tree])
    dense = DenseExpert(epochs=100, patience=20, seed=0).fit(train, val=(val, None))
    rows[tree] = {"layer": recommended[tree], "ProbeX": probex_expert.score(test), "ProbeX parameters": probex_expert.n_parameters_,
                  "Dense": dense.score(test), "Dense parameters": dense.n_parameters_, "chance": 0.5, "test models": len(test)}
pd.DataFrame(rows).T"""),
    code("""
population = demo.select(tree=demo.trees_with_role("classifier", "aligned"))
router = TreeRouter().fit(population.select(split="train"))
unseen = population.select(split=[split for split in population.splits if split != "train"])
print(f"router: {router.n_trees_} trees found; accuracy on {len(unseen)} unseen models: {router.score(unseen):.3f}")"""),
    code("""
import shutil

shutil.rmtree(work)   # this notebook's temporary folder (downloads, the sweep's results file)"""),
]


OWN_ZOO = [
    md("""
# 05 · Bring your own zoo

You have a folder of fine-tunes of one base model (here: LoRA fine-tunes of a text-to-image
model, each with its training images) and want to know what each was trained on, find the
ones that match a prompt, and place a new file among them. The steps: **open** the folder,
**route** its models (which Model Tree are they from?), **train** an expert on the models whose
concepts you know, and **search**.

So that this notebook runs anywhere, it first builds such a folder in a temporary directory by
copying a few models out of the demo jungle: plain safetensors files in the Model-J LoRA
layout (`{split}/model_xxx/pytorch_lora_weights.safetensors` + `training_images/`), opened
with no manifest.
"""),
    code(SETUP + """

import shutil
import tempfile
from pathlib import Path

from IPython.display import display

from probex import ModelIndex, ModelZoo, ProbeXAligner, TreeRouter, jungle, load_expert
from probex.errors import HubUnavailableError
from probex.figures import dendrogram_figure, image_grid_figure"""),
    md("""
## 1. A folder of models

Twelve concepts, a handful of models each, split into train / val / test; plus four models of
*other* concepts that we keep aside as "new files" to identify later.
"""),
    code("""
source = jungle.load().select(tree="mini-sd")
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
pd.DataFrame([{"layer": info.name, "shape": info.shape, "kind": info.kind} for info in my_zoo.catalog()])"""),
    md("""
## 2. Route: which Model Tree are these models from?

Clustering the folder on its own finds how many trees it holds (here one: all are fine-tunes
of one base model). A router fitted on a larger population (the demo jungle) also tells
*which* known tree they belong to, and answers `None` for a model of a tree it has never seen.
"""),
    code("""
own_router = TreeRouter().fit(my_zoo)
print(f"trees in the folder: {own_router.n_trees_}")
dendrogram_figure(own_router, title="My folder's models")"""),
    code("""
demo = jungle.load()
known = demo.select(tree=demo.trees_with_role("classifier", "aligned"), split="train")
jungle_router = TreeRouter().fit(known)
routed = pd.Series(jungle_router.route(my_zoo)).map(lambda tree: jungle_router.tree_truth_.get(tree, "unknown"))
print("my models routed to the jungle's trees:")
routed.value_counts()"""),
    md("""
## 3. Train an expert on the models you know

An aligned ProbeX expert on the layer the jungle's sweep recommends for this kind of model,
trained on the folder's `train` split (epoch chosen on `val`), tested on its `test` split. The
shipped expert of the jungle's `mini-sd` tree reads these models too, since they are fine-tunes
of the same base model: its score is the reference.
"""),
    code("""
layer = jungle.recommended_layers()["mini-sd"]
train, val, test = (my_zoo.bank(layer, split=split) for split in ("train", "val", "test"))
expert = ProbeXAligner(n_probes=32, proj_dim=32, rep_dim=64, epochs=80, patience=10, seed=0).fit(train, val=(val, None))
shipped = load_expert(jungle.expert_dirs()["mini-sd"])
shipped_test = [my_zoo.bank(name, split="test") for name in shipped.layers_]
pd.DataFrame({"test top-1 over my 12 concepts": {
    f"my expert ({len(train)} models, {layer})": expert.score(test, candidates=concepts),
    "the jungle's shipped mini-sd expert": shipped.score(shipped_test, candidates=concepts),
    "chance": 1 / len(concepts)}})"""),
    md("""
## 4. Search

`ModelIndex.build` encodes every model of the folder once; a prompt is then one matrix
product. `top_labels` reads files that are not in the folder: four models of concepts none of the
folder's models was trained on, read by the shipped expert against every concept name the
jungle knows.
"""),
    code("""
index = ModelIndex.build(expert, my_zoo)
prompt = f"a {concepts[3]}"
hits = index.search(prompt, k=5)
display(pd.DataFrame([{"rank": h.rank, "model": h.model_id, "split": h.split, "trained on": ", ".join(h.labels),
                       "cosine": h.score} for h in hits]))
image_grid_figure([h.images[0] for h in hits], titles=[f"{h.rank}. {h.labels[0]}" for h in hits], columns=5,
                  title=f"my folder, prompt {prompt!r}")"""),
    code("""
shipped_index = ModelIndex.build(shipped, my_zoo)
vocabulary = demo.select(tree="mini-sd").label_names   # every concept name the jungle knows
rows = []
for record in new_models:
    (best, similarity), *_ = shipped_index.top_labels(record.path, candidates=vocabulary, k=1)
    rows.append({"file": f"{record.split}/{record.path.parent.name}", "read as": best, "cosine": similarity,
                 "trained on (the truth)": record.labels[0]})
pd.DataFrame(rows)"""),
    md("""
## 5. Your models on the Hub

For a list of Hub repos (fine-tunes of one base model), `download_repos` fetches them in the
Hugging Face cache layout, and with `layers=[...]` only those tensors (HTTP range requests),
then `ModelZoo.open` reads the folder as above. Offline it fails at once with a message that
says what to do instead.
"""),
    code("""
from probex import download_repos

try:
    # one Model-J fine-tune as an example; list your own repos here (layers=[...] fetches only those tensors)
    hub_folder = download_repos(["ProbeX/Model-J__MAE__model_idx_0929"], Path(tempfile.mkdtemp()) / "hub")
    print("downloaded to", hub_folder)
except HubUnavailableError as error:
    print("The Hub is not reachable from here, so this step is skipped:")
    print(error)"""),
    code("""
shutil.rmtree(folder)   # the temporary folder of this notebook"""),
]


NOTEBOOKS = {
    "01_quickstart": QUICKSTART,
    "02_why_model_trees": WHY_TREES,
    "03_weights_meet_language": LANGUAGE,
    "04_model_j_on_the_hub": MODELJ,
    "05_bring_your_own_zoo": OWN_ZOO,
}


def main(names: list[str]) -> None:
    for name in NOTEBOOKS:
        if names and name not in names:
            continue
        print(write(name))


if __name__ == "__main__":
    main(sys.argv[1:])
