"""Model-card drafts for undocumented models: what ProbeX reads from the weights, in the Hub's model-card format.

Most public fine-tunes say nothing about what they were trained on; the paper's point is that
the weights tell. A draft is a Markdown file with YAML front matter, the way a Hugging Face
model card (``README.md``) starts: ``base_model`` (the tree's base model), ``base_model_relation``
(``adapter`` for a LoRA, ``finetune`` otherwise), ``tags``, and a ``probex`` block with the
predictions and the nearest documented models. The body says the same for people and says how
the draft was made, so nobody mistakes a prediction for documentation::

    facts = ModelCardFacts(model_id="my-lora", base_model="mini-sd", relation="adapter",
                           predictions=[("red star", 0.97)], prediction_kind="training classes", ...)
    text = draft_model_card(facts)            # "---\\nbase_model: ..."

Strings are written as JSON strings, which YAML reads as the same strings, so nothing a model's
name or metadata holds can break the front matter.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from probex.errors import ProbeXError

RELATIONS = ("adapter", "finetune", "merge", "quantized")


@dataclass
class Neighbour:
    """A documented model near the drafted one: its id, similarity (or distance) and known training classes."""

    model_id: str
    score: float
    labels: list[str]


@dataclass
class ModelCardFacts:
    """What a draft states. ``predictions``: (class, confidence) best first; ``prediction_kind`` names them."""

    model_id: str
    base_model: Optional[str]
    relation: str = "finetune"
    tree: Optional[str] = None
    predictions: Sequence[tuple[str, float]] = ()
    prediction_kind: str = "predicted training classes"
    confidence_name: str = "probability"
    neighbours: Sequence[Neighbour] = ()
    neighbour_score_name: str = "similarity"
    expert: str = ""
    routing: str = ""
    caveats: Sequence[str] = ()
    metadata: dict[str, Any] = field(default_factory=dict)


def draft_model_card(facts: ModelCardFacts) -> str:
    """The Markdown text of a model-card draft (YAML front matter, then the body)."""
    if facts.relation not in RELATIONS:
        raise ProbeXError(f"relation must be one of {RELATIONS}; got {facts.relation!r}")
    return front_matter(facts) + "\n" + body(facts)


def front_matter(facts: ModelCardFacts) -> str:
    """The YAML block between ``---`` lines."""
    lines = ["---"]
    if facts.base_model:
        lines.append(f"base_model: {_scalar(facts.base_model)}")
        lines.append(f"base_model_relation: {facts.relation}")
    lines += ["tags:", "- probex", "- model-card-draft", "probex:"]
    if facts.tree:
        lines.append(f"  tree: {_scalar(facts.tree)}")
    lines.append(f"  {facts.prediction_kind.replace(' ', '_')}:")
    for name, confidence in facts.predictions:
        lines.append(f"  - name: {_scalar(name)}")
        lines.append(f"    {facts.confidence_name.replace(' ', '_')}: {_scalar(round(float(confidence), 4))}")
    lines.append("  nearest_documented_models:")
    for neighbour in facts.neighbours:
        lines.append(f"  - id: {_scalar(neighbour.model_id)}")
        lines.append(f"    {facts.neighbour_score_name.replace(' ', '_')}: {_scalar(round(float(neighbour.score), 4))}")
        lines.append(f"    trained_on: [{', '.join(_scalar(label) for label in neighbour.labels)}]")
    lines.append("---")
    return "\n".join(lines) + "\n"


def body(facts: ModelCardFacts) -> str:
    """The Markdown body: what the weights say, the nearest documented models, and how this was drafted."""
    name = _markdown(facts.model_id)
    parts = [f"# {name} (draft)", "",
             "> This card was drafted by ProbeX from the model's weights alone. Every statement below is a "
             "prediction; check it before publishing.", ""]
    if facts.base_model:
        kind = "a LoRA adapter of" if facts.relation == "adapter" else "fine-tuned from"
        parts += [f"**Base model.** Probably {kind} **{_markdown(facts.base_model)}**"
                  + (f" ({_markdown(facts.routing)})." if facts.routing else "."), ""]
    parts += [f"## {facts.prediction_kind.capitalize()}", ""]
    if facts.predictions:
        parts += [f"| class | {facts.confidence_name} |", "|---|---|"]
        parts += [f"| {_markdown(label)} | {confidence:.3f} |" for label, confidence in facts.predictions]
    else:
        parts.append("None predicted.")
    parts.append("")
    if facts.caveats:
        parts += ["**Caveats.**", ""] + [f"- {_markdown(caveat)}" for caveat in facts.caveats] + [""]
    parts += ["## Nearest documented models", ""]
    if facts.neighbours:
        parts += [f"| model | {facts.neighbour_score_name} | trained on |", "|---|---|---|"]
        parts += [f"| {_markdown(n.model_id)} | {n.score:.3f} | {_markdown(', '.join(n.labels)) or '-'} |"
                  for n in facts.neighbours]
    else:
        parts.append("None found.")
    parts += ["", "## How this draft was made", "",
              "ProbeX (Horwitz et al., *Learning on Model Weights using Tree Experts*, CVPR 2025) routes the model "
              "to its Model Tree by the distance of one layer's weights to each tree's centre, then the tree's "
              "expert reads one layer's weights and predicts what the model was fine-tuned on."
              + (f" Expert: {_markdown(facts.expert)}." if facts.expert else "")]
    known = {key: value for key, value in facts.metadata.items() if value not in (None, "")}
    if known:
        parts += ["", "## Metadata found in the file", "", "| key | value |", "|---|---|"]
        parts += [f"| {_markdown(str(key))} | {_markdown(str(value))} |" for key, value in known.items()]
    return "\n".join(parts) + "\n"


def _scalar(value: Any) -> str:
    """A YAML scalar: numbers as numbers, everything else as a JSON string (valid YAML)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)) and not (isinstance(value, float) and not math.isfinite(value)):
        return repr(value)
    return json.dumps(str(value), ensure_ascii=False)


def _markdown(text: str) -> str:
    """Text with Markdown's and HTML's special characters escaped, on one line."""
    text = " ".join(str(text).split())
    for character in "\\`*_{}[]()#+!|<>":
        text = text.replace(character, "\\" + character)
    return text
