"""Layer sweeps: one expert per candidate layer, the best layer kept by validation.

The best layer differs per tree and task, so the paper trains an expert on every layer and
picks by validation. ``sweep_layers`` does that on one population (a zoo of one tree)::

    result = sweep_layers(zoo.select(tree="cnn-supervised"), task="classes", results="sweep.jsonl")
    result.best.layer, result.best.val, result.best.test
    result.to_frame()          # one row per layer: name, shape, scores, parameters, seconds

Tasks:
    ``"classes"``: a :class:`~probex.experts.ProbeXClassifier` predicts each model's training
        classes; fit on ``train``, the epoch and the layer chosen on ``val``, reported on ``test``
        (mean binary accuracy, chance 0.5 for multi-label).
    ``"align"``: a :class:`~probex.experts.aligner.ProbeXAligner` maps weights into a text space; fit on
        ``train``; validation is zero-shot top-1 on the held-out validation split (``val_holdout``
        in Model-J; :meth:`~probex.zoo.ModelZoo.held_out_splits`) when the zoo has held-out
        classes (else top-1 on ``val``); reported: ``test`` (in-distribution top-1, on the test
        models whose concept was seen in training) and the held-out test split (zero-shot top-1
        over the held-out classes).

With ``results=PATH`` every finished layer is appended to a JSON-lines file at once, so an
interrupted sweep started again with the same arguments skips the layers already there.

Job arrays (Slurm and the like): ``shard=(i, n)`` sweeps every n-th layer starting at the i-th
(0-based) and appends to its own file beside ``results`` (``sweep.jsonl`` ->
``sweep.shard-0-of-4.jsonl``), so shards never write to one file. A later sweep without
``shard`` reads ``results`` and every shard file beside it: it trains only what no shard
finished and returns the whole table.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from probex.errors import ProbeXError, ZooError

logger = logging.getLogger(__name__)

TASKS = ("classes", "align")
BACKENDS = ("local", "ray")
#: Short, fast defaults for sweeping many layers (the experts' own defaults train longer).
SWEEP_DEFAULTS = {"epochs": 100, "patience": 20}

Progress = Callable[[int, int, str], None]


@dataclass
class LayerScore:
    """One layer's expert in a sweep: its scores, size and cost."""

    layer: str
    shape: tuple[int, int]
    val: float
    test: Optional[float]
    n_parameters: int
    best_epoch: int
    seconds: float
    zero_shot_test: Optional[float] = None  # "align" with held-out classes only
    key: str = ""  # what was swept (task, expert, parameters): rows of other sweeps are ignored
    readout: bool = False  # the classification head (:func:`readout_layers`): measured, never chosen

    @classmethod
    def from_json(cls, row: dict) -> "LayerScore":
        row = dict(row)
        row["shape"] = tuple(row["shape"])
        return cls(**{name: row[name] for name in cls.__dataclass_fields__ if name in row})


@dataclass
class SweepResult:
    """Every layer swept, in sweep order; ``best`` is chosen by validation."""

    task: str
    scores: list[LayerScore]
    experts: dict[str, Any] = field(default_factory=dict, repr=False)  # layer -> expert fitted in this run

    @property
    def best(self) -> LayerScore:
        """The layer with the highest validation score; ties go to the smaller expert, then the earlier layer.

        A read-out layer (the classification head) is chosen only when the sweep holds nothing else.
        """
        if not self.scores:
            raise ProbeXError("the sweep holds no layers")
        return self.ranked()[0]

    def ranked(self) -> list[LayerScore]:
        """The layers from best to worst by validation (same tie rule as ``best``), read-out layers last."""
        order = {id(s): i for i, s in enumerate(self.scores)}
        return sorted(self.scores, key=lambda s: (s.readout, -s.val, s.n_parameters, order[id(s)]))

    def to_frame(self):
        """A pandas DataFrame, one row per layer, with a ``best`` column."""
        import pandas as pd

        best = self.best.layer if self.scores else None
        rows = [{**asdict(s), "shape": f"{s.shape[0]}x{s.shape[1]}", "best": s.layer == best} for s in self.scores]
        frame = pd.DataFrame(rows)
        return frame.drop(columns=["key"]) if "key" in frame else frame


