"""Building the whole demo jungle: discriminative trees, the forest, the generative tree, a manifest.

``build_jungle(out)`` writes a zoo folder that ``ModelZoo.open`` reads::

    out/probex_zoo.json              the manifest of every model (our layout)
    out/discriminative/<tree>/...    fp16 classifiers, one safetensors file each (LoRA updates and
                                     head for a LoRA tree), and class_images/ (what each model shows)
    out/generative/<split>/model_idx_NNNN/pytorch_lora_weights.safetensors  (+ training_images/)
                                     exactly the Model-J generative layout
    out/roots/<tree>.safetensors     the discriminative roots (reused with ``roots=``)
    out/recommended_layers.json, out/experts/<tree>/, out/sweeps/   the validation sweep
                                     (:mod:`probex.jungle.validation`)
    out/build.json                   what was built, how, and how long each part took

Deterministic for a seed (on one machine and torch version). The parts are independent, so
``workers=2`` pre-trains the generative tree's root in a second process while the classifiers train;
then that process takes the classifier trees the first has not taken yet, and both train the LoRA
tree's chunks (which process trains what changes no byte), and
``generative=<earlier jungle>/generative`` keeps an earlier build's LoRA tree byte for byte
(:func:`read_generative` reads its manifest entries back off its files).
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from queue import Empty
from typing import Iterable, Iterator, Optional

import torch
from safetensors.torch import load_file

from probex.errors import ProbeXError
from probex.jungle import discriminative as disc
from probex.jungle.architectures import make_model
from probex.progress import Progress
from probex.storage import atomic_write_json, claim_directory, json_field
from probex.zoo.safefile import write_safetensors

logger = logging.getLogger(__name__)

SIZES = ("small", "full")
NAME = "demo-jungle"
DESCRIPTION = (
    "The built-in demo jungle of ProbeX Explorer: small image classifiers fine-tuned from four "
    "roots (three CNN roots, one MLP-Mixer root), a forest of independently initialised CNNs, and "
    "LoRA fine-tunes of a tiny text-to-image model, one procedural concept each."
)


#: The classifier trees and the forest, in the order the manifest lists them.
DISCRIMINATIVE = disc.TREES + (disc.FOREST,)
#: The order two processes take them in: the longest first (measured, full size: the CNN trees and the
#: forest 220-245 s each, the mixer tree 140 s), so the short one is left for the process that finishes
#: the generative tree, instead of one process taking a long tree while the other has nothing left.
BUILD_ORDER = ("cnn-own-heads", "cnn-attributes", "cnn-supervised", "forest", "mixer-supervised")


def _build_order() -> list[str]:
    """:data:`BUILD_ORDER`, then any tree of :data:`DISCRIMINATIVE` it does not name (a tree added later is built too)."""
    names = [recipe.name for recipe in DISCRIMINATIVE]
    return [name for name in BUILD_ORDER if name in names] + [name for name in names if name not in BUILD_ORDER]


def _root_path(roots: Path, tree: str) -> Path:
    return roots / f"{tree}.safetensors"


def _load_or_pretrain_root(recipe: disc.TreeRecipe, steps: int, roots_in: Optional[Path], roots_out: Path,
                           progress: Optional[Progress]) -> tuple[torch.nn.Module, dict]:
    source = _root_path(roots_in, recipe.name) if roots_in is not None else None
    if source is not None and source.is_file():
        model = make_model(recipe.architecture, 16)
        model.load_state_dict(load_file(str(source)))
        info = {"reused": str(source), "seconds": 0.0}
    else:
        started = time.perf_counter()
        model = disc.pretrain_root(recipe, steps, progress)
        info = {"reused": None, "seconds": round(time.perf_counter() - started, 1), "steps": steps}
    info["accuracy"] = round(disc.root_accuracy(model, recipe), 4)
    target = _root_path(roots_out, recipe.name)
    if info["reused"] is None or source.resolve() != target.resolve():  # a new root, or one from elsewhere
        write_safetensors(target, model.state_dict(),  # bytes that depend on the content only
                          metadata={"tree": recipe.name, "architecture": recipe.architecture,
                                    "objective": str(recipe.objective), "root_accuracy": str(info["accuracy"])})
    return model, info


def build_discriminative(out: Path, size: str, seed: int, roots: Optional[Path] = None,
                         progress: Optional[Progress] = None, resume: bool = False) -> tuple[list[dict], dict]:
    """Roots (pre-trained or reused), fine-tuned trees and the forest; manifest entries and timings.

    ``resume`` keeps every tree whose model files an earlier (interrupted) build already wrote
    into ``out`` in full (:func:`read_written_tree`) instead of training it again.
    """
    per_tree, report = build_trees(out, [recipe.name for recipe in DISCRIMINATIVE], size, seed, roots, progress, resume)
    return in_manifest_order(per_tree), report


def build_trees(out: Path, names: Iterable[str], size: str, seed: int, roots: Optional[Path] = None,
                progress: Optional[Progress] = None, resume: bool = False) -> tuple[dict[str, list[dict]], dict]:
    """:func:`build_discriminative` for the trees ``names`` yields, taken one at a time (so two processes
    can share one queue of trees); the manifest entries of each tree, and the timings."""
    plan = disc.SIZES[size]
    recipes = {recipe.name: recipe for recipe in DISCRIMINATIVE}
    per_tree, report = {}, {}
    for name in names:
        recipe = recipes[name]
        n_models = plan.forest_models if recipe is disc.FOREST else plan.models_per_tree
        written = read_written_tree(out, recipe, n_models, seed) if resume else None
        if written is not None:
            per_tree[name] = written
            report[name] = {"models": len(written), "kept": True}
            continue
        root, root_info = None, None
        if recipe.objective is not None:
            root, root_info = _load_or_pretrain_root(recipe, plan.root_steps, roots, out / "roots", progress)
        started = time.perf_counter()
        models = disc.fine_tune_tree(recipe, root, n_models, seed, progress, plan.step_scale)
        images = disc.write_class_images(recipe, seed, out, recipe.name)
        per_tree[name] = disc.write_models(models, out, recipe.name, seed, images)
        report[name] = {**({"root": root_info} if root_info is not None else {}), "models": len(models),
                        "fine_tune_seconds": round(time.perf_counter() - started, 1)}
    return per_tree, report


def in_manifest_order(per_tree: dict[str, list[dict]]) -> list[dict]:
    """The entries of :func:`build_trees` (one process's or both's), in the manifest's order of trees."""
    return [entry for recipe in DISCRIMINATIVE for entry in per_tree.get(recipe.name, [])]


