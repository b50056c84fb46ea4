"""What ProbeX says about one model, drawn the same way on its own page and in Inspect (an upload).

Four sections: its Model Tree (with honest caveats: a model near its tree's centre may be the
root, one far from it is unlike what the expert was trained on, one beyond every radius names
its nearest tree), what it was fine-tuned on (predicted classes, or top zero-shot labels with
calibrated scores), its nearest models, and a downloadable model-card draft.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import streamlit as st

from explorer import state
from explorer.text import plain, plain_error
from explorer.widgets import held_out_badge, image_grid, model_link
from probex.errors import ProbeXError
from probex.language.model_card import ModelCardFacts, Neighbour, draft_model_card

#: Classes predicted with at least this probability are "predicted training classes".
THRESHOLD = 0.5
FAR_SHARE = "99%"  # probex.trees.placement.FAR_PERCENTILE, as people read it


@dataclass
class Findings:
    """What the sections found, gathered into a model-card draft."""

    tree: Optional[str] = None
    predictions: list = field(default_factory=list)
    kind: str = "predicted training classes"
    confidence: str = "probability"
    neighbours: list = field(default_factory=list)
    neighbour_score: str = "similarity"
    routing: str = ""
    expert: str = ""
    caveats: list = field(default_factory=list)


def describe(path: str, zoo: Any, model: Any, true_labels: Optional[list[str]] = None, key: str = "model") -> None:
    """Draw the four sections for ``model`` (a one-model ModelZoo; its record may belong to ``zoo``)."""
    from probex.trees.placement import place

    record = model.records[0]
    fitted = state.current_router(path)
    names = state.tree_names(path)
    findings = Findings()
    try:
        placement = place(fitted.router, model, state.tree_spread(path))[0]
    except ProbeXError as error:
        st.error(f"{plain(record.id)}: cannot be routed: {plain_error(error)}")
        return
    st.subheader("Its Model Tree")
    if placement.nearest is None:
        st.error(f"{plain(record.id)}: **wrong architecture**: no tree of this population has models with these "
                 "layers and shapes, so no expert here can read it.")
        return
    nearest = names.labels.get(placement.nearest, placement.nearest)
    if placement.tree is None:
        st.warning(f"**Unknown tree.** It lies {placement.distance:.3g} from the nearest tree centre, that of "
                   f"**{plain(nearest)}**, whose models lie within {placement.radius:.3g} of it. It was probably "
                   "fine-tuned from another root (like the demo jungle's forest of independently initialised "
                   "models), so no expert here was trained on models like it and none is asked.")
        findings.caveats.append(f"It belongs to no known tree: the nearest, {nearest}, lies {placement.distance:.3g} "
                                f"away, beyond its radius {placement.radius:.3g}; nothing was predicted.")
        model_card(path, zoo, record, None, findings, key)
        return
    share = placement.percentile
    findings.routing = f"distance {placement.distance:.3g} to the tree's centre; its models lie within {placement.radius:.3g}"
    st.success(f"It joins **{plain(nearest)}**: distance {placement.distance:.3g} to its centre, closer than "
               f"{1 - share:.0%} of the tree's own models (they all lie within {placement.radius:.3g}).")
    tree = fitted.router.tree_truth_.get(placement.tree) or nearest
    if is_known_root(path, tree, model, placement):
        findings.caveats.append(f"These are the weights of the {tree} tree's root, not a fine-tune: the expert was "
                                "trained on fine-tuned models and predicts confident classes even for an untuned root, "
                                "so the predictions below say nothing about what it was trained on.")
    elif placement.root_like:
        findings.caveats.append("It lies closer to its tree's centre than almost every fine-tuned model: it may be the "
                                "tree's root, or barely fine-tuned. The expert was trained on fine-tuned models and "
                                "predicts confident classes even for an untuned root; read them with care.")
    if placement.far:
        findings.caveats.append(f"It lies farther from its tree's centre than {FAR_SHARE} of the tree's own models: it is "
                                "unlike what the expert was trained on, so its predictions are less reliable.")
    for caveat in findings.caveats:
        st.warning(plain(caveat))
    findings.tree = tree
    predict(path, zoo, model, record, tree, true_labels, findings)
    model_card(path, zoo, record, tree, findings, key)



def is_known_root(path: str, tree: str, model: Any, placement: Any) -> bool:
    """Whether the model has the weights of its tree's root, where the population ships roots (as the demo
    jungle does: ``roots/<tree>.safetensors`` beside its manifest): the layer the router reads matches to 1e-4
    of its norm."""
    from probex.zoo import ModelRecord, ModelZoo

    root = Path(state.load_zoo(path).root) / "roots" / f"{tree}.safetensors"
    if "/" in tree or not root.is_file():  # names from data never become paths unchecked
        return False
    router = state.current_router(path).router
    layer = next((a.layer for a in router.architectures_
                  if router.tree_names_.index(placement.nearest) in a.tree_indices), None)
    try:
        own = model.bank(layer, cache=False).X.reshape(-1).float()
        theirs = ModelZoo(root.parent, "roots", [ModelRecord(id=tree, path=root)]).bank(layer, cache=False).X
    except (ProbeXError, ValueError, KeyError):
        return False
    theirs = theirs.reshape(-1).float()
    return own.shape == theirs.shape and float((own - theirs).norm()) <= 1e-4 * max(float(theirs.norm()), 1e-12)


def predict(path: str, zoo: Any, model: Any, record: Any, tree: str, true_labels, findings: Findings) -> None:
    """What it was fine-tuned on (the tree's expert), then its nearest models."""
    st.subheader("What it was fine-tuned on")
    choice = state.expert_for(path, tree)
    if choice is None:
        st.info(f"No expert for {plain(tree)} yet: train one on the Experts page.")
        return
    findings.expert = f"{type(choice.expert).__name__} on {', '.join(choice.expert.layers_)}"
    st.caption(f"Expert: {plain(findings.expert)} ({plain(choice.source)}).")
    try:
        if choice.aligned:
            aligned(path, tree, choice, record, true_labels, findings)
        else:
            classified(model, choice, true_labels, findings)
            nearest_by_weights(path, zoo, model, record, findings)
    except (ProbeXError, ValueError) as error:
        st.error(f"{plain(record.id)}: the {plain(tree)} expert cannot read it: {plain_error(error)}")


def aligned(path: str, tree: str, choice: Any, record: Any, true_labels, findings: Findings) -> None:
    from probex.language.calibration import calibrated_match

    index = state.model_index(path, tree, choice.token, choice.expert)
    known = record.id in index.ids and index.records[index.ids.index(record.id)].path == record.path
    labels = index.top_labels(record.id if known else record.path, k=5)
    reference = index.reference_scores()
    seen = set(getattr(choice.expert, "classes_", []) or [])
    rows = [{"label": label, "match": float(calibrated_match(score, reference)), "cosine": score,
             "held out": label not in seen} for label, score in labels]
    findings.predictions = [(row["label"], row["match"]) for row in rows]
    findings.kind, findings.confidence = "top zero-shot labels", "match"
    st.markdown(f"Predicted concept: **{plain(labels[0][0])}**{held_out_badge(labels[0][0] not in seen)}")
    st.dataframe(rows, hide_index=True, width="stretch", column_config={
        "match": st.column_config.ProgressColumn("match", min_value=0.0, max_value=1.0, format="percent",
                                                 help="The share of real matches (models against their own concept's "
                                                      "name) that score lower."),
        "cosine": st.column_config.NumberColumn(format="%.3f")})
    if true_labels is not None:
        st.caption("Its true concept: " + ", ".join(plain(label) for label in true_labels))
    hits = index.neighbours(record.id if known else index.embed_model(record.path), k=6)
    findings.neighbours = [Neighbour(hit.model_id, hit.score, hit.labels) for hit in hits]
    nearest_grid(hits, "cosine")


def classified(model: Any, choice: Any, true_labels, findings: Findings) -> None:
    st.caption("The expert reads what fine-tuning changed in the layer; it never saw an untuned model, so even a "
               "tree's root gets confident-looking classes.")
    layers = [model.bank(layer, cache=False) for layer in choice.expert.layers_]
    probabilities = choice.expert.predict_proba(layers if len(layers) > 1 else layers[0])[0]
    order = np.argsort(-probabilities)
    classes = choice.expert.classes_
    predicted = [(classes[i], float(probabilities[i])) for i in order if probabilities[i] >= THRESHOLD]
    findings.predictions = predicted
    st.markdown("Predicted training classes: "
                + (", ".join(f"**{plain(name)}**" for name, _ in predicted) or f"none above {THRESHOLD}"))
    st.dataframe([{"class": classes[i], "probability": float(probabilities[i]),
                   **({"trained on it": classes[i] in true_labels} if true_labels is not None else {})}
                  for i in order[:15]], hide_index=True, width="stretch",
                 column_config={"probability": st.column_config.ProgressColumn(
                     "probability", min_value=0.0, max_value=1.0, format="%.3f")})


def nearest_by_weights(path: str, zoo: Any, model: Any, record: Any, findings: Findings) -> None:
    """The nearest models of its architecture by the l2 distance of the layer the router clusters on."""
    router = state.current_router(path).router
    layers = {info.name: tuple(info.shape) for info in model.catalog()}
    chosen = next((a for a in router.architectures_ if layers.get(a.layer) == tuple(a.shape)), None)
    if chosen is None:
        return
    ids = tuple(router.ids_[position] for position in chosen.positions)
    distances = state.distances_to_upload(path, chosen.layer, ids, model)
    order = [i for i in np.argsort(distances) if ids[i] != record.id][:6]
    records = {r.id: r for r in zoo.select(ids=[ids[i] for i in order]).records}
    findings.neighbours = [Neighbour(ids[i], float(distances[i]), list(records[ids[i]].labels)) for i in order]
    findings.neighbour_score = "distance"
    st.subheader("Its nearest models")
    st.caption(f"By the distance of their {plain(chosen.layer)} weights.")
    image_grid(findings.neighbours, lambda n: records[n.model_id].images,
               lambda n: f"{n.score:.3g} · {model_link(n.model_id, 32)}  \n{plain(', '.join(n.labels[:3]), 60)}"
               + ("…" if len(n.labels) > 3 else ""), per_row=6)


def nearest_grid(hits: list, score: str) -> None:
    st.subheader("Its nearest models")
    st.caption(f"In the expert's space ({score}).")
    image_grid(hits, lambda hit: hit.images,
               lambda hit: f"{hit.score:.3f} · {model_link(hit.model_id, 32)}  \n**{plain(', '.join(hit.labels), 40)}**",
               per_row=6)


def base_model_of(zoo: Any, tree: str) -> str:
    """The tree's base model: its models' most common ``base_model`` metadata, else the tree's name."""
    try:
        values = Counter(str(r.metadata.get("base_model")) for r in zoo.select(tree=tree).records
                         if r.metadata.get("base_model"))
    except (ProbeXError, ValueError):
        values = Counter()
    return values.most_common(1)[0][0] if values else tree


def model_card(path: str, zoo: Any, record: Any, tree: Optional[str], findings: Findings, key: str) -> None:
    """A model-card draft of what was found, to download (Markdown with YAML front matter)."""
    lora = any(info.kind == "lora" for info in _catalog(record))
    facts = ModelCardFacts(
        model_id=record.id, base_model=base_model_of(zoo, tree) if tree else None,
        relation="adapter" if lora else "finetune",
        tree=tree, predictions=findings.predictions, prediction_kind=findings.kind,
        confidence_name=findings.confidence, neighbours=findings.neighbours,
        neighbour_score_name=findings.neighbour_score, expert=findings.expert, routing=findings.routing,
        caveats=findings.caveats, metadata=dict(record.metadata))
    card = draft_model_card(facts)
    st.subheader("Model-card draft")
    st.caption("What the weights say about this model, as a Hugging Face model card (README.md) to check and complete.")
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", record.id)[:80] or "model"
    st.download_button("Download the model-card draft", card.encode("utf-8"), file_name=f"{name}.README.md",
                       mime="text/markdown", key=f"{key}_card", icon=":material/download:")
    with st.expander("Preview"):
        st.code(card, language="markdown")


def _catalog(record: Any) -> list:
    from probex.zoo.catalog import layer_catalog

    try:
        return layer_catalog(record.read_header())
    except (ProbeXError, OSError, ValueError):
        return []
