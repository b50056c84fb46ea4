"""The paper's offline ablations of ProbeX: probe sizes, encoder depth, training-set size, text encoder.

Each ablation trains one ProbeX expert per row on one layer of one tree, all else equal (the
report's settings: epochs, patience, seed), and measures it as the report's tables do::

    classifier = classifier_ablations(tree_zoo, "conv3.weight", params)   # sizes, depth, training-set size
    transfer = training_size_ablation(sd_zoo, "unet.down.attn.to_q", "align", params)
    encoders = text_encoder_ablation(sd_zoo, "unet.down.attn.to_q", params)

``probex report`` runs them on its first classifier tree and its first aligned tree (each at
the layer its sweep chose) and writes them with :func:`ablations_markdown`.

- **Probe sizes**: r_U (probes), r_V (the shared projection) and r_T (the representation), each
  a quarter and four times its default with the others at theirs, and the official code's
  128 / 128 / 128; every size is clipped to the layer as ProbeX clips it, and rows that clip to
  the same sizes are trained once.
- **Encoder depth**: 1 (the paper's ProbeX) and deeper encoders (:data:`ENCODER_DEPTHS`).
- **Training-set size** (positive transfer): a seeded random fraction of the tree's training
  models, validation and test unchanged; the paper's lesson is that more models of the same
  tree help. On a classifier tree the Dense expert is trained on the same models beside ProbeX
  (the data-efficiency side of the paper's parameter lesson).
- **Text encoder** (aligned trees): one aligner per encoder available on this machine without
  the network (the bundled MiniLM, open_clip weights already in the Hugging Face cache, local
  files); with only one, there is nothing to compare and the table says so.
"""

from __future__ import annotations

import logging
from typing import Any, Optional, Sequence

import numpy as np

logger = logging.getLogger(__name__)

#: Each of r_U, r_V, r_T is multiplied by these (rounded, at least 1), the other two at their defaults.
SIZE_FACTORS = (0.25, 4)
#: The official ProbeX code's sizes (n_probes, proj_dim, rep_dim = 128 each in its training scripts).
PAPER_SIZES = (128, 128, 128)
#: The encoder depths of the depth ablation (1 is the paper's ProbeX).
ENCODER_DEPTHS = (1, 2, 3)
#: The fractions of a tree's training models of the training-set-size ablation.
TRAINING_FRACTIONS = (0.1, 0.25, 0.5, 1.0)
#: The text encoders the text-encoder ablation tries (those on this machine; see :func:`text_encoder_availability`).
TEXT_ENCODERS = ("minilm", "open_clip:ViT-L-14/openai")
#: The paper's figures for these ablations: table -> row label -> figure. Empty: the supplementary's
#: ablation figures were not within reach offline (not in the official code; the stored copies of the paper
#: that could be searched gave no ablation tables), so every paper cell prints "—". Fill in only figures
#: read in the paper itself.
PAPER_FIGURES: dict[str, dict[str, str]] = {}
NO_FIGURE = "—"


class _ClassifierFits:
    """ProbeX classifiers on one layer, trained on train (or a subset), chosen on val, scored on test;
    each distinct setting is trained once and shared between the tables."""

    def __init__(self, tree_zoo, layer: str, params: dict):
        from probex.experts.labels import TargetEncoding

        self.layer, self.params = layer, params
        self.banks = {split: tree_zoo.bank(layer, split=split) for split in ("train", "val", "test")}
        self.d_W, self.d_H = self.banks["train"].shape
        # every expert gets the full training set's classes: a small subset may miss some of them
        self.classes = TargetEncoding.from_labels(self.banks["train"].labels).classes
        self._rows: dict[tuple, dict] = {}

    def clipped(self, sizes: Sequence[Optional[int]]) -> tuple:
        """The sizes ProbeX would use for these requested ones on this layer (None: its default)."""
        from probex.experts.nn import ProbeX

        encoder = ProbeX(self.d_W, self.d_H, *sizes)
        return encoder.n_probes, encoder.proj_dim, encoder.rep_dim

    def row(self, sizes: Sequence[Optional[int]] = (None, None, None), depth: int = 1,
            n_train: Optional[int] = None) -> dict:
        n_train = len(self.banks["train"]) if n_train is None else n_train
        key = (self.clipped(sizes), depth, n_train)
        if key not in self._rows:
            self._rows[key] = self._fit(sizes, depth, n_train)
        return dict(self._rows[key])

    def dense(self, n_train: int) -> dict:
        """The Dense expert on the same ``n_train`` training models as :meth:`row` (its score, val and size)."""
        from probex.experts.classifier import DenseExpert

        params = {key: value for key, value in self.params.items() if key != "views"}
        expert = DenseExpert(**{**params, "classes": self.classes}).fit(self._train(n_train), val=(self.banks["val"], None))
        score = expert.score(self.banks["test"])
        logger.info("%s: Dense, %d training models: %.3f", self.layer, n_train, score)
        return {"dense": score, "dense_val": _best_val(expert), "dense_parameters": int(expert.n_parameters_)}

    def _train(self, n_train: int):
        return _training_subset(self.banks["train"], n_train, self.params.get("seed", 0))

    def _fit(self, sizes: Sequence[Optional[int]], depth: int, n_train: int) -> dict:
        from probex.experts.classifier import ProbeXClassifier

        n_probes, proj_dim, rep_dim = sizes
        train = self._train(n_train)
        expert = ProbeXClassifier(**{**self.params, "n_probes": n_probes, "proj_dim": proj_dim, "rep_dim": rep_dim,
                                     "encoder_depth": depth, "classes": self.classes}
                                  ).fit(train, val=(self.banks["val"], None))
        encoder, score = expert.network_.encoders[0], expert.score(self.banks["test"])
        logger.info("%s: r_U %d, r_V %d, r_T %d, depth %d, %d training models: %.3f", self.layer, encoder.n_probes,
                    encoder.proj_dim, encoder.rep_dim, depth, n_train, score)
        return {"r_U": encoder.n_probes, "r_V": encoder.proj_dim, "r_T": encoder.rep_dim, "depth": depth,
                "training_models": n_train, "score": score, "val": _best_val(expert),
                "n_parameters": int(expert.n_parameters_)}