def _taken(queue) -> Iterator[str]:
    """The tree names left in a shared queue, each taken by whichever process asks first."""
    while True:
        try:
            yield queue.get_nowait()
        except Empty:
            return


class _OtherProcessFailed(ProbeXError):
    """The second process stopped because the first failed (the first's own error is the one to show)."""


class _SharedChunks:
    """The second process's side of a generative tree whose LoRA chunks both processes train
    (a :class:`probex.jungle.generative.ChunkShare`): once its root is written, the chunk numbers go onto a
    shared queue; this process first takes classifier trees off theirs (the long items first, while the other
    process is busy with its own trees), then chunks, then waits for the chunks the other process trained."""

    def __init__(self, trees: "_Trees", channel: dict):
        self.trees, self.channel = trees, channel
        self.own = 0
        self.expected = 0
        self.interlude_seconds = 0.0

    def offer(self, tmp: Path, n_chunks: int) -> None:
        self.expected = n_chunks
        self.channel["place"].update(tmp=str(tmp), chunks=n_chunks)
        for number in range(n_chunks):
            self.channel["chunks"].put(number)
        self.channel["offered"].set()

    def interlude(self) -> None:
        started = time.perf_counter()
        self.trees.build()
        self.interlude_seconds = time.perf_counter() - started

    def taken(self, n_chunks: int) -> Iterator[int]:
        for number in _taken(self.channel["chunks"]):
            self.own += 1
            yield number

    def collect(self) -> list[dict]:
        entries, parent = [], os.getppid()
        for _ in range(self.expected - self.own):
            while True:
                try:
                    status, payload = self.channel["results"].get(timeout=5.0)
                    break
                except Empty:
                    if os.getppid() != parent:  # the first process was killed: nothing more will come
                        raise _OtherProcessFailed("the first build process ended while training LoRA models of the generative tree")
            if status == "failed":
                raise _OtherProcessFailed(f"the other build process failed while training LoRA models of the generative tree: {payload}")
            entries += payload
        return entries


class _Trees:
    """Classifier trees off the shared queue, built into ``out`` by whichever process takes them."""

    def __init__(self, out: str, size: str, seed: int, roots: Optional[str], resume: bool, queue):
        self.args = (out, size, seed, roots, resume, queue)
        self.per_tree: dict[str, list[dict]] = {}
        self.report: dict = {}

    def build(self) -> None:
        out, size, seed, roots, resume, queue = self.args
        per_tree, report = build_trees(Path(out), _taken(queue), size, seed, Path(roots) if roots else None, None, resume)
        self.per_tree.update(per_tree)
        self.report.update(report)


