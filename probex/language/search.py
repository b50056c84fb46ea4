"""Search a zoo in an aligned expert's weight-language space: prompt -> models, model -> labels, model -> models.

An aligned expert (``ProbeXAligner`` and its baselines) maps a model's layers and a class name
into one space. :class:`ModelIndex` encodes a zoo's models once, then every query is one
matrix product against those unit rows::

    expert = load_expert("zoo/experts/sd-loras")             # an aligned expert of one tree
    index = ModelIndex.build(expert, ModelZoo.open("zoo"))   # the models of the expert's tree
    index.search("a red star", k=5)                           # [Hit(rank=1, model_id=..., score=...), ...]
    index.top_labels("uploads/pytorch_lora_weights.safetensors")   # [("red star", 0.83), ...]
    index.neighbours("model_idx_0042")                        # its nearest models, with their images
    index.match_strength("a dog").weak                        # True: no model scores like a real match
    index.more_like(["model_idx_0001", ...])                  # every model's similarity to a selection
    index.export("embeddings.parquet")                        # ids, metadata, e0..e{d-1}

Scores: a hit's ``score`` is its cosine; ``match`` and ``z`` calibrate it
(:mod:`probex.language.calibration`): ``match`` compares it with the scores of real matches (each
model against its own concept's name), ``z`` with the rest of the population for this prompt.

Prompts are read the way the aligner was trained: its text map only ever saw class names
inside its prompt template ("a photo of a {}"), so a prompt is reduced to a class-name-like
phrase (a leading copy of the template's own words, e.g. "a photo of a", or a leading article
is dropped) and then passed through the template by ``expert.encode_text``. "a red star",
"red star" and "a photo of a red star" are therefore the same query, and free text such as
"something red and pointy" becomes "a photo of a something red and pointy".
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

import numpy as np
import torch

from probex.errors import ProbeXError, ZooError
from probex.language.calibration import (MatchStrength, calibrated_match, match_strength, true_match_scores,
                                         true_matches)
from probex.language.selection import similarity_to_selection
from probex.progress import Progress
from probex.storage import atomic_path

if TYPE_CHECKING:  # pandas is imported only by to_frame / export
    import pandas

    from probex.zoo import LayerBank, ModelRecord, ModelZoo

logger = logging.getLogger(__name__)

_ARTICLE = re.compile(r"^(a|an|the)\s+", re.IGNORECASE)


@dataclass
class Hit:
    """One model found by a query, best first.

    Attributes:
        rank: 1 for the best match.
        model_id: the model's id in its zoo.
        score: cosine similarity to the query in the expert's space (-1 to 1).
        labels: the concepts the model was fine-tuned on.
        split, tree: where the model sits in its zoo (None when unknown).
        path: its weight file.
        images: its training images (empty when the zoo ships none).
        match: the share of true matches (models against their own concept's name) scoring
            below ``score``, 0..1 (None where the index knows no true match).
        z: the standard score of ``score`` among every indexed model for this query.
    """

    rank: int
    model_id: str
    score: float
    labels: list[str]
    split: str | None
    tree: str | None
    path: Path
    images: list[Path] = field(default_factory=list)
    match: Optional[float] = None
    z: Optional[float] = None


def prompt_as_class_name(prompt: str, template: str = "a photo of a {}") -> str:
    """The class-name-like phrase inside a free-text prompt (see the module docstring).

    ``"a photo of a red star"`` -> ``"red star"`` (with the default template),
    ``"A red star"`` -> ``"red star"``, ``"red star"`` -> ``"red star"``.
    """
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a string; got {type(prompt).__name__}")
    text = " ".join(prompt.split())
    if not text:
        raise ProbeXError("prompt: empty; type a few words, e.g. 'a red star'")
    prefix = template.split("{}")[0].strip().lower() if "{}" in template else ""
    if prefix and text.lower().startswith(prefix + " "):
        text = text[len(prefix) + 1:]
    stripped = _ARTICLE.sub("", text)
    return stripped or text


class ModelIndex:
    """A zoo's models encoded once in an aligned expert's space, ready for prompt, label and model queries.

    Build one with :meth:`build`.

    Attributes:
        expert: the aligned expert (``encode``, ``encode_text``, ``layers_``).
        records: the indexed models' records, aligned with ``embeddings``.
        embeddings: [N, d] float32, unit rows.
        classes: every class name the zoo knows for the indexed tree (default top-label candidates).
        tree: the expert's tree, or None when it does not record one.
    """

    def __init__(self, expert: Any, records: Sequence["ModelRecord"], embeddings: np.ndarray, classes: Sequence[str],
                 tree: str | None = None) -> None:
        embeddings = np.asarray(embeddings, dtype=np.float32)
        if embeddings.ndim != 2 or embeddings.shape[0] != len(records):
            raise ProbeXError(f"ModelIndex: embeddings must be [N, d] with N = {len(records)} records; got {embeddings.shape}")
        self.expert = expert
        self.records = list(records)
        self.embeddings = _unit_rows(embeddings)
        self.classes = list(classes)
        self.tree = tree
        self._row = {record.id: row for row, record in enumerate(self.records)}
        self._reference: Optional[np.ndarray] = None

    # -- building ------------------------------------------------------------------------

    @classmethod
    def build(cls, expert: Any, zoo: "ModelZoo", splits: str | Sequence[str] | None = None,
              progress: Optional[Progress] = None) -> "ModelIndex":
        """Encode the zoo's models of the expert's tree (``expert.metadata_["tree"]``) in its space.

        Without a recorded tree, or when the zoo has no tree of that name, every model that has
        the expert's layers (in the shapes it was trained on) is indexed. ``splits`` restricts the index to those splits. ``progress`` is
        called as ``progress(done, total, message)`` while the layers are read.

        Raises:
            ProbeXError: the expert is not aligned or does not name its layers.
            ZooError: no model of the zoo has the expert's layers.
        """
        layers = expert_layers(expert)
        tree = (getattr(expert, "metadata_", None) or {}).get("tree")
        if tree is not None and tree in zoo.trees:
            tree_zoo = zoo.select(tree=tree)
        else:  # no recorded tree, or a zoo (e.g. a user's folder of LoRAs) that names its trees otherwise
            if tree is not None:
                logger.info("%s: no tree %r here; indexing the models that have the expert's layers", zoo.root, tree)
                tree = None
            tree_zoo = zoo.select(ids=_ids_with_layers(zoo, layers, _input_shapes(expert)))
            if not len(tree_zoo):
                raise ZooError(f"{zoo.root}: no model has the expert's layers {', '.join(layers)} "
                               f"in the shapes it reads; is this a zoo of the expert's tree?")
        classes = tree_zoo.label_names
        selected = tree_zoo.select(split=splits) if splits is not None else tree_zoo
        if not len(selected):
            raise ZooError(f"{zoo.root}: no model of tree {tree!r} in split(s) {splits}")
        banks = []
        for number, layer in enumerate(layers):
            banks.append(selected.bank(layer, progress=_stage(progress, number, len(layers))))
        banks = _common_models(banks)
        embeddings = expert.encode(banks if len(banks) > 1 else banks[0])
        if progress is not None:
            progress(len(layers), len(layers), f"encoded {len(banks[0])} models")
        logger.info("indexed %d models of tree %s on %s", len(banks[0]), tree, ", ".join(layers))
        return cls(expert, banks[0].records, embeddings, classes, tree)

    # -- queries ---------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.records)

    def __repr__(self) -> str:
        return f"ModelIndex(models={len(self)}, tree={self.tree!r}, dim={self.embeddings.shape[1]})"

    @property
    def ids(self) -> list[str]:
        return [record.id for record in self.records]

    def embed_prompts(self, prompts: Sequence[str]) -> np.ndarray:
        """Free-text prompts in the expert's space [P, d], unit rows (see the module docstring)."""
        if isinstance(prompts, str):
            raise TypeError("prompts must be a list of strings; wrap one prompt: [prompt]")
        template = getattr(self.expert, "template", "a photo of a {}")
        names = [prompt_as_class_name(prompt, template) for prompt in prompts]
        return _unit_rows(np.asarray(self.expert.encode_text(names), dtype=np.float32))

    def search(self, prompt: str, k: int = 10) -> list[Hit]:
        """The k models closest to a text prompt, best first."""
        return self._hits(self.embed_prompts([prompt])[0], k)

    def match_strength(self, prompt: str) -> MatchStrength:
        """How well the prompt's best model matches it, on the scale of real matches (weak: "no strong match")."""
        scores = self.embeddings @ self.embed_prompts([prompt])[0]
        return match_strength(float(scores.max()), self.reference_scores())

    def reference_scores(self) -> np.ndarray:
        """The true-match scores [M]: every indexed model against each of its concepts' names (computed once).

        Raises:
            ValueError: no indexed model carries a concept among the index's class names.
        """
        if self._reference is None:
            rows, names = true_matches([record.labels for record in self.records], self.classes)
            self._reference = true_match_scores(self.embeddings, self.expert_text(self.classes), rows, names)
        return self._reference

    def more_like(self, model_ids: Sequence[str]) -> np.ndarray:
        """Every indexed model's similarity to a selection [N]: its cosine with the selection's mean direction.

        Raises:
            ZooError: an id is not in the index, or the selection is empty.
        """
        return similarity_to_selection(self.embeddings, self.rows(model_ids))

    def rows(self, model_ids: Sequence[str]) -> list[int]:
        """The index rows of ``model_ids`` (ZooError naming the first unknown id)."""
        missing = [model_id for model_id in model_ids if model_id not in self._row]
        if missing:
            raise ZooError(f"model {missing[0]!r} is not in this index ({len(self)} models of tree {self.tree!r})")
        return [self._row[model_id] for model_id in model_ids]

    def neighbours(self, model: "ModelRecord | str | np.ndarray", k: int = 5) -> list[Hit]:
        """The k models nearest one model (by id or record; never itself) or an embedding [d]."""
        exclude = None
        if isinstance(model, np.ndarray) or isinstance(model, torch.Tensor):
            query = np.asarray(model, dtype=np.float32).reshape(-1)
            if query.shape[0] != self.embeddings.shape[1]:
                raise ProbeXError(f"neighbours: expected an embedding of size {self.embeddings.shape[1]}; got {query.shape[0]}")
        else:
            model_id = model if isinstance(model, str) else getattr(model, "id", None)
            if model_id not in self._row:
                raise ZooError(f"neighbours: model {model_id!r} is not in this index ({len(self)} models of tree {self.tree!r})")
            exclude = self._row[model_id]
            query = self.embeddings[exclude]
        return self._hits(query, k, exclude=exclude)

    def top_labels(self, model: Any, candidates: Optional[Sequence[str]] = None, k: int = 5) -> list[tuple[str, float]]:
        """The k best-matching class names for one model, with their cosine scores, best first.

        Args:
            model: a ModelRecord or id of the index, a path to a ``.safetensors`` file (a LoRA
                or full checkpoint holding the expert's layers), or the layers themselves
                (a tensor [1, d_W, d_H] or a list of them, one per expert layer).
            candidates: class names to choose from (default: every class name the zoo knows
                for the indexed tree).
        """
        candidates = list(self.classes if candidates is None else candidates)
        if not candidates:
            raise ProbeXError("top_labels: no candidate class names; pass candidates=[...]")
        query = self.embed_model(model)
        scores = self.expert_text(candidates) @ query
        order = np.argsort(-scores, kind="stable")[:k]
        return [(candidates[i], float(scores[i])) for i in order]

    def expert_text(self, names: Sequence[str]) -> np.ndarray:
        """Class names (through the expert's template) in its space [C, d], unit rows."""
        return _unit_rows(np.asarray(self.expert.encode_text(list(names)), dtype=np.float32))

    def embed_model(self, model: Any) -> np.ndarray:
        """One model's embedding [d]: from the index (record or id) or encoded now (file or layers)."""
        model_id = getattr(model, "id", model if isinstance(model, str) else None)
        if isinstance(model_id, str) and model_id in self._row:
            return self.embeddings[self._row[model_id]]
        if isinstance(model, (str, os.PathLike)):
            path = Path(model)
            if not path.is_file():
                raise ZooError(f"{model}: neither a model of this index nor a file")
            layers = read_model_layers(path, expert_layers(self.expert), _input_shapes(self.expert))
        elif hasattr(model, "path") and hasattr(model, "id"):
            layers = read_model_layers(Path(model.path), expert_layers(self.expert), _input_shapes(self.expert))
        else:
            layers = model
        embedding = np.asarray(self.expert.encode(layers), dtype=np.float32)
        if embedding.shape[0] != 1:
            raise ProbeXError(f"top_labels: expected the layers of one model; got {embedding.shape[0]} models")
        return _unit_rows(embedding)[0]

    # -- tables ----------------------------------------------------------------------------

    def to_frame(self) -> "pandas.DataFrame":
        """One row per model: id, split, tree, labels ("; "-joined), path, image (first), e0..e{d-1}."""
        import pandas as pd

        frame = pd.DataFrame({
            "id": self.ids,
            "split": [record.split for record in self.records],
            "tree": [record.tree for record in self.records],
            "labels": ["; ".join(record.labels) for record in self.records],
            "path": [str(record.path) for record in self.records],
            "image": [str(record.images[0]) if record.images else "" for record in self.records],
        })
        columns = pd.DataFrame(self.embeddings, columns=[f"e{i}" for i in range(self.embeddings.shape[1])])
        return pd.concat([frame, columns], axis=1)

    def export(self, path: str | os.PathLike) -> Path:
        """Write :meth:`to_frame` to ``path`` as CSV (``.csv``) or parquet (``.parquet``), atomically.

        An existing file is replaced only when probex wrote it (:func:`probex.storage.check_output_file`).
        """
        from probex.storage import OUTPUT_MARK, check_output_file

        path = Path(path)
        suffix = path.suffix.lower()
        if suffix not in (".csv", ".parquet"):
            raise ProbeXError(f"{path}: export writes .csv or .parquet files; choose one of those suffixes")
        check_output_file(path, "export")
        frame = self.to_frame()
        frame.attrs["written_by"] = OUTPUT_MARK  # kept in parquet's metadata: a later export may replace it
        with atomic_path(path) as tmp:
            if suffix == ".csv":
                frame.to_csv(tmp, index=False)
            else:
                try:
                    frame.to_parquet(tmp, index=False)
                except ImportError as error:
                    raise ProbeXError(f"{path}: parquet needs pyarrow (pip install pyarrow); or export to .csv") from error
        return path

    # -- helpers ---------------------------------------------------------------------------

    def _hits(self, query: np.ndarray, k: int, exclude: int | None = None) -> list[Hit]:
        scores = self.embeddings @ np.asarray(query, dtype=np.float32)
        if exclude is not None:
            scores = scores.copy()
            scores[exclude] = -np.inf
        k = max(0, min(int(k), len(self) - (exclude is not None)))
        if k == 0:
            return []
        population = np.delete(scores, exclude) if exclude is not None else scores
        mean, spread = float(population.mean()), float(population.std())
        try:
            reference = self.reference_scores()
        except ValueError:
            reference = None
        top = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
        top = top[np.argsort(-scores[top], kind="stable")]
        hits = []
        for rank, row in enumerate(top, start=1):
            record = self.records[row]
            score = float(scores[row])
            hits.append(Hit(rank, record.id, score, list(record.labels), record.split, record.tree,
                            Path(record.path), list(record.images),
                            match=None if reference is None else float(calibrated_match(score, reference)),
                            z=(score - mean) / spread if spread > 0 else 0.0))
        return hits


# -- reading models -----------------------------------------------------------------------------


def expert_layers(expert: Any) -> list[str]:
    """The layer names an aligned expert reads (ProbeXError if it is not an aligned expert with names)."""
    if not hasattr(expert, "encode_text") or not hasattr(expert, "encode"):
        raise ProbeXError(f"{type(expert).__name__} is not an aligned expert (no encode_text); "
                          "load a ProbeXAligner (e.g. a zoo's experts/<aligned tree>/)")
    layers = getattr(expert, "layers_", None)
    if not layers:
        raise ProbeXError(f"this {type(expert).__name__} does not name the layers it was trained on "
                          "(it was fitted on raw tensors); fit it on LayerBanks so it can read a zoo")
    return list(layers)


def read_model_layers(path: str | os.PathLike, layers: Sequence[str],
                      shapes: Optional[Sequence[tuple[int, int]]] = None) -> list["LayerBank"]:
    """The named layers of one safetensors file, each a LayerBank of one model (LoRA layers as their factors).

    Raises:
        ZooError: the file is not readable safetensors, lacks a layer (the message names the
            file, the missing layer and the layers it has), or a layer's shape is not ``shapes``.
    """
    from probex.zoo.bank_build import build_bank
    from probex.zoo.catalog import layer_catalog
    from probex.zoo.records import ModelRecord
    from probex.zoo.safefile import read_header

    path = Path(path)
    header = read_header(path)
    catalog = {info.name: info for info in layer_catalog(header)}
    for number, layer in enumerate(layers):
        info = catalog.get(layer)
        if info is None:
            names = list(catalog)
            shown = ", ".join(names[:12]) + (f", ... ({len(names)} in all)" if len(names) > 12 else "")
            raise ZooError(f"{path}: layer '{layer}' missing (the expert reads {', '.join(layers)}); "
                           f"the file has {len(names)} layer(s): {shown or 'none'}. Upload a model of the expert's tree")
        if shapes is not None and tuple(info.shape) != tuple(shapes[number]):
            raise ZooError(f"{path}: layer '{layer}' is {info.shape[0]} x {info.shape[1]}, but the expert reads "
                           f"{shapes[number][0]} x {shapes[number][1]}; upload a model of the expert's tree")
    record = ModelRecord(id=path.stem, path=path, metadata=dict(header.metadata or {}), header=header)
    return [build_bank([record], layer, cache=False) for layer in layers]


def _input_shapes(expert: Any) -> Optional[list[tuple[int, int]]]:
    shapes = getattr(expert, "input_shapes_", None)
    return [tuple(int(s) for s in shape) for shape in shapes] if shapes else None


def _ids_with_layers(zoo: "ModelZoo", layers: Sequence[str], shapes: Optional[Sequence[tuple[int, int]]]) -> list[str]:
    from probex.zoo.catalog import layer_catalog

    ids = []
    for record in zoo.records:
        catalog = {info.name: info.shape for info in layer_catalog(record.read_header())}
        if all(layer in catalog and (shapes is None or tuple(catalog[layer]) == tuple(shapes[i]))
               for i, layer in enumerate(layers)):
            ids.append(record.id)
    return ids


def _common_models(banks: list) -> list:
    """The banks restricted to the models every one of them holds (a bank leaves out NaN models)."""
    common = set(banks[0].ids)
    for bank in banks[1:]:
        common &= set(bank.ids)
    if all(len(bank) == len(common) for bank in banks) and all(bank.ids == banks[0].ids for bank in banks):
        return banks
    order = [model_id for model_id in banks[0].ids if model_id in common]
    return [bank.select(ids=order) for bank in banks]


def _stage(progress: Optional[Progress], number: int, count: int) -> Optional[Progress]:
    if progress is None:
        return None

    def report(done: int, total: int, message: object = "") -> None:
        progress(number * total + done, count * total, message)

    return report


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return (matrix / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)