def matrix_layers(zoo, pattern: Optional[str] = None) -> list:
    """The zoo's layers an expert can read (matrices, not vectors), optionally those matching ``pattern`` (regex)."""
    layers = [info for info in zoo.catalog() if info.kind != "vector"]
    if pattern is not None:
        try:
            regex = re.compile(pattern)
        except re.error as error:
            raise ProbeXError(f"layers: {pattern!r} is not a valid regular expression ({error})") from None
        layers = [info for info in layers if regex.search(info.name)]
    return layers


#: How classification heads are named (``head.weight``, ``classifier.weight``, ``fc.weight``).
_HEAD_NAME = re.compile(r"(^|\.)(head|classifier|fc|logits)(\.weight)?$")


def readout_layers(zoo) -> set[str]:
    """The zoo's classification heads: layers named like a head whose rows are the class slots.

    A head's rows are its models' classes (as many rows as a model has training classes), so
    reading the training classes off it is a trivial read-out, not what a weight-space expert is
    for. Sweeps measure it (the row is flagged ``readout``) but choose a hidden layer.
    """
    slots = {len(record.labels) for record in zoo.records if record.labels}
    return {info.name for info in matrix_layers(zoo) if _HEAD_NAME.search(info.name) and info.shape[0] in slots}


def default_task(zoo) -> str:
    """``"align"`` where the zoo holds held-out classes (its aligned trees'), else ``"classes"``."""
    return "align" if zoo.held_out_splits() else "classes"


def _make_expert(task: str, params: dict):
    if task == "classes":
        from probex.experts.classifier import ProbeXClassifier

        return ProbeXClassifier(**params)
    from probex.experts.aligner import ProbeXAligner

    return ProbeXAligner(**params)