def _second_process(out: str, size: str, seed: int, generative_root: Optional[str], roots: Optional[str],
                    resume: bool, queue, channel: dict, build_generative: bool
                    ) -> tuple[list[dict], dict, dict[str, list[dict]], dict]:
    """The second build process: the generative tree's root first (the longest part), then classifier trees
    off the queue, then LoRA chunks beside the first process; with the generative tree kept, only trees."""
    torch.set_num_threads(1)
    trees = _Trees(out, size, seed, roots, resume, queue)
    generative_entries, generative_report = [], {}
    if build_generative:
        share = _SharedChunks(trees, channel)
        generative_entries, seconds = _build_generative_part(out, size, seed, generative_root, share)
        generative_report = {"seconds": round(seconds - share.interlude_seconds, 1),
                             "lora_chunks": {"process 1": share.expected - share.own, "process 2": share.own}}
    else:
        trees.build()
    return generative_entries, generative_report, trees.per_tree, trees.report


def _help_with_chunks(channel: dict, size: str, seed: int, second, progress: Optional[Progress]) -> None:
    """The first process, its trees built: train LoRA chunks of the generative tree beside the second process
    once it offers them (or return when it ends without offering any)."""
    from probex.jungle.generative import ChunkTrainer

    while not channel["offered"].wait(timeout=1.0):
        if second.done():
            return
    trainer = None
    try:
        for number in _taken(channel["chunks"]):
            trainer = trainer or ChunkTrainer(channel["place"]["tmp"], size, seed)
            channel["results"].put(("done", trainer.train(number)))
            if progress is not None:
                progress(number + 1, channel["place"]["chunks"], f"generative tree: LoRA chunk {number + 1} (of the shared queue)")
    except BaseException as error:  # the second process is waiting for these chunks: tell it, then fail
        channel["results"].put(("failed", f"{type(error).__name__}: {error}"))
        cause = second.exception()  # the second process stops at that report, or had failed first
        if isinstance(error, Exception) and cause is not None and not isinstance(cause, _OtherProcessFailed):
            raise cause from error  # e.g. the tree's folder went away because the second process failed
        raise


def _in_two_processes(out: Path, size: str, seed: int, roots: Optional[Path], progress: Optional[Progress],
                      resume: bool, generative_root: Optional[str], build_generative: bool = False
                      ) -> tuple[list[dict], dict, list[dict], dict]:
    """The classifier trees (and, with ``build_generative``, the generative tree) in two processes sharing one
    queue of trees: the second starts with the generative tree's root and takes trees off the queue once it is
    written; the LoRA chunks come last, shared by both. Returns the trees' entries in the manifest's order,
    their timings (each naming its process), and the generative tree's entries and timings."""
    with multiprocessing.Manager() as manager, ProcessPoolExecutor(max_workers=1) as pool:
        queue = manager.Queue()
        for name in _build_order():
            queue.put(name)
        channel = {"chunks": manager.Queue(), "results": manager.Queue(), "offered": manager.Event(),
                   "place": manager.dict()}
        future = pool.submit(_second_process, str(out), size, seed, generative_root,
                             str(roots) if roots is not None else None, resume, queue, channel, build_generative)
        per_tree, report = build_trees(out, _taken(queue), size, seed, roots, progress, resume)
        if build_generative:
            _help_with_chunks(channel, size, seed, future, progress)
        generative_entries, generative_report, other_trees, other_report = future.result()
    both = {**report, **other_report}
    report = {recipe.name: {**both[recipe.name], "process": 1 + (recipe.name in other_report)}
              for recipe in DISCRIMINATIVE}
    return in_manifest_order({**per_tree, **other_trees}), report, generative_entries, generative_report


def read_written_tree(out: Path, recipe: disc.TreeRecipe, n_models: int, seed: int) -> Optional[list[dict]]:
    """The manifest entries of a classifier tree already written into ``out``, read off its files; None
    unless all ``n_models`` are there (model files are written atomically, one by one).

    What :func:`probex.jungle.discriminative.write_models` returned when it wrote them; the tree's
    class images are written again (they are drawn from the seed, so they come out the same).
    """
    from probex.zoo.manifest import PER_LABEL, RESERVED_KEYS
    from probex.zoo.safefile import read_header

    files = sorted((out / "discriminative" / recipe.name).glob("ft-*.safetensors"))
    if len(files) != n_models:
        if files:
            logger.info("%s: %d of %d models written; training the tree again", recipe.name, len(files), n_models)
        return None
    images = disc.write_class_images(recipe, seed, out, recipe.name)
    entries = []
    for file in files:
        stored = read_header(file).metadata
        metadata = {key: str(_json_value(value)) for key, value in stored.items() if key not in RESERVED_KEYS}
        entries.append({"id": stored["id"], "path": file.relative_to(out).as_posix(), "split": stored["split"],
                        "tree": stored["tree"], "labels": json.loads(stored["labels"]), "metadata": metadata,
                        "images": {PER_LABEL: images}})
    logger.info("%s: all %d models already written; kept", recipe.name, n_models)
    return entries