def _best_val(expert) -> Optional[float]:
    return max((log.val_score for log in expert.history_ if log.val_score is not None), default=None)


def _training_subset(bank, n: int, seed: int):
    """``n`` of the bank's models, drawn at random with ``seed`` (the whole bank when n covers it)."""
    if n >= len(bank):
        return bank
    chosen = np.sort(np.random.default_rng(seed).choice(len(bank), size=n, replace=False))
    return bank[chosen.tolist()]


def _fraction_sizes(n_models: int, fractions: Sequence[float]) -> list[int]:
    """Distinct numbers of training models for the fractions (at least 2 each), in increasing order."""
    return sorted({min(n_models, max(2, round(fraction * n_models))) for fraction in fractions})


# ------------------------------------------------------------------------------- classifier tables
def classifier_ablations(tree_zoo, layer: str, params: dict, size_factors: Sequence[float] = SIZE_FACTORS,
                         depths: Sequence[int] = ENCODER_DEPTHS,
                         fractions: Sequence[float] = TRAINING_FRACTIONS) -> dict:
    """The probe-size, encoder-depth and training-set-size tables of a classifier tree at ``layer``.

    Returns ``{"probe_sizes", "encoder_depth", "training_size"}``, each ``{"layer", "metric", "rows"}``
    with test mean binary accuracy per row; the default setting is trained once for all three. A
    training-size row also holds the Dense expert on the same models (``dense``, ``dense_val``,
    ``dense_parameters``).
    """
    fits = _ClassifierFits(tree_zoo, layer, params)
    metric = "test mean binary accuracy"
    default = fits.row()
    base = (default["r_U"], default["r_V"], default["r_T"])
    size_rows, seen = [{"setting": "default (scaled to the layer)", **default}], {base}
    variants = []
    for position, name in enumerate(("r_U", "r_V", "r_T")):
        for factor in size_factors:
            sizes = list(base)
            sizes[position] = max(1, round(base[position] * factor))
            variants.append((f"{name} x {factor:g}", tuple(sizes)))
    variants.append(("the official code's " + " / ".join(map(str, PAPER_SIZES)), PAPER_SIZES))
    for label, sizes in variants:
        if fits.clipped(sizes) not in seen:  # rows that clip to sizes already in the table are left out
            seen.add(fits.clipped(sizes))
            size_rows.append({"setting": label, **fits.row(sizes)})
    depth_rows = [{"setting": f"depth {depth}", **fits.row(depth=depth)} for depth in depths]
    n_models = len(fits.banks["train"])
    transfer_rows = [{"setting": f"{n} of {n_models}", "fraction": n / n_models, **fits.row(n_train=n),
                      **fits.dense(n)} for n in _fraction_sizes(n_models, fractions)]
    return {"probe_sizes": {"layer": layer, "metric": metric, "rows": size_rows},
            "encoder_depth": {"layer": layer, "metric": metric, "rows": depth_rows},
            "training_size": {"layer": layer, "metric": metric, "rows": transfer_rows}}


