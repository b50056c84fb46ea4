"""The Search page's data: one call from a prompt to ranked models, from one tree's aligned expert
(:func:`find_models`) or from every tree that can answer (:func:`find_in_zoo`, a
:class:`~probex.language.zoo_search.ZooIndex`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from explorer import state


@dataclass
class Found:
    """A prompt's answer: hits best first (``probex.language.search.Hit``, with calibrated ``match`` and ``z``),
    how strong the best match is (``MatchStrength``, None when it cannot be calibrated), which trees answered,
    and the concepts each tree's expert saw in training (to badge held-out ones)."""

    hits: list
    strength: Optional[Any]
    trees: list[str]
    seen: set = field(default_factory=set)


def find_models(path: str, zoo: Any, prompt: str, k: int, tree: str) -> Found:
    """The ``k`` models of ``tree`` that best match ``prompt`` under its aligned expert.

    Raises:
        ProbeXError, ValueError: the index cannot be built or the prompt cannot be read (the message says why).
    """
    choice = state.aligned_experts(path, zoo)[tree]
    index = state.model_index(path, tree, choice.token, choice.expert)
    hits = index.search(prompt, k=k)
    try:
        strength = index.match_strength(prompt)
    except ValueError:  # no model of a known concept: nothing to calibrate against
        strength = None
    return Found(hits, strength, [tree], set(getattr(choice.expert, "classes_", []) or []))


def find_in_zoo(path: str, zoo: Any, prompt: str, k: int):
    """The ``k`` models of the whole population that best match ``prompt``: every tree with an expert answers
    (aligned trees through the weight-language space, classifier trees through their class names), merged on
    one calibrated scale (:class:`~probex.language.zoo_search.ZooSearchResult`).

    Raises:
        ProbeXError: the prompt cannot be read (the message says why).
    """
    return state.zoo_index(path, zoo).search(prompt, k=k)
