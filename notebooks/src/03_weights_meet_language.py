# %% [markdown]
# # 03 · Weights meet language
#
# The `mini-sd` tree holds 1,600 LoRA fine-tunes of a tiny text-to-image model, each on one
# procedural concept ("a purple heart") with its training images. An **aligned** ProbeX expert
# maps a model's weights into the embedding space of a text encoder (MiniLM, bundled and
# offline), trained with a CLIP-like loss over the class prompts. Because the text side is a map
# of *any* text's embedding, the expert can name concepts it never saw in training.
#
# You will see: the held-out concepts, zero-shot classification, the paper's ReLU ablation, the
# atlas of models and words (UMAP), prompt search with the models' images, the whole zoo
# answering a prompt (classifier trees too), retrieval and one-class classification. Every
# figure comes with its chance level.
#
# The notebook runs on any zoo with a tree aligned with text (a tree whose role is `aligned`:
# labelled models plus held-out splits of concepts never seen in training). Set
# `PROBEX_NOTEBOOK_ZOO` to its folder, or edit the cell below; the tree is found by its role.

# %% tags=["parameters"]
import os

ZOO = os.environ.get("PROBEX_NOTEBOOK_ZOO")   # a zoo folder of your own; unset: the demo jungle

# %%
import logging
import warnings

import pandas as pd

logging.basicConfig(level=logging.WARNING)
warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", message="IProgress not found")
pd.set_option("display.precision", 3)

import numpy as np
import plotly.graph_objects as go
from IPython.display import display

from probex import ModelIndex, ModelZoo, ProbeXAligner, build_atlas, jungle, load_expert, sweep_layers
from probex.experts.aligner import names_of
from probex.experiments.metrics import retrieval_precision_at_k
from probex.figures import atlas_figure, image_grid_figure, training_curves_figure
from probex.experiments.harness import aligned_splits, alignment_figures, banks_for, chance_levels
from probex.zoo.extras import expert_dirs, recommended_layers

SMALL = dict(n_probes=32, proj_dim=32, rep_dim=64, epochs=80, patience=10, seed=0)   # trains in seconds on a CPU

# %% [markdown]
# ## 1. Training concepts and held-out concepts
#
# The `train`, `val` and `test` splits share the training concepts; `val_holdout` and
# `test_holdout` hold models of concepts that no expert sees in training. (The zoo's roles name
# the aligned tree and its held-out splits.)

# %%
zoo = ModelZoo.open(ZOO) if ZOO else jungle.load()
aligned = zoo.trees_with_role("aligned")
if not aligned:
    raise ValueError(f"{zoo.root}: no tree aligned with text here (labelled models and held-out splits, "
                     f"e.g. val_holdout and test_holdout); trees: {', '.join(zoo.trees)}")
tree = aligned[0]                                   # the demo jungle's mini-sd
tree_zoo = zoo.select(tree=tree)
splits = aligned_splits(tree_zoo)                   # train, test, held-out validation, held-out test
held_val, held_test = splits[2], splits[3]
training = sorted({record.labels[0] for record in tree_zoo.select(split="train")})
held_out = sorted({record.labels[0] for record in tree_zoo.select(split=held_test)})
print(f"tree {tree!r}: held-out splits {held_val} and {held_test}")
print(f"{len(training)} training concepts, {len(held_out)} held-out concepts")
print("held out:", ", ".join(held_out))
pd.Series({split: len(tree_zoo.select(split=split)) for split in tree_zoo.splits}, name="models")

# %% [markdown]
# ## 2. The shipped aligned expert
#
# `expert_dirs(zoo.root)[tree]` is the expert the zoo was shipped with (the demo jungle's: two
# layers, trained with the build's validation). `alignment_figures` measures every use of its
# space on models it never saw: in-distribution top-1 (test models, training concepts), zero-shot
# top-1 (held-out models, held-out concepts), kNN, one-class ROC-AUC, retrieval and prompt search.
# A zoo that ships no expert gets one trained now, on the zoo's recommended layer; a zoo that
# recommends none gets a short layer sweep first (the best layer by validation).

# %%
layer = recommended_layers(zoo.root).get(tree)
if layer is None:
    sweep = sweep_layers(tree_zoo, task="align", params={**SMALL, "epochs": 20, "patience": 5})
    layer = sweep.best.layer
    print(f"This zoo recommends no layer for {tree!r}: a short sweep of {len(sweep.scores)} layers chose {layer}.")
source = "shipped" if tree in expert_dirs(zoo.root) else "trained now"
if source == "shipped":
    shipped = load_expert(expert_dirs(zoo.root)[tree])
else:
    print(f"This zoo ships no expert for {tree!r}: one is trained now on {layer} (a short run).")
    trained_banks = banks_for(tree_zoo, [layer], splits)
    shipped = ProbeXAligner(**SMALL).fit(trained_banks["train"], val=(trained_banks[held_val], None))

shipped_banks = banks_for(tree_zoo, shipped.layers_, splits)
chance = chance_levels(len(training), len(held_out))
results = {f"{source} (" + " + ".join(shipped.layers_) + ")": alignment_figures(shipped, shipped_banks, held_out,
                                                                               (held_val, held_test))}
pd.DataFrame({**results, "chance": chance}).T

# %% [markdown]
# ## 3. Train your own, and the ReLU ablation
#
# One layer (the zoo's recommended one), a small expert (32 probes) and a short run, so that
# it trains in seconds on a CPU. The paper's ablation removes the non-linearity between the
# probe responses and the encoder (`activation="none"`, the linear ProbeX): zero-shot accuracy
# drops sharply without it.

# %%
from probex.experiments.metrics import knn_accuracy