def _build_generative_part(out: str, size: str, seed: int, root_path: Optional[str], share=None) -> tuple[list[dict], float]:
    from probex.jungle.generative import build_generative

    started = time.perf_counter()
    entries = build_generative(Path(out) / "generative", size=size, seed=seed, root_path=root_path, share=share)
    return entries, round(time.perf_counter() - started, 1)


def read_generative(out_dir: str | Path) -> list[dict]:
    """The manifest entries of a generative tree built earlier into ``out_dir``, read off its files.

    What :func:`build_generative` returned when it wrote the folder (each LoRA file's metadata says
    what the model is), so a rebuild of the rest of the jungle can keep these files byte for byte.

    Raises:
        ZooError: the folder holds no LoRA model of this tree.
    """
    from probex.errors import ZooError
    from probex.jungle.generative import HOLDOUT_SPLITS, IMAGES_FOLDER, IN_DISTRIBUTION_SPLITS, LORA_WEIGHTS, TREE
    from probex.zoo.manifest import RESERVED_KEYS
    from probex.zoo.safefile import read_header

    out_dir = Path(out_dir)
    prefix = out_dir.name
    manifest = []
    for split in IN_DISTRIBUTION_SPLITS + HOLDOUT_SPLITS:
        for weights in sorted((out_dir / split).glob(f"model_idx_*/{LORA_WEIGHTS}")):
            stored = read_header(weights).metadata
            folder = f"{prefix}/{split}/{weights.parent.name}"
            metadata = {key: _json_value(value) for key, value in stored.items() if key not in RESERVED_KEYS}
            manifest.append({"id": stored["id"], "split": stored.get("split"), "tree": stored.get("tree"),
                             "labels": json.loads(stored["labels"]), "metadata": metadata,
                             "path": f"{folder}/{LORA_WEIGHTS}", "images": f"{folder}/{IMAGES_FOLDER}"})
    if not manifest or any(entry["tree"] != TREE for entry in manifest):
        raise ZooError(f"{out_dir}: not a generative tree of the demo jungle (no {TREE} LoRA models in "
                       f"{'/'.join(IN_DISTRIBUTION_SPLITS + HOLDOUT_SPLITS)}); build one with `probex jungle build`")
    return sorted(manifest, key=lambda entry: entry["id"])