# ------------------------------------------------------------------------------- aligned tables
def training_size_ablation(tree_zoo, layer: str, params: dict, fractions: Sequence[float] = TRAINING_FRACTIONS) -> dict:
    """Positive transfer on an aligned tree: an aligner per fraction of the training models (validation and
    held-out splits unchanged), zero-shot top-1 on the held-out test split; ``{"layer", "metric", "rows"}``."""
    from probex.experiments.harness import aligned_splits, banks_for
    from probex.experts.aligner import ProbeXAligner, names_of

    splits = aligned_splits(tree_zoo)
    banks = banks_for(tree_zoo, [layer], splits)
    held_out = sorted(set(names_of(banks[splits[3]][0].labels)))
    n_models = len(banks["train"][0])
    rows = []
    for n in _fraction_sizes(n_models, fractions):
        train = _training_subset(banks["train"][0], n, params.get("seed", 0))
        expert = ProbeXAligner(**params).fit([train], val=(banks[splits[2]], None))
        score = expert.score(banks[splits[3]], candidates=held_out)
        logger.info("%s: %d training models: zero-shot %.3f", layer, n, score)
        rows.append({"setting": f"{n} of {n_models}", "fraction": n / n_models, "training_models": n,
                     "training_concepts": len(set(names_of(train.labels))), "score": score, "val": _best_val(expert),
                     "n_parameters": int(expert.n_parameters_)})
    return {"layer": layer, "metric": "zero-shot top-1 (held-out test)", "rows": rows}


def text_encoder_availability(specs: Sequence[str] = TEXT_ENCODERS, device: str = "auto") -> dict[str, Optional[str]]:
    """spec -> None where the encoder works on this machine without the network, else why not.

    An open_clip pretrained tag counts only when its weights are already in the Hugging Face cache:
    the report never downloads a model (a local ``.safetensors`` spec is tried as given).
    """
    from probex.language.openclip import open_clip_weights_on_machine
    from probex.language.text import OPEN_CLIP_PREFIX, load_text_encoder

    found: dict[str, Optional[str]] = {}
    for spec in specs:
        if spec.startswith(OPEN_CLIP_PREFIX) and not open_clip_weights_on_machine(spec):
            found[spec] = "its weights are not on this machine (the report downloads nothing)"
            continue
        try:
            load_text_encoder(spec, device=device).encode(["a"])
            found[spec] = None
        except Exception as error:  # ImportError, HubUnavailableError, ProbeXError: not usable here
            found[spec] = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    return found


def text_encoder_ablation(tree_zoo, layer: str, params: dict, specs: Sequence[str] = TEXT_ENCODERS) -> dict:
    """One aligner per text encoder available here (in-distribution and zero-shot top-1), or, with fewer
    than two, none: ``{"layer", "available", "unavailable": {spec: why}, "rows"}``."""
    from probex.experiments.harness import aligned_splits, banks_for
    from probex.experts.aligner import ProbeXAligner, names_of

    availability = text_encoder_availability(specs, device=params.get("device", "auto"))
    available = [spec for spec, why in availability.items() if why is None]
    result: dict[str, Any] = {"layer": layer, "available": available,
                              "unavailable": {spec: why for spec, why in availability.items() if why is not None},
                              "rows": []}
    if len(available) < 2:
        return result
    splits = aligned_splits(tree_zoo)
    banks = banks_for(tree_zoo, [layer], splits)
    training = sorted(set(names_of(banks["train"][0].labels)))
    held_out = sorted(set(names_of(banks[splits[3]][0].labels)))
    for spec in available:
        expert = ProbeXAligner(**{**params, "text_encoder": spec}).fit(banks["train"], val=(banks[splits[2]], None))
        result["rows"].append({"setting": spec, "in_distribution": expert.score(banks["test"], candidates=training),
                               "score": expert.score(banks[splits[3]], candidates=held_out),
                               "n_parameters": int(expert.n_parameters_)})
    return result


def measure_ablations(zoo, classifier: Optional[tuple[str, str]], aligned: Optional[tuple[str, str]], params: dict,
                      text_encoders: Sequence[str] = TEXT_ENCODERS) -> dict:
    """Every ablation the zoo allows: the classifier tables on ``classifier`` = (tree, layer), positive
    transfer and the text encoder on ``aligned`` = (tree, layer); either may be None (its tables are left out).

    Returns ``{"classifier_tree", "probe_sizes", "encoder_depth", "aligned_tree", "text_encoder",
    "training_size": {tree: table}}`` with the keys the zoo allows.
    """
    result: dict[str, Any] = {"training_size": {}}
    if classifier is not None:
        tree, layer = classifier
        tables = classifier_ablations(zoo.select(tree=tree), layer, params)
        result.update(classifier_tree=tree, probe_sizes=tables["probe_sizes"], encoder_depth=tables["encoder_depth"])
        result["training_size"][tree] = tables["training_size"]
    if aligned is not None:
        tree, layer = aligned
        tree_zoo = zoo.select(tree=tree)
        result["aligned_tree"] = tree
        result["training_size"][tree] = training_size_ablation(tree_zoo, layer, params)
        result["text_encoder"] = text_encoder_ablation(tree_zoo, layer, params, text_encoders)
    return result


