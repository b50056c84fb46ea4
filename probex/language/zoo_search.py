"""Search a whole zoo with a text prompt: every tree that can answer does, and the answers are merged.

A mixture of experts for prompts. Each tree with an expert answers in its own way
(:mod:`probex.language.tree_answers`): an aligned tree through its aligned expert's
weight-language space, a classifier tree by reading the prompt as its nearest class names and
asking its expert which models were trained on them. Both give the same calibrated unit, the
probability that a model was fine-tuned on what the prompt names::

    index = ZooIndex.from_zoo(ModelZoo.open("zoo"))       # the experts shipped in zoo/experts/
    result = index.search("a blue heart", k=30)            # every tree that can answer
    result.hits[0]          # ZooHit(rank=1, tree=..., score=1.0, why="predicted to be trained on blue heart, p = 1.00", ...)
    result.weak, result.note                               # the weak-match flag and its explanation
    result.trees            # one TreeAnswer per tree: how it read the prompt, or why it cannot answer
    index.search("a blue heart", trees=["cnn-supervised"]) # narrowed to some trees

Merging: a hit is *strong* when its probability is at least :data:`STRONG` (more likely than
not trained on what the prompt names). Strong hits come first, then the rest; within each group
hits are ordered by their percentile within their own tree's population (1.0 = the tree's best),
so every tree that can answer shows its best models, in proportion to its population, and one
tree's many near-certain matches do not hide another tree's. The result is *weak* when no model
of any tree is a strong hit: the note says how the prompt was read by each tree (the nearest known
classes and how close), e.g. "a dog" on the demo jungle.

Experts come from the zoo (``experts/<tree>/``, :func:`probex.zoo.extras.expert_dirs`), from a
caller (``ZooIndex(zoo, {"tree": expert_or_folder})``, e.g. experts trained in the app), or from
a fitted :class:`~probex.experts.moe.MixtureOfExperts` whose trees are the zoo's
(:meth:`ZooIndex.from_mixture`). Trees without an expert are listed with the reason.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence

import numpy as np

from probex.errors import ProbeXError
from probex.language.tree_answers import TreeAnswer, TreeSearcher, method_of
from probex.progress import Progress

if TYPE_CHECKING:
    import pandas

    from probex.zoo import ModelZoo

logger = logging.getLogger(__name__)

#: A hit at least this probable is a strong match; a search whose best hit is below it is weak.
STRONG = 0.5


@dataclass
class ZooHit:
    """One model found by a whole-zoo search, best first.

    Attributes:
        rank: 1 for the best match.
        model_id, tree, split, labels, path, images: the model as its zoo records it
            (``labels``: the concepts it was fine-tuned on; ``images``: its training images).
        score: the calibrated probability that it was fine-tuned on what the prompt names (0..1),
            comparable across trees.
        percentile: its place within its own tree's population for this prompt (1.0 = the best).
        why: why it matched, e.g. "predicted to be trained on blue heart, p = 0.97" or
            "aligned: 0.91, p = 0.99".
        method: ``"aligned"`` or ``"classifier"``.
        raw: the expert's own number (cosine for an aligned tree, predicted probability for a classifier).
    """

    rank: int
    model_id: str
    tree: str
    score: float
    percentile: float
    why: str
    method: str
    raw: float
    labels: list[str]
    split: str | None
    path: Path
    images: list[Path] = field(default_factory=list)

    @property
    def strong(self) -> bool:
        return self.score >= STRONG


@dataclass
class ZooSearchResult:
    """The answer of a whole zoo to one prompt.

    Attributes:
        prompt: the prompt as given.
        hits: the best models of all answering trees, merged (see the module docstring).
        trees: one TreeAnswer per tree asked (answering or not), in the zoo's order.
        weak: True when no model of any tree is a strong match (best score < STRONG).
        note: the weak-match note ("no strong match ...") when weak, else None.
    """

    prompt: str
    hits: list[ZooHit]
    trees: list[TreeAnswer]
    weak: bool
    note: str | None

    @property
    def answering(self) -> list[TreeAnswer]:
        """The trees that answered (those with an expert)."""
        return [answer for answer in self.trees if answer.method is not None]

    @property
    def best(self) -> float | None:
        """The best calibrated score over every answering tree's models."""
        scores = [answer.best for answer in self.answering if answer.best is not None]
        return max(scores) if scores else None

    def to_frame(self) -> "pandas.DataFrame":
        """One row per hit: rank, tree, model, score, percentile, why, concept(s), split, image."""
        import pandas as pd

        return pd.DataFrame([{"rank": hit.rank, "tree": hit.tree, "model": hit.model_id, "score": hit.score,
                              "percentile": hit.percentile, "why": hit.why, "concepts": "; ".join(hit.labels),
                              "split": hit.split, "image": str(hit.images[0]) if hit.images else ""}
                             for hit in self.hits],
                            columns=["rank", "tree", "model", "score", "percentile", "why", "concepts", "split", "image"])

    def to_dict(self) -> dict:
        """JSON-ready: the prompt, weak flag and note, the hits, and each tree's reading."""
        return {
            "prompt": self.prompt, "weak": self.weak, "note": self.note,
            "hits": [{"rank": hit.rank, "tree": hit.tree, "model_id": hit.model_id, "score": round(hit.score, 6),
                      "percentile": round(hit.percentile, 6), "why": hit.why, "method": hit.method,
                      "raw": round(hit.raw, 6), "labels": hit.labels, "split": hit.split, "path": str(hit.path),
                      "images": [str(image) for image in hit.images]} for hit in self.hits],
            "trees": [{"tree": answer.tree, "method": answer.method, "models": answer.models, "note": answer.note,
                       "best": None if answer.best is None else round(answer.best, 6),
                       "read_as": [[name, round(similarity, 6)] for name, similarity in answer.reading.nearest]
                       if answer.reading is not None else []} for answer in self.trees],
        }