def _json_value(text: str) -> object:
    """A metadata string back as the JSON value it was written from (strings stay strings)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return text
    return value if isinstance(value, (int, float, list, dict, bool)) or value is None else text


#: What a generative tree's folder is (the kind :func:`probex.jungle.generative.build_generative` marks it with).
GENERATIVE_KIND = "probex-jungle-generative"


def _generative_before_markers(folder: Path) -> bool:
    from probex.jungle.generative import BUILD_INFO, TREE
    from probex.storage import json_field

    return json_field(folder / BUILD_INFO, "tree") == TREE


def _reuse_generative(out: Path, source: Path) -> list[dict]:
    """The generative tree of an earlier build, copied byte for byte into ``out/generative`` (kept if it is there)."""
    import shutil

    from probex.storage import atomic_directory

    entries = read_generative(source)  # checks the folder before anything is copied
    target = out / "generative"
    if not (target.exists() and target.resolve() == source.resolve()):
        with atomic_directory(target, GENERATIVE_KIND, legacy=_generative_before_markers) as tmp:
            shutil.copytree(source, tmp, dirs_exist_ok=True)
    return entries


def build_jungle(out: str | Path, size: str = "full", seed: int = 0, workers: int = 1,
                 roots: Optional[str | Path] = None, progress: Optional[Progress] = None,
                 validate: bool = True, generative: Optional[str | Path] = None, resume: bool = False) -> Path:
    """Build the demo jungle into ``out`` and return the folder (see the module docstring).

    Args:
        size: "full" (what ships: ~300 models per tree, ~1,600 LoRA models) or "small" (tests).
        workers: 1 builds the parts one after the other; 2 builds them in two processes: the
            generative tree's root in the second while the first trains classifier trees, each
            process taking the next tree off a shared queue when it is free, the LoRA chunks last
            (with ``generative`` kept, both take trees from the start).
        roots: a folder of roots from an earlier build (``<jungle>/roots`` for the classifiers,
            ``<jungle>/generative/root`` for the text-to-image root): pre-training is skipped.
        validate: run the build's own validation sweep afterwards (recommended layers and
            the pre-trained experts: :func:`probex.jungle.validation.validate_jungle`).
        generative: the generative folder of an earlier build (``<jungle>/generative``) to keep
            as it is instead of training the LoRA tree again (its files are copied byte for byte).
        resume: continue an interrupted build in ``out``: classifier trees whose model files are
            all written there are kept (:func:`read_written_tree`), the others are trained.
    """
    if size not in SIZES:
        raise ProbeXError(f"size must be one of {SIZES}; got {size!r}")
    built_before_markers = lambda folder: json_field(folder / "probex_zoo.json", "name") == NAME  # noqa: E731
    out = claim_directory(out, "probex-jungle", legacy=built_before_markers)
    roots_path = Path(roots) if roots is not None else None
    generative_root = None
    if roots_path is not None and (roots_path.parent / "generative" / "root").is_dir():
        generative_root = str(roots_path.parent / "generative" / "root")
    started = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny networks: one thread per part is fastest and repeatable
    try:
        if generative is not None:
            generative_started = time.perf_counter()
            generative_entries = _reuse_generative(out, Path(generative))
            generative_seconds = round(time.perf_counter() - generative_started, 1)
            if workers > 1:
                entries, report, _, _ = _in_two_processes(out, size, seed, roots_path, progress, resume, None)
            else:
                entries, report = build_discriminative(out, size, seed, roots_path, progress, resume)
            generative_report = {"seconds": generative_seconds}
        elif workers > 1:
            entries, report, generative_entries, generative_report = _in_two_processes(
                out, size, seed, roots_path, progress, resume, generative_root, build_generative=True)
        else:
            entries, report = build_discriminative(out, size, seed, roots_path, progress, resume)
            generative_entries, generative_seconds = _build_generative_part(str(out), size, seed, generative_root)
            generative_report = {"seconds": generative_seconds}
    finally:
        torch.set_num_threads(threads)
    report["generative"] = {"models": len(generative_entries), **generative_report,
                            "reused": str(generative) if generative is not None else None}
    _write_manifest(out, entries + generative_entries)
    if validate:
        from probex.jungle.validation import validate_jungle

        validation_started = time.perf_counter()
        summary = validate_jungle(out, params={"seed": seed}, progress=progress)
        report["validation"] = {"seconds": round(time.perf_counter() - validation_started, 1),
                                "recommended_layers": {tree: value["best"] for tree, value in summary["trees"].items()}}
    report.update(size=size, seed=seed, workers=workers, resumed=resume, total_seconds=round(time.perf_counter() - started, 1),
                  torch=torch.__version__)
    atomic_write_json(out / "build.json", report)
    logger.info("demo jungle built in %.0f s: %s", report["total_seconds"], out)
    return out


def tree_roles(trees: set[str]) -> dict:
    """What each of the jungle's trees is for: the forest's one-model trees, the aligned LoRA tree, classifiers."""
    from probex.jungle.generative import TREE as ALIGNED_TREE
    from probex.zoo.records import ALIGNED, CLASSIFIER, FOREST, HELD_OUT_SPLITS, TreeRole

    def role(tree: str) -> TreeRole:
        if tree.startswith(disc.FOREST.name + "-"):
            return TreeRole(FOREST)
        if tree == ALIGNED_TREE:
            return TreeRole(ALIGNED, HELD_OUT_SPLITS)
        views = next((recipe.views for recipe in disc.TREES if recipe.name == tree), "xu")
        return TreeRole(CLASSIFIER, views=None if views == "xu" else views)

    return {tree: role(tree) for tree in sorted(trees)}


def _write_manifest(out: Path, entries: list[dict]) -> None:
    from probex.zoo.manifest import MANIFEST_FORMAT, MANIFEST_NAME, MANIFEST_VERSION

    models = [{key: entry[key] for key in ("id", "path", "split", "tree", "labels", "metadata", "images")}
              for entry in entries]
    trees = {tree: role.to_json() for tree, role in tree_roles({entry["tree"] for entry in entries}).items()}
    atomic_write_json(out / MANIFEST_NAME, {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "name": NAME,
                                            "description": DESCRIPTION, "models": models, "trees": trees})


def read_build_report(jungle: str | Path) -> dict:
    """The build.json of a built jungle."""
    return json.loads((Path(jungle) / "build.json").read_text())