layer_banks = banks_for(tree_zoo, [layer], splits)
val_holdout = (layer_banks[held_val], None)   # the best epoch is chosen on held-out concepts
test_names = names_of(layer_banks["test"][0].labels)
train_names = names_of(layer_banks["train"][0].labels)
aligners = {}
for activation in ("relu", "none"):
    aligner = ProbeXAligner(activation=activation, **SMALL).fit(layer_banks["train"], val=val_holdout)
    aligners[activation] = aligner
    results[f"{layer}, activation={activation}"] = {
        "in_distribution": aligner.score(layer_banks["test"], candidates=training),
        "zero_shot": aligner.score(layer_banks[held_test], candidates=held_out),
        "knn": knn_accuracy(aligner.encode(layer_banks["train"]), train_names, aligner.encode(layer_banks["test"]), test_names),
    }
pd.DataFrame({**results, "chance": chance}).T[["in_distribution", "zero_shot", "knn"]]

# %%
training_curves_figure(aligners["relu"].history_, title=f"ProbeX aligner on {layer} (validation: zero-shot on {held_val})")

# %% [markdown]
# ## 4. Zero-shot: naming concepts never seen in training
#
# Each held-out model is matched against the held-out concept names only (chance
# 1/16). Below: the accuracy per held-out concept for the shipped expert.

# %%
test_holdout = shipped_banks[held_test]
truth = names_of(test_holdout[0].labels)
predicted = shipped.zero_shot(test_holdout, held_out)
per_concept = (pd.DataFrame({"concept": truth, "correct": np.asarray(truth) == np.asarray(predicted)})
               .groupby("concept")["correct"].mean().sort_values())
figure = go.Figure(go.Bar(x=per_concept.index, y=per_concept.values, marker_color="#4c78a8"))
figure.add_hline(y=1 / len(held_out), line_dash="dash", annotation_text="chance")
figure.update_layout(title=f"Zero-shot top-1 per held-out concept (shipped expert, {held_test})",
                     yaxis_title="accuracy", yaxis_range=[0, 1.05], template="plotly_white", height=380)
figure

# %% [markdown]
# ## 5. The atlas: models and words in one map
#
# `build_atlas` projects the models' embeddings and the concept names (as text anchors) together
# with UMAP (cosine). A model lands near the words that describe it; prompts are placed on the
# same map without refitting.

# %%
index = ModelIndex.build(shipped, zoo, splits=["test", held_test])
atlas = build_atlas(index).with_prompts(["a purple heart", "something green and round"])
atlas_figure(atlas, color="label", show_anchor_text=False)

# %% [markdown]
# ## 6. Prompt search, with the images the models were trained on
#
# `index.search(prompt)` ranks the indexed models by cosine similarity to the prompt. Below: the
# best matches for a held-out concept, and the first training image of each.

# %%
prompt = f"a {held_out[0]}"
hits = index.search(prompt, k=6)
display(pd.DataFrame([{"rank": hit.rank, "model": hit.model_id, "split": hit.split, "trained on": ", ".join(hit.labels),
                       "cosine": hit.score} for hit in hits]))
image_grid_figure([hit.images[0] for hit in hits], titles=[f"{hit.rank}. {hit.labels[0]}" for hit in hits],
                  columns=6, title=f"prompt: {prompt!r}")

# %% [markdown]
# ## 7. The whole zoo answers a prompt
#
# `ZooIndex` asks every tree that has an expert, mixture-of-experts style: the aligned tree
# through its space (as above), each classifier tree by reading the prompt as its nearest class
# names and asking its expert which models were trained on them. Every hit carries one calibrated
# score, the probability that the model was fine-tuned on what the prompt names, so hits of
# different trees can be merged, and says why it matched. A prompt that no tree knows well is a
# *weak match*, and the note says what each tree read it as.

# %%
from probex.language.zoo_search import ZooIndex

zoo_index = ZooIndex.from_zoo(zoo, experts={tree: shipped})   # the zoo's shipped experts, and this aligned one
classes = [name for name in zoo.select(tree=zoo.trees_with_role("classifier")).label_names]
concept = classes[0] if classes else held_out[0]             # a concept the classifier trees know, when there are some
whole = zoo_index.search(f"a {concept}", k=12)
for answer in whole.answering:
    print(f"{answer.tree}: {answer.note}")
print(f"{len(whole.trees) - len(whole.answering)} tree(s) without an expert cannot answer")
display(whole.to_frame()[["rank", "tree", "model", "score", "percentile", "why", "concepts"]])
dog = zoo_index.search("a dog", k=5)
print(f"'a dog': weak match {dog.weak}; {dog.note}")

# %% [markdown]
# ## 8. Retrieval and one-class classification
#
# Retrieval: for each held-out model, is its nearest other model of the same concept? In the
# expert's space versus on the raw (merged LoRA) weights of the same layer. One-class
# classification (ROC-AUC) asks whether a model of a concept can be told from the others using
# only models of that concept (kNN and Ledoit-Wolf); see the table in section 2.

# %%
held_banks = [layer_banks[held_val][0], layer_banks[held_test][0]]
held_names = np.asarray(names_of(held_banks[0].labels) + names_of(held_banks[1].labels))
raw = np.concatenate([bank.X.float().reshape(len(bank), -1).numpy() for bank in held_banks])
embedded = np.concatenate([aligners["relu"].encode([bank]) for bank in held_banks])
pd.DataFrame({"retrieval precision@1": {
    "raw weights": retrieval_precision_at_k(raw, held_names, k=1),
    "ProbeX aligner space": retrieval_precision_at_k(embedded, held_names, k=1),
    "chance": 1 / len(held_out)}})