class ZooIndex:
    """A zoo's trees and their experts, ready to answer prompts over the whole zoo.

    Args:
        zoo: the ModelZoo.
        experts: tree name -> a fitted expert or the folder of a saved one (loaded when first
            used). Trees of the zoo not named here cannot answer (their TreeAnswer says so).
        populations: tree name -> its models (a ModelZoo), for groups of models that are not
            one of the zoo's trees (a mixture's routed trees, the models that hold an expert's
            layers); a tree's population is otherwise its models in the zoo.
        text_encoder: the text encoder spec that reads prompts for classifier trees ("minilm").
        cache: keep each tree's expert outputs on disk (:mod:`probex.language.search_cache`).
    """

    def __init__(self, zoo: "ModelZoo", experts: Mapping[str, Any], text_encoder: str = "minilm",
                 cache: bool = True, populations: Optional[Mapping[str, Any]] = None) -> None:
        self.zoo = zoo
        self._populations: dict[str, Any] = dict(populations or {})
        unknown = sorted(set(experts) - set(self.trees))
        if unknown:
            raise ProbeXError(f"{zoo.root}: no tree {unknown[0]!r} for its expert; trees: {', '.join(self.trees[:12])}")
        self.experts: dict[str, Any] = dict(experts)
        self.text_encoder, self.cache = text_encoder, cache
        self._searchers: dict[str, TreeSearcher] = {}
        self._problems: dict[str, str] = {}

    @classmethod
    def from_zoo(cls, zoo: "ModelZoo", experts: Optional[Mapping[str, Any]] = None, text_encoder: str = "minilm",
                 cache: bool = True) -> "ZooIndex":
        """The zoo with the experts it ships (``experts/<tree>/``), overridden by ``experts`` (tree -> expert or folder)."""
        from probex.zoo.extras import expert_dirs

        shipped = {tree: folder for tree, folder in expert_dirs(zoo.root).items() if tree in zoo.trees}
        return cls(zoo, {**shipped, **dict(experts or {})}, text_encoder=text_encoder, cache=cache)

    @classmethod
    def from_mixture(cls, zoo: "ModelZoo", mixture: Any, text_encoder: str = "minilm", cache: bool = True) -> "ZooIndex":
        """The zoo's models routed by a fitted MixtureOfExperts, each routed group answered by its tree's expert."""
        mixture._check_fitted()
        routed = mixture.router_.route(zoo)
        populations = {}
        for tree in mixture.experts_:
            ids = [record.id for record, name in zip(zoo.records, routed) if name == tree]
            populations[tree] = zoo.select(ids=ids) if ids else None
        return cls(zoo, dict(mixture.experts_), text_encoder=text_encoder, cache=cache, populations=populations)

    def __repr__(self) -> str:
        return f"ZooIndex(models={len(self.zoo)}, trees={len(self.trees)}, experts={sorted(self.experts)})"

    @property
    def trees(self) -> list[str]:
        """Every tree a search reports on: the zoo's trees and the mixture's (routed) trees."""
        return list(dict.fromkeys([*self.zoo.trees, *self._populations]))

    def searcher(self, tree: str, progress: Optional[Progress] = None) -> TreeSearcher | None:
        """The tree's searcher with its population's outputs computed (None when the tree cannot answer)."""
        if tree in self._searchers:
            return self._searchers[tree]
        if tree in self._problems or tree not in self.experts:
            return None
        try:
            expert = self._expert(tree)
            population = self._population(tree)
            if population is None:
                raise ProbeXError(f"tree {tree!r}: no model of the zoo belongs to it")
            vocabulary = population.label_names
            searcher = TreeSearcher(tree, population, expert, vocabulary, self.text_encoder, self.cache)
            searcher.prepare(progress)
        except ProbeXError as error:
            logger.warning("tree %s cannot answer prompts: %s", tree, error)
            self._problems[tree] = str(error)
            return None
        self._searchers[tree] = searcher
        return searcher

    def prepare(self, trees: Optional[Sequence[str]] = None, progress: Optional[Progress] = None) -> "ZooIndex":
        """Compute every answering tree's outputs now (a search does it on first use); returns self."""
        for tree in self._chosen(trees):
            self.searcher(tree, progress)
        return self

    def model_index(self, tree: str):
        """The :class:`~probex.language.search.ModelIndex` of an aligned tree (for the atlas, neighbours, top labels)."""
        from probex.language.search import ModelIndex
        from probex.language.tree_answers import ALIGNED_METHOD

        searcher = self.searcher(tree)
        if searcher is None or searcher.method != ALIGNED_METHOD:
            raise ProbeXError(f"tree {tree!r} has no aligned expert here; aligned trees: "
                              f"{', '.join(self.aligned_trees()) or 'none'}")
        return ModelIndex(searcher.expert, searcher.records, searcher.values, searcher.vocabulary, tree)

    def aligned_trees(self) -> list[str]:
        """The trees whose expert is an aligned one (loads their experts)."""
        return [tree for tree in self.experts if method_of(self._expert(tree)) == "aligned"]

    # -- searching -------------------------------------------------------------------------------

    def search(self, prompt: str, k: int = 10, trees: Optional[Sequence[str]] = None,
               progress: Optional[Progress] = None) -> ZooSearchResult:
        """The ``k`` best models of every answering tree (or of ``trees``) for ``prompt``, merged.

        Raises:
            ProbeXError: an empty prompt, ``k`` below 1, or a tree the zoo does not have.
        """
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
            raise ProbeXError(f"k must be a whole number >= 1; got {k!r}")
        chosen = self._chosen(trees)
        answers: list[TreeAnswer] = []
        for tree in chosen:
            searcher = self.searcher(tree, progress)
            if searcher is None:
                answers.append(TreeAnswer(tree, None, self._problems.get(tree) or
                                          "no expert for this tree, so it cannot answer a prompt (train one and save "
                                          f"it in {Path(self.zoo.root) / 'experts'}/<tree>/, or pass it to ZooIndex)"))
            else:
                answers.append(searcher.answer(prompt))
        hits = _merge(answers, int(k))
        best = max((answer.best for answer in answers if answer.best is not None), default=None)
        weak = best is None or best < STRONG
        note = _weak_note(prompt, answers, best) if weak else None
        return ZooSearchResult(prompt, hits, answers, weak, note)

    # -- helpers ------------------------------------------------------------------------------------

    def _chosen(self, trees: Optional[Sequence[str]]) -> list[str]:
        known = self.trees
        if trees is None:
            return known
        if isinstance(trees, str):
            trees = [trees]
        missing = [tree for tree in trees if tree not in known]
        if missing:
            raise ProbeXError(f"{self.zoo.root}: no tree {missing[0]!r}; trees: {', '.join(known[:12])}"
                              f"{' ...' if len(known) > 12 else ''}")
        return list(dict.fromkeys(trees))

    def _expert(self, tree: str) -> Any:
        expert = self.experts[tree]
        if isinstance(expert, (str, Path)):
            from probex.experts.base import load_expert

            try:
                expert = load_expert(expert)
            except ValueError as error:
                raise ProbeXError(f"{expert}: cannot load the expert of tree {tree!r} ({error})") from None
            self.experts[tree] = expert
        return expert

    def _population(self, tree: str) -> Any:
        if tree in self._populations:
            return self._populations[tree]
        return self.zoo.select(tree=tree) if tree in self.zoo.trees else None


