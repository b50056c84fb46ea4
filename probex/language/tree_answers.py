"""How one Model Tree answers a text prompt, as a calibrated probability per model.

Every tree answers in the same unit, the probability that a model was fine-tuned on what the
prompt names, so that the answers of different trees can be merged (:mod:`probex.language.zoo_search`):

- **Aligned tree** (an aligned expert: ``encode`` + ``encode_text``): the prompt is one more
  candidate class beside the tree's known concepts, and a model's probability is the expert's
  own softmax over those candidates at the temperature it was trained with. A prompt naming a
  model's concept gets nearly all of it; a prompt unlike every model ("a dog") gets almost none,
  because each model's own concept wins.
- **Classifier tree** (a classifier expert: ``predict_proba`` + ``classes_``): the prompt is read
  against the expert's class vocabulary in a text encoder's space (:func:`read_prompt`): the
  nearest class names with their similarity, softmax weights over them, and a *closeness*, the
  fraction of the vocabulary's classes that sit farther from their own nearest other class than
  the prompt sits from its nearest class. A model's probability is the closeness times the
  weighted predicted probability of those classes: a known class name gets closeness 1, a
  prompt no nearer to any class than distinct classes are to each other gets 0.

Expert outputs over a whole population are computed once (and cached on disk by
:mod:`probex.language.search_cache`); each prompt then costs one text encoding and a matrix product.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np

from probex.errors import ProbeXError
from probex.language.search import _common_models, _unit_rows, prompt_as_class_name
from probex.language.search_cache import load_values, population_key, save_values
from probex.progress import Progress

logger = logging.getLogger(__name__)

ALIGNED_METHOD = "aligned"
CLASSIFIER_METHOD = "classifier"
#: Softmax temperature of a prompt's reading over a classifier's vocabulary (cosine similarities).
READING_TEMPERATURE = 0.02
#: How many nearest known classes a reading reports.
NEAREST = 3


def method_of(expert: Any) -> str | None:
    """``"aligned"``, ``"classifier"`` or None: how an expert can answer a prompt."""
    if hasattr(expert, "encode_text") and hasattr(expert, "encode"):
        return ALIGNED_METHOD
    if hasattr(expert, "predict_proba") and hasattr(expert, "classes_"):
        return CLASSIFIER_METHOD
    return None


@dataclass
class Reading:
    """A prompt read against a class vocabulary.

    Attributes:
        name: the class-name-like phrase of the prompt ("a blue heart" -> "blue heart").
        nearest: the nearest known classes with their cosine similarity, best first.
        weights: [C] softmax weights over the vocabulary (sum 1).
        closeness: 0..1; 1 when the prompt is at least as near its nearest class as every known
            class is to its own nearest other class, 0 when it is farther than all of them.
        spacing: (lowest, highest) similarity between a known class and its nearest other class.
    """

    name: str
    nearest: list[tuple[str, float]]
    weights: np.ndarray = field(repr=False)
    closeness: float
    spacing: tuple[float, float]

    @property
    def exact(self) -> bool:
        """Whether the prompt names a known class."""
        return bool(self.nearest) and self.nearest[0][0] == self.name

    def describe(self) -> str:
        """``"read as 'blue heart' (similarity 0.70; known classes sit 0.74-0.85 from each other)"``."""
        if not self.nearest:
            return "no known classes to read the prompt as"
        best, similarity = self.nearest[0]
        if self.exact:
            return f"a known class ({best})"
        return (f"read as '{best}' (similarity {similarity:.2f}; known classes sit {self.spacing[0]:.2f}-"
                f"{self.spacing[1]:.2f} from their nearest other class, closeness {self.closeness:.2f})")


def read_prompt(name: str, vocabulary: Sequence[str], vocabulary_vectors: np.ndarray, prompt_vector: np.ndarray) -> Reading:
    """Read a prompt (its class-name phrase ``name`` and its unit text vector) against a vocabulary's unit vectors."""
    vocabulary = list(vocabulary)
    if not vocabulary:
        return Reading(name, [], np.zeros(0, np.float32), 0.0, (1.0, 1.0))
    similarity = vocabulary_vectors @ prompt_vector
    if name in vocabulary:
        similarity[vocabulary.index(name)] = 1.0  # the text encoder's rounding never demotes an exact name
    order = np.argsort(-similarity, kind="stable")
    logits = (similarity - similarity.max()) / READING_TEMPERATURE
    weights = np.exp(logits)
    weights /= weights.sum()
    spacing = nearest_other(vocabulary_vectors)
    best = float(similarity[order[0]])
    if spacing.size:
        closeness = 1.0 if name in vocabulary else float(np.mean(spacing < best))
        bounds = (float(spacing.min()), float(spacing.max()))
    else:  # one known class: its similarity is all there is
        closeness, bounds = max(best, 0.0), (1.0, 1.0)
    nearest = [(vocabulary[i], float(similarity[i])) for i in order[:NEAREST]]
    return Reading(name, nearest, weights.astype(np.float32), closeness, bounds)