def _sweep_key(task: str, params: dict) -> str:
    from probex.experts.views import SINGLE_VIEW, SIZES_KEY, SIZES_SCALED, parse_views

    key: dict = {"task": task, "params": params}
    try:
        multiview = parse_views(params.get("views", "xu")) != SINGLE_VIEW
    except ProbeXError:  # refused when the expert is made, not here
        multiview = False
    if multiview:  # None sizes scale with the layer now (they were 128): rows swept before are not reused;
        key[SIZES_KEY] = SIZES_SCALED  # single-view keys (the shipped sweeps') are unchanged
    text = json.dumps(key, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> (i, n), with 0 <= i < n (``SLURM_ARRAY_TASK_ID/count``)."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if match is None or not 0 <= int(match.group(1)) < int(match.group(2)):
        raise ProbeXError(f"a shard is i/n with 0 <= i < n (e.g. 0/4); got {text!r}")
    return int(match.group(1)), int(match.group(2))


def shard_results_path(path: Path, shard: tuple[int, int]) -> Path:
    """Where shard i of n appends its rows: ``<stem>.shard-i-of-n<suffix>`` beside ``path``."""
    index, count = shard
    return path.with_name(f"{path.stem}.shard-{index}-of-{count}{path.suffix}")


def result_files(path: Path) -> list[Path]:
    """``path`` and the shard files beside it (those that exist)."""
    shards = sorted(path.parent.glob(f"{glob.escape(path.stem)}.shard-*-of-*{glob.escape(path.suffix)}"))
    return [file for file in [path, *shards] if file.is_file()]


def read_sweep(path: str | os.PathLike, task: str = "classes", params: Optional[dict] = None) -> list[LayerScore]:
    """The rows of a finished (or partial) sweep, shards included, for one task and parameters."""
    return list(_read_all(Path(path), _sweep_key(task, {**SWEEP_DEFAULTS, **(params or {})})).values())


def _read_all(path: Path, key: str) -> dict[str, LayerScore]:
    """layer -> its row, from ``path`` and its shard files, for the sweep ``key``."""
    done: dict[str, LayerScore] = {}
    for file in result_files(path):
        done.update(_read_results(file, key))
    return done


def check_results_file(path: Path) -> None:
    """Refuse ``path`` as a results file unless it is absent, empty or a sweep's own (rows are appended to it)."""
    from probex.storage import open_regular

    if not os.path.lexists(path):
        return
    if path.is_symlink() or not path.is_file():
        raise ProbeXError(f"{path}: not a regular file; sweep results go to a file of their own (choose another)")
    with open_regular(path) as handle:
        first = handle.readline(1 << 20)
    try:
        row = json.loads(first) if first.strip() else {"layer": None, "key": None}
    except ValueError:
        row = None
    if not isinstance(row, dict) or "layer" not in row or "key" not in row:
        raise ProbeXError(f"{path}: not a probex sweep results file, and rows would be appended to it; "
                          "choose another results file")


def _read_results(path: Path, key: str) -> dict[str, LayerScore]:
    done: dict[str, LayerScore] = {}
    if not path.is_file():
        return done
    check_results_file(path)
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by a kill: that layer runs again
            logger.warning("%s:%d: unreadable line ignored (an interrupted write)", path, number)
            continue
        if isinstance(row, dict) and row.get("key") == key and isinstance(row.get("layer"), str):
            done[row["layer"]] = LayerScore.from_json(row)
    return done


def _check_results_file(path: Path) -> None:
    """Before any training: the results file is a sweep's own (:func:`check_results_file`) and can be written."""
    from probex.storage import check_output_file

    check_results_file(path)
    if not (path.is_file() and path.stat().st_size):
        check_output_file(path, "results file")  # its folder exists or can be made, and is writable
    elif not os.access(path, os.W_OK):
        raise ProbeXError(f"{path}: the results file is not writable; choose another --results path")


def _append_result(path: Path, score: LayerScore) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(asdict(score)) + "\n"
    with open(path, "a", encoding="utf-8") as handle:  # one line per write: a kill loses at most that line
        handle.write(line)
        handle.flush()
        os.fsync(handle.fileno())


def require_splits(zoo, task: str) -> None:
    """Raise ZooError naming the splits ``task`` needs that ``zoo`` lacks (``train`` and a validation split)."""
    held_out = zoo.held_out_splits() if task == "align" else ()
    needed = {"train", held_out[0] if held_out else "val"}
    missing = needed - set(zoo.splits)
    if missing:
        raise ZooError(f"{zoo.root}: training a {task!r} expert needs the splits {sorted(missing)}; "
                       f"this zoo has {zoo.splits}")


def _align_splits(zoo) -> dict[str, str]:
    """The splits an alignment reads (train, test, the zoo's held-out splits) and what each is for."""
    held_out = zoo.held_out_splits() or ("val_holdout", "test_holdout")
    uses = {"train": "training", "test": "in-distribution scoring", held_out[0]: "validation (zero-shot)"}
    for split in held_out[1:]:
        uses[split] = "zero-shot scoring"
    return uses


def check_alignment_concepts(zoo) -> list[str]:
    """Check, before any training, that a zoo's concepts can give every alignment figure; returns notes.

    Reads only the records (no weights). Refuses (ZooError) a population whose figures cannot be
    measured at all: a model of ``train``, ``test`` or a held-out split (``val_holdout``,
    ``test_holdout`` or those the tree's role names) without a concept label, fewer than two
    training concepts, or no test model whose concept has training models. Notes what is
    measured on less than the split: test models whose concept has no training model are left
    out of in-distribution scoring (they cannot be among its candidates); held-out concepts that
    also have training models; fewer than two held-out concepts (zero-shot top-1 is then 1 by
    construction).
    """
    uses = _align_splits(zoo)
    concepts: dict[str, list[str]] = {split: [] for split in uses}
    for split in uses:
        records = [record for record in zoo.records if record.split == split]
        unlabelled = [record.id for record in records if not record.labels]
        if unlabelled:
            raise ZooError(f"{zoo.root}: {len(unlabelled)} {split} model(s) have no concept label (e.g. {unlabelled[0]}); "
                           f"alignment needs one per model for {uses[split]}; fix their metadata or leave them out")
        concepts[split] = [record.labels[0] for record in records]
    trained = set(concepts["train"])
    if len(trained) < 2:
        raise ZooError(f"{zoo.root}: the train split holds {len(trained)} concept(s); alignment needs at least 2")
    unseen = sorted(set(concepts["test"]) - trained)
    if unseen and len(unseen) == len(set(concepts["test"])):  # (a zoo without a test split has none to score)
        raise ZooError(f"{zoo.root}: no test model's concept has training models (e.g. {unseen[0]!r}); "
                       "in-distribution figures cannot be measured; move some models of these concepts to train")
    notes = []
    if unseen:
        left_out = sum(name in set(unseen) for name in concepts["test"])
        notes.append(f"{left_out} test model(s) of {len(unseen)} concept(s) with no training model "
                     f"({', '.join(map(repr, unseen[:3]))}{', ...' if len(unseen) > 3 else ''}) are left out of "
                     "in-distribution scoring")
    for split in [name for name in list(uses)[2:] if name in zoo.splits]:
        leaked = sorted(set(concepts[split]) & trained)
        if leaked:
            notes.append(f"{len(leaked)} {split} concept(s) also have training models (e.g. {leaked[0]!r}): "
                         "zero-shot on them is not held out")
        if len(set(concepts[split])) < 2:
            notes.append(f"{split} holds {len(set(concepts[split]))} concept(s): its top-1 is 1 by construction")
    return notes


def seen_concepts(bank, classes) -> Any:
    """The models of ``bank`` whose concept is among ``classes`` (the training concepts)."""
    from probex.experts.aligner import names_of

    known = set(classes)
    return bank.select(ids=[i for i, name in zip(bank.ids, names_of(bank.labels)) if name in known])


def fit_layer(zoo, task: str, layer: str, params: dict, progress=None) -> tuple[Any, LayerScore]:
    """One layer's expert for ``task`` (fit on ``train``, scored as the module docstring says) and its LayerScore.

    ``progress(epoch, epochs, log)`` is called after every training epoch (see
    :mod:`probex.experts.training`); the app draws its live curves from it.

    Raises:
        ZooError: the zoo lacks the splits the task needs, or the layer.
    """
    from probex.experts.aligner import names_of

    require_splits(zoo, task)
    splits = set(zoo.splits)
    started = time.perf_counter()
    expert = _make_expert(task, params)
    train = zoo.bank(layer, split="train")
    zero_shot_test = None
    if task == "classes":
        val = zoo.bank(layer, split="val")
        expert.fit(train, val=(val, None), progress=progress)
        val_score = expert.score(val)
        test = expert.score(zoo.bank(layer, split="test")) if "test" in splits else None
    else:
        held_out = zoo.held_out_splits()
        holdout = bool(held_out)
        val = zoo.bank(layer, split=held_out[0] if holdout else "val")
        expert.fit(train, val=(val, None), progress=progress)
        val_names = sorted(set(names_of(val.labels)))
        val_score = expert.score(val, candidates=val_names if holdout else None)
        test = None
        if "test" in splits:  # in-distribution: the test models of concepts seen in training
            seen = seen_concepts(zoo.bank(layer, split="test"), expert.classes_)
            test = expert.score(seen) if len(seen) else None
        if len(held_out) > 1:
            test_holdout = zoo.bank(layer, split=held_out[1])
            zero_shot_test = expert.score(test_holdout, candidates=sorted(set(names_of(test_holdout.labels))))
    score = LayerScore(
        layer=layer,
        shape=tuple(int(s) for s in train.shape),
        val=round(float(val_score), 4),
        test=None if test is None else round(float(test), 4),
        n_parameters=int(expert.n_parameters_),
        best_epoch=int(expert.best_epoch_),
        seconds=round(time.perf_counter() - started, 2),
        zero_shot_test=None if zero_shot_test is None else round(float(zero_shot_test), 4),
    )
    return expert, score


def sweep_layers(
    zoo,
    task: str = "classes",
    layers: Optional[Sequence[str] | str] = None,
    params: Optional[dict] = None,
    results: Optional[str | os.PathLike] = None,
    progress: Optional[Progress] = None,
    shard: Optional[tuple[int, int]] = None,
    backend: str = "local",
    address: Optional[str] = None,
    workers: Optional[int] = None,
) -> SweepResult:
    """Train one expert per layer of ``zoo`` (one tree) and score it; see the module docstring.

    Args:
        zoo: a ModelZoo of one tree with ``train`` and ``val`` splits (``val_holdout`` for
            zero-shot alignment).
        task: ``"classes"`` or ``"align"``.
        layers: layer names (in Model-J zoos also the paper's layer numbers, ``["46"]``), a
            regex over the names (a string), or None for every matrix layer.
        params: expert hyperparameters (default :data:`SWEEP_DEFAULTS`, on the CPU or GPU by
            ``device="auto"``); the same for every layer.
        results: a JSON-lines file; finished layers are appended and skipped on a rerun.
        progress: ``progress(done, total, message)`` after each layer.
        shard: ``(i, n)``: only every n-th layer from the i-th, appended to a shard file
            beside ``results`` (see the module docstring).
        backend: ``"local"`` (one layer after another in this process) or ``"ray"`` (layers
            spread over the workers of a Ray cluster; needs ``pip install ray``).
        address: the Ray cluster to join (``"auto"``, ``"ray://host:10001"``); None starts a
            local Ray instance.
        workers: CPUs of the local Ray instance (default: all); one layer trains per CPU.
    """
    if task not in TASKS:
        raise ProbeXError(f"task must be one of {TASKS}; got {task!r}")
    if backend not in BACKENDS:
        raise ProbeXError(f"backend must be one of {BACKENDS}; got {backend!r}")
    require_splits(zoo, task)
    if task == "align":  # before any layer trains: concepts every figure needs
        for note in check_alignment_concepts(zoo):
            logger.warning("%s: %s", zoo.root, note)
    if layers is None or isinstance(layers, str):
        names = [info.name for info in matrix_layers(zoo, layers)]
        if not names:
            raise ZooError(f"{zoo.root}: no matrix layer matches {layers!r}")
    else:
        names = [zoo.layer_name(layer) for layer in layers]  # names, or the paper's numbers in Model-J zoos
        known = {info.name for info in zoo.catalog()}
        unknown = [name for name in names if name not in known]
        if unknown:
            raise ZooError(f"{zoo.root}: no layer {unknown[0]!r}" + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else "")
                           + f"; layers: {', '.join(sorted(known)[:8])}{', ...' if len(known) > 8 else ''}")
    if shard is not None:
        index, count = shard
        if not 0 <= index < count:
            raise ProbeXError(f"a shard is (i, n) with 0 <= i < n; got {shard}")
        names = names[index::count]
    params = {**SWEEP_DEFAULTS, **(params or {})}
    key = _sweep_key(task, params)
    path = Path(results) if results is not None else None
    if path is not None:
        _check_results_file(shard_results_path(path, shard) if shard is not None else path)
    done = _read_all(path, key) if path is not None else {}
    if path is not None and shard is not None:
        path = shard_results_path(path, shard)
    finished = {layer: done[layer] for layer in names if layer in done}
    if finished:
        logger.info("sweep: %d of %d layers already done (%s)", len(finished), len(names), results)
    todo = [layer for layer in names if layer not in finished]
    experts: dict[str, Any] = {}
    readouts = readout_layers(zoo) if task == "classes" else set()

    def record(layer: str, expert: Any, score: LayerScore) -> None:
        score.key, score.readout = key, layer in readouts
        experts[layer], finished[layer] = expert, score
        if path is not None:
            _append_result(path, score)
        logger.info("sweep: %s val %.3f test %s (%.1f s)", layer, score.val, score.test, score.seconds)
        if progress is not None:
            progress(len(finished), len(names), layer)

    if progress is not None and finished:
        progress(len(finished), len(names), "resumed")
    if backend == "ray" and todo:
        from probex.experiments.sweep_ray import fit_layers_on_ray

        fit_layers_on_ray(zoo, task, todo, params, record, address=address, workers=workers)
    else:
        for layer in todo:
            record(layer, *fit_layer(zoo, task, layer, params))
    scores = [finished[layer] for layer in names]
    for score in scores:  # rows written before read-outs were flagged get their flag here
        score.readout = score.layer in readouts
    return SweepResult(task, scores, experts)