# ------------------------------------------------------------------------------- writing
def _paper(table: str, label: str) -> str:
    return PAPER_FIGURES.get(table, {}).get(label, NO_FIGURE)


def ablations_markdown(ablations: dict) -> list[str]:
    """The ablation tables as Markdown lines (the report's table writer), one table per ablation."""
    from probex.experiments.report import _table

    if not ablations:
        return []
    out = ["## Ablations of ProbeX (the paper's supplementary)", "",
           "Each row is one ProbeX expert on one layer, all else equal (the report's epochs, patience and seed), "
           "trained on train and chosen on validation. The paper column holds the supplementary's figure where we "
           f"carry one; {'none of its ablation figures was within reach offline, so every such cell is ' + NO_FIGURE if not PAPER_FIGURES else 'cells without one show ' + NO_FIGURE}.",
           ""]
    tree = ablations.get("classifier_tree")
    sizes = ablations.get("probe_sizes")
    if sizes:
        out += [f"### Probe sizes ({tree}, {sizes['layer']}): {sizes['metric']}", "",
                "r_U probes, a shared projection to r_V, a representation of r_T; each a quarter and four times its "
                "default, the others at theirs (sizes clipped to the layer as ProbeX clips them).", ""]
        out += _table(["setting", "r_U", "r_V", "r_T", "score", "val", "params", "paper"],
                      [[row["setting"], row["r_U"], row["r_V"], row["r_T"], row["score"], row["val"], row["n_parameters"],
                        _paper("probe_sizes", row["setting"])] for row in sizes["rows"]])
    depth = ablations.get("encoder_depth")
    if depth:
        out += [f"### Encoder depth ({tree}, {depth['layer']}): {depth['metric']}", "",
                "Depth 1 is the paper's ProbeX; each further level adds an activation and an r_T x r_T linear layer.", ""]
        out += _table(["encoder", "score", "val", "params", "paper"],
                      [[row["setting"], row["score"], row["val"], row["n_parameters"], _paper("encoder_depth", row["setting"])]
                       for row in depth["rows"]])
    for name, transfer in (ablations.get("training_size") or {}).items():
        rows = transfer["rows"]
        concepts = all("training_concepts" in row for row in rows)  # an aligned tree: concepts seen
        dense = bool(rows) and all("dense" in row for row in rows)  # a classifier tree: Dense on the same models
        out += [f"### Training-set size, positive transfer ({name}, {transfer['layer']}): {transfer['metric']}", "",
                "A random part of the tree's training models (seeded); validation and test unchanged. More models of "
                "the same tree should help."
                + (" Beside ProbeX, the Dense expert on the same models "
                   f"({rows[-1]['dense_parameters'] / max(rows[-1]['n_parameters'], 1):.1f}x ProbeX's parameters; "
                   "margin: ProbeX minus Dense): which of the two needs fewer models to read the classes." if dense else ""),
                ""]
        out += _table(["training models", "fraction"] + (["concepts"] if concepts else []) + ["score", "val"]
                      + (["Dense", "Dense val", "margin"] if dense else []) + ["paper"],
                      [[row["setting"], f"{row['fraction']:.2f}"] + ([row["training_concepts"]] if concepts else [])
                       + [row["score"], row["val"]]
                       + ([row["dense"], row["dense_val"], f"{row['score'] - row['dense']:+.3f}"] if dense else [])
                       + [_paper("training_size", row["setting"])] for row in rows])
    encoders = ablations.get("text_encoder")
    if encoders:
        out += [f"### Text encoder ({ablations.get('aligned_tree')}, {encoders['layer']})", ""]
        missing = "; ".join(f"{spec}: {why}" for spec, why in encoders["unavailable"].items())
        if encoders["rows"]:
            out += _table(["text encoder", "in-distribution", "zero-shot", "params", "paper"],
                          [[row["setting"], row["in_distribution"], row["score"], row["n_parameters"],
                            _paper("text_encoder", row["setting"])] for row in encoders["rows"]])
            out += [f"Not available here: {missing}.", ""] if missing else []
        else:
            only = ", ".join(encoders["available"]) or "no encoder"
            out += [f"Only {only} is available on this machine ({missing or 'no other encoder was named'}), so there "
                    f"is no second text encoder to compare; Table 2's aligners use {only}.", ""]
    return out