def nearest_other(vectors: np.ndarray) -> np.ndarray:
    """For each unit row, its cosine similarity to the nearest other row ([] for fewer than two rows)."""
    if len(vectors) < 2:
        return np.zeros(0, np.float32)
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -np.inf)
    return similarity.max(axis=1)


@dataclass
class TreeAnswer:
    """One tree's answer to a prompt: a calibrated score per model, and how the tree read the prompt.

    Attributes:
        tree: the tree's name in its zoo.
        method: ``"aligned"``, ``"classifier"`` or None (the tree cannot answer: ``note`` says why).
        note: how the tree read the prompt, or why it cannot answer.
        models: how many of its models were scored.
        reading: the prompt read against the tree's known classes (None when it cannot answer).
        records, scores, raw, reasons: per scored model: its record, its probability of being
            fine-tuned on what the prompt names, the expert's own number (cosine for an aligned
            tree, the predicted probability of the nearest class for a classifier) and why it matched.
    """

    tree: str
    method: str | None
    note: str
    models: int = 0
    reading: Optional[Reading] = None
    records: list = field(default_factory=list, repr=False)
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32), repr=False)
    raw: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32), repr=False)
    reasons: list[str] = field(default_factory=list, repr=False)

    @property
    def best(self) -> float | None:
        """The highest score of any of its models (None when it has none)."""
        return float(self.scores.max()) if len(self.scores) else None