def _merge(answers: Sequence[TreeAnswer], k: int) -> list[ZooHit]:
    """The k best hits of all answers: strong ones first, each group by within-tree percentile, then score."""
    candidates = []
    for order, answer in enumerate(answers):
        n = len(answer.scores)
        if not n:
            continue
        ranking = np.lexsort((-answer.raw, -answer.scores))[:k]  # within-tree rank: score, then the expert's own number
        for position, row in enumerate(ranking):
            score = float(answer.scores[row])
            percentile = 1.0 - position / n
            candidates.append(((score >= STRONG), percentile, score, -order, answer, int(row)))
    candidates.sort(key=lambda item: item[:4], reverse=True)
    hits = []
    for rank, (_, percentile, score, _, answer, row) in enumerate(candidates[:k], start=1):
        record = answer.records[row]
        hits.append(ZooHit(rank, record.id, answer.tree, score, percentile, answer.reasons[row], answer.method,
                           float(answer.raw[row]), list(record.labels), record.split, Path(record.path),
                           _matched_images_first(record.images, answer)))
    return hits


def _matched_images_first(images: Sequence[Path], answer: TreeAnswer) -> list[Path]:
    """A model's training images, those of the classes the prompt was read as first (a classifier model
    trained on 12 classes shows the prompt's class, not whichever class its list starts with).

    Shared class images lie one folder per class (``probex.zoo.manifest.class_images_folder``)."""
    images = list(images)
    if answer.reading is None or not answer.reading.nearest:
        return images
    from probex.storage import safe_name

    rank = {safe_name(name): position for position, (name, _) in enumerate(answer.reading.nearest)}
    return sorted(images, key=lambda image: rank.get(Path(image).parent.name, len(rank)))  # stable within a class


def _weak_note(prompt: str, answers: Sequence[TreeAnswer], best: float | None) -> str:
    """Why no strong match: the best score, and how each answering tree read the prompt."""
    answering = [answer for answer in answers if answer.method is not None]
    if not answering:
        return (f"no tree here can answer {prompt!r}: none has an expert (an aligned or a classifier expert "
                "in the zoo's experts/<tree>/ folder)")
    readings = []
    for answer in answering:
        if answer.reading is not None and answer.reading.nearest:
            name, similarity = answer.reading.nearest[0]
            readings.append(f"{answer.tree}: nearest known class '{name}' (similarity {similarity:.2f}, "
                            f"best p = {answer.best:.2f})")
    return (f"no strong match for {prompt!r}: the best model is {best:.2f} likely to be fine-tuned on it "
            f"(strong: >= {STRONG}); " + "; ".join(readings))