class TreeSearcher:
    """One tree's expert over the tree's population: computes the expert's outputs once, answers prompts.

    Args:
        tree: the tree's name. population: its models (a ModelZoo). expert: a fitted aligned or
        classifier expert that names its layers. vocabulary: the tree's known class names (an
        aligned tree's candidates; a classifier reads its own ``classes_``). text_encoder: the
        spec that reads prompts for a classifier. cache: keep the population's outputs on disk.
    """

    def __init__(self, tree: str, population: Any, expert: Any, vocabulary: Sequence[str],
                 text_encoder: str = "minilm", cache: bool = True) -> None:
        self.tree, self.population, self.expert = tree, population, expert
        self.method = method_of(expert)
        if self.method is None:
            raise ProbeXError(f"tree {tree!r}: a {type(expert).__name__} can neither align text nor predict classes; "
                              "give an aligned expert (ProbeXAligner) or a classifier (ProbeXClassifier)")
        self.layers = list(getattr(expert, "layers_", None) or [])
        if not self.layers:
            raise ProbeXError(f"tree {tree!r}: its {type(expert).__name__} does not name the layers it reads "
                              "(it was fitted on raw tensors); fit it on LayerBanks so it can read a zoo")
        classes = getattr(expert, "classes_", None) if self.method == CLASSIFIER_METHOD else vocabulary
        self.vocabulary = [str(name) for name in (classes if classes is not None else [])]
        self.text_encoder, self.cache = text_encoder, cache
        self.records: list | None = None
        self.values: np.ndarray | None = None  # embeddings [N, d] or probabilities [N, C]
        self._vocabulary_vectors: np.ndarray | None = None

    # -- the population, once ----------------------------------------------------------------

    def prepare(self, progress: Optional[Progress] = None) -> None:
        """Compute (or read from the cache) the expert's outputs for every model of the tree."""
        if self.values is not None:
            return
        records = list(self.population.records)
        ids = [record.id for record in records]
        kind = "embeddings" if self.method == ALIGNED_METHOD else "probabilities"
        key = population_key(self.tree, kind, self.expert, self.layers, records) if self.cache else None
        cached = load_values(self.tree, key, ids)
        if cached is None:
            banks = _common_models([self.population.bank(layer, progress=progress) for layer in self.layers])
            inputs = banks if len(banks) > 1 else banks[0]
            if self.method == ALIGNED_METHOD:
                values = _unit_rows(np.asarray(self.expert.encode(inputs), dtype=np.float32))
            else:
                values = np.asarray(self.expert.predict_proba(inputs), dtype=np.float32)
            kept = list(banks[0].ids)
            save_values(self.tree, key, ids, kept, values)
        else:
            kept, values = cached
        by_id = {record.id: record for record in records}
        self.records, self.values = [by_id[model_id] for model_id in kept], np.asarray(values, dtype=np.float32)
        logger.info("tree %s: %s of %d models ready for search", self.tree, kind, len(self.records))

    # -- one prompt ----------------------------------------------------------------------------

    def answer(self, prompt: str) -> TreeAnswer:
        """The tree's calibrated score of every model for ``prompt``."""
        self.prepare()
        if self.method == ALIGNED_METHOD:
            return self._aligned(prompt)
        return self._classifier(prompt)

    def _aligned(self, prompt: str) -> TreeAnswer:
        name = prompt_as_class_name(prompt, getattr(self.expert, "template", "a photo of a {}"))
        query = _unit_rows(np.asarray(self.expert.encode_text([name]), dtype=np.float32))[0]
        vectors = self._vectors()
        reading = read_prompt(name, self.vocabulary, vectors, query)
        cosine = self.values @ query
        if self.vocabulary:
            candidates = vectors if name in self.vocabulary else np.vstack([vectors, query[None]])
            column = self.vocabulary.index(name) if name in self.vocabulary else len(self.vocabulary)
            logits = (self.values @ candidates.T) / float(getattr(self.expert, "temperature_", 0.07))
            logits -= logits.max(axis=1, keepdims=True)
            probability = np.exp(logits)
            scores = probability[:, column] / probability.sum(axis=1)
            among = f"among {len(self.vocabulary)} known concepts"
        else:  # nothing to compare with: the cosine, clipped to [0, 1]
            scores, among = cosine, "no known concepts to compare with"
        scores = np.clip(scores, 0.0, 1.0)
        reasons = [f"aligned: {c:.2f}, p = {p:.2f}" for c, p in zip(cosine, scores)]
        note = (f"aligned expert on {', '.join(self.layers)}; the prompt is one more candidate {among}; "
                f"nearest known: {_nearest(reading)}")
        return TreeAnswer(self.tree, ALIGNED_METHOD, note, len(self.records), reading, self.records,
                          scores.astype(np.float32), cosine.astype(np.float32), reasons)

    def _classifier(self, prompt: str) -> TreeAnswer:
        name = prompt_as_class_name(prompt)
        query = prompt_vector(self.text_encoder, name)
        reading = read_prompt(name, self.vocabulary, self._vectors(), query)
        expected = self.values @ reading.weights  # the weighted predicted probability of the nearest classes
        scores = np.clip(reading.closeness * expected, 0.0, 1.0)
        best = self.vocabulary.index(reading.nearest[0][0])
        raw = self.values[:, best]
        read_as = "" if reading.exact else (f" (read as {reading.nearest[0][0]}, similarity {reading.nearest[0][1]:.2f}, "
                                             f"closeness {reading.closeness:.2f})")
        reasons = [f"predicted to be trained on {reading.nearest[0][0]}, p = {p:.2f}{read_as}" for p in raw]
        note = f"classifier expert over {len(self.vocabulary)} classes on {', '.join(self.layers)}; {reading.describe()}"
        return TreeAnswer(self.tree, CLASSIFIER_METHOD, note, len(self.records), reading, self.records,
                          scores.astype(np.float32), raw.astype(np.float32), reasons)

    def _vectors(self) -> np.ndarray:
        """The vocabulary's unit text vectors: the aligned expert's space, or the text encoder's for a classifier."""
        if self._vocabulary_vectors is None:
            if not self.vocabulary:
                self._vocabulary_vectors = np.zeros((0, 1), np.float32)
            elif self.method == ALIGNED_METHOD:
                self._vocabulary_vectors = _unit_rows(np.asarray(self.expert.encode_text(self.vocabulary), dtype=np.float32))
            else:
                from probex.language.text import class_prompts, load_text_encoder

                encoder = load_text_encoder(self.text_encoder)
                self._vocabulary_vectors = _unit_rows(encoder.encode(class_prompts(self.vocabulary)).numpy())
        return self._vocabulary_vectors


@functools.lru_cache(maxsize=256)
def prompt_vector(spec: str, name: str) -> np.ndarray:
    """A class-name phrase through the default template in a text encoder's space, unit length (kept for
    the process: the classifier trees of a zoo read the same prompt with the same encoder)."""
    from probex.language.text import class_prompts, load_text_encoder

    vector = _unit_rows(load_text_encoder(spec).encode(class_prompts([name])).numpy())[0]
    vector.setflags(write=False)
    return vector


def _nearest(reading: Reading) -> str:
    return ", ".join(f"{name} ({similarity:.2f})" for name, similarity in reading.nearest) or "none"
