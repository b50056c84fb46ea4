"""What the pages share: the chosen population, its router, experts, sweeps and search indexes.

Every heavy object is loaded once per process (``st.cache_resource``) or once per session
(experts trained in the page live in ``st.session_state``). Pages ask here, then draw.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import streamlit as st

from explorer.text import plain
from probex.errors import ProbeXError

logger = logging.getLogger(__name__)

#: session_state keys
POPULATION_KEY = "population_path"  # "" for the demo jungle, else a zoo folder typed by the user
TRAINED_KEY = "trained_experts"  # population -> tree -> TrainedExpert


@dataclass
class ExpertChoice:
    """The expert a page uses for one tree: where it came from and a token that names it for caches."""

    tree: str
    expert: Any
    source: str  # "shipped" or "trained in this session"
    token: str  # changes whenever the expert does (cache key of the indexes built from it)
    scores: list = field(default_factory=list)  # what training in this session measured (metric rows)

    @property
    def aligned(self) -> bool:
        """Whether it maps models into a text space (prompt search, zero-shot labels)."""
        return hasattr(self.expert, "encode_text")


# -- the population ---------------------------------------------------------------------------

def population_path() -> str:
    """The folder of the chosen population ("" is the shipped demo jungle)."""
    return st.session_state.get(POPULATION_KEY, "")


def population_name(path: str) -> str:
    return "the demo jungle" if not path else path


@st.cache_resource(show_spinner="Opening the population ...")
def load_zoo(path: str):
    """The ModelZoo at ``path`` ("" for the demo jungle)."""
    from probex import jungle
    from probex.zoo import ModelZoo

    if not path:
        return jungle.load()
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise ProbeXError(f"{folder}: no such folder. Type the root folder of a zoo (a probex manifest or a "
                          "Model-J layout), or pick the demo jungle.")
    return ModelZoo.open(folder)


def current_zoo():
    """The chosen population's ModelZoo; shows the error in the page and stops it if it cannot be opened."""
    path = population_path()
    try:
        return load_zoo(path)
    except ProbeXError as error:
        st.error(f"Cannot open {plain(population_name(path))}: {plain(error)}")
        st.stop()


def real_trees(zoo) -> list[str]:
    """The zoo's trees, less its forest (independently initialised models: no root to share, no tree to find)."""
    from probex.zoo import FOREST

    forest = set(zoo.trees_with_role(FOREST))
    return [tree for tree in zoo.trees if tree not in forest]


# -- the router -------------------------------------------------------------------------------

@dataclass
class RouterFit:
    """A TreeRouter fitted on the population's training models, and how well it routes the others."""

    router: Any
    fit_ids: list[str]
    held_ids: list[str]
    held_accuracy: Optional[float]
    held_routes: list = field(default_factory=list)  # tree found for each held-out model (None: unknown)
    held_truth: list = field(default_factory=list)  # its true tree (None: unknown)


def current_router(path: str) -> RouterFit:
    """:func:`fit_router` for the page; shows the error in the page and stops it if the router cannot fit."""
    try:
        return fit_router(path)
    except ProbeXError as error:
        st.error(f"The router could not fit this population: {plain(error)}")
        st.stop()


@st.cache_resource(show_spinner="Finding the Model Trees ...")
def fit_router(path: str) -> RouterFit:
    """The trees of the population ("" is the demo jungle), found on its train split when it has one."""
    from probex.trees.router import TreeRouter

    zoo = load_zoo(path)
    trees = real_trees(zoo)
    population = zoo.select(tree=trees) if trees and len(trees) < len(zoo.trees) else zoo
    fit_zoo = population.select(split="train") if "train" in population.splits else population
    router = TreeRouter().fit(fit_zoo)
    fitted = set(fit_zoo.ids)
    held_ids = [model_id for model_id in population.ids if model_id not in fitted]
    accuracy, routes, truth = None, [], []
    if held_ids:
        held = population.select(ids=held_ids)
        routes, truth = router.route(held), [record.tree for record in held.records]
        if router.tree_truth_ and any(tree is not None for tree in truth):
            accuracy = router.score_routes(routes, truth)
    return RouterFit(router, fit_zoo.ids, held_ids, accuracy, routes, truth)


# -- experts ----------------------------------------------------------------------------------

@st.cache_resource(show_spinner="Loading the expert ...")
def load_shipped_expert(folder: str):
    from probex.experts.base import load_expert

    return load_expert(folder)


def shipped_expert_dirs(path: str) -> dict[str, Path]:
    """tree -> folder of the pre-trained expert the population ships (``experts/<tree>/``), {} when none."""
    from probex.zoo.extras import expert_dirs

    try:
        return expert_dirs(load_zoo(path).root)
    except (ProbeXError, OSError) as error:
        logger.warning("no shipped experts in %s: %s", population_name(path), error)
        return {}


def trained_experts(path: str) -> dict[str, ExpertChoice]:
    """tree -> expert trained in this session on the population (kept until the session ends)."""
    return st.session_state.setdefault(TRAINED_KEY, {}).setdefault(path, {})


def keep_trained_expert(path: str, tree: str, expert: Any, scores: list | None = None) -> ExpertChoice:
    """Make ``expert`` the tree's expert for the rest of the session (Search, Atlas and Inspect use it)."""
    choice = ExpertChoice(tree, expert, "trained in this session", f"session-{uuid.uuid4().hex}", list(scores or []))
    trained_experts(path)[tree] = choice
    return choice


def expert_for(path: str, tree: str) -> Optional[ExpertChoice]:
    """The expert of one tree: trained in this session if there is one, else the shipped one."""
    trained = trained_experts(path).get(tree)
    if trained is not None:
        return trained
    folder = shipped_expert_dirs(path).get(tree)
    if folder is None:
        return None
    return ExpertChoice(tree, load_shipped_expert(str(folder)), "shipped", f"shipped-{folder}")


def aligned_experts(path: str, zoo) -> dict[str, ExpertChoice]:
    """tree -> its expert, for the trees whose expert maps models into a text space."""
    choices = {}
    for tree in real_trees(zoo):
        choice = expert_for(path, tree)
        if choice is not None and choice.aligned:
            choices[tree] = choice
    return choices


def current_aligned_experts(path: str, zoo) -> dict[str, ExpertChoice]:
    """:func:`aligned_experts`; when there is none, says how to get one in the page and stops it."""
    experts = aligned_experts(path, zoo)
    if not experts:
        st.info("No tree of this population has an aligned expert (one that maps models into a text space). "
                "Train one on the Experts page with the task 'alignment with class names'.")
        st.stop()
    return experts


def answering_experts(path: str, zoo) -> dict[str, ExpertChoice]:
    """tree -> its expert (aligned or classifier; trained in this session, else shipped), for every tree that has one."""
    choices = {}
    for tree in real_trees(zoo):
        choice = expert_for(path, tree)
        if choice is not None:
            choices[tree] = choice
    return choices


# -- search index ---------------------------------------------------------------------------------

def zoo_index(path: str, zoo):
    """The whole population's :class:`~probex.language.zoo_search.ZooIndex` under the current experts
    (one per set of experts: training a new one in the session gives a new index)."""
    choices = answering_experts(path, zoo)
    token = "|".join(f"{tree}={choice.token}" for tree, choice in sorted(choices.items()))
    return _zoo_index(path, token, {tree: choice.expert for tree, choice in choices.items()})


@st.cache_resource(show_spinner="Reading every tree's models with its expert ...", max_entries=4)
def _zoo_index(path: str, token: str, _experts: dict):
    from probex.language.zoo_search import ZooIndex

    return ZooIndex(load_zoo(path), _experts).prepare()


@st.cache_resource(show_spinner="Embedding every model of the tree ...", max_entries=8)
def model_index(path: str, tree: str, token: str, _expert: Any):
    """The ModelIndex of one tree's models under its aligned expert (``token`` names the expert)."""
    from probex.language.search import ModelIndex

    zoo = load_zoo(path).select(tree=tree)
    return ModelIndex.build(_expert, zoo)


@st.cache_resource(show_spinner="Projecting the weight-language space (UMAP) ...", max_entries=8)
def atlas(path: str, tree: str, token: str, _index: Any):
    from probex.language.atlas import build_atlas

    return build_atlas(_index)


@st.cache_resource(show_spinner=False, max_entries=16)
def disk_atlas(path: str, tree: Optional[str]):
    """One tree's map read back from disk (default: the population's first tree), or None (explorer.atlas_disk)."""
    from explorer.atlas_disk import load_view

    return load_view(path, tree)


@st.cache_resource(show_spinner=False, max_entries=16)
def keep_atlas(path: str, tree: str, token: str, _experts: dict, _atlas: Any, _table: Any) -> Optional[str]:
    """Keep a map drawn from the zoo on disk for new servers, once per tree and expert (explorer.atlas_disk)."""
    from explorer.atlas_disk import save_view

    index = _atlas.index
    return save_view(path, tree, list(_experts), {name: choice.source for name, choice in _experts.items()},
                     {name: choice.token for name, choice in _experts.items()}, _atlas.points, _table, _atlas.message,
                     _atlas.method, [str(record.path) for record in index.records])


# -- files a validated zoo ships beside its models --------------------------------------------------

@st.cache_data
def sweep_scores(path: str, tree: str) -> list[dict]:
    """The layer sweep of one tree (one row per layer, in sweep order), [] when none was shipped."""
    from probex.experiments.sweep import LayerScore
    from probex.zoo.extras import sweep_file

    file = sweep_file(load_zoo(path).root, tree)
    if file is None:
        return []
    rows = []
    for line in file.read_text().splitlines():
        try:
            rows.append(LayerScore.from_json(json.loads(line)).__dict__)
        except (json.JSONDecodeError, TypeError, KeyError):  # a line cut short by an interrupted sweep
            continue
    return rows


@st.cache_data
def check_figures(path: str) -> dict:
    """The figures measured on the population (check.json, written by ``probex jungle check``), {} when absent."""
    from probex.zoo.extras import shipped_figures

    return shipped_figures(load_zoo(path).root)


@st.cache_resource(show_spinner="Reading one layer of every model ...", max_entries=16)
def layer_bank(path: str, layer: str, ids: tuple[str, ...]):
    """One layer of the given models of the population, stacked (a LayerBank, cached on disk by probex)."""
    return load_zoo(path).select(ids=list(ids)).bank(layer)


# -- the population's content, names and colours (cached per population and content) -----------------

@st.cache_resource(show_spinner=False)
def population_token(path: str) -> str:
    """A hash of the population's content (ids, and each file's size and modification time): the key of
    every ``st.cache_data`` entry derived from it, so an edited zoo is never shown from a stale cache."""
    import hashlib

    digest = hashlib.sha256(path.encode("utf-8"))
    for record in load_zoo(path).records:
        try:
            stat = Path(record.path).stat()
            digest.update(f"{record.id}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode("utf-8"))
        except (OSError, TypeError):  # a remote record: its id and path stand for it
            digest.update(f"{record.id}\0{record.path}\n".encode("utf-8"))
    return digest.hexdigest()[:24]


@dataclass
class TreeNames:
    """What people call the router's trees and architectures, and one colour per tree under every name."""

    labels: dict[str, str]  # found tree (tree_0, ...) -> readable name
    colours: dict[str, str]  # any tree name (found, readable, true) -> colour
    architectures: list[str]  # readable architecture names, in the router's order


@st.cache_resource(show_spinner=False)
def tree_names(path: str) -> TreeNames:
    """:class:`TreeNames` of the population's router (probex.trees.naming)."""
    from probex.trees.naming import architecture_labels, tree_colour_map, tree_labels

    router = fit_router(path).router
    zoo = load_zoo(path)
    base = {record.id: str(record.metadata["base_model"]) for record in zoo.records
            if record.metadata.get("base_model") not in (None, "")}
    labels = tree_labels(router, base)
    return TreeNames(labels, tree_colour_map(real_trees(zoo), router, labels), architecture_labels(router.architectures_))


def tree_colours(path: str) -> dict[str, str]:
    """tree -> colour for the population's known trees, without fitting the router (the same colours as
    :func:`tree_names` gives them)."""
    from probex.trees.naming import tree_colour_map

    return tree_colour_map(real_trees(load_zoo(path)))


@st.cache_resource(show_spinner="Measuring how far each tree's models lie from its centre ...")
def tree_spread(path: str) -> dict:
    """tree -> the sorted distances of its fitted models to its centre (how typical a distance is)."""
    from probex.trees.placement import member_distances

    fitted = fit_router(path)
    return member_distances(fitted.router, load_zoo(path).select(ids=fitted.fit_ids))


@st.cache_data(show_spinner="Drawing the dendrograms ...", max_entries=8)
def dendrograms(path: str, token: str) -> list:
    """One DendrogramData per architecture of the population's router (``token``: population_token)."""
    router = fit_router(path).router
    return [router.dendrogram(number) for number in range(len(router.architectures_))]


@st.cache_data(show_spinner="Projecting the raw weights (PCA) ...", max_entries=8)
def weight_map_of(path: str, token: str, architecture: int):
    """(ids, WeightMap) of one architecture's clustered models (probex.trees.weight_map: exact, or on a random
    projection of large layers; LoRA banks through their factors)."""
    from probex.trees.weight_map import weight_map

    router = fit_router(path).router
    chosen = router.architectures_[architecture]
    ids = tuple(router.ids_[position] for position in chosen.positions)
    return ids, weight_map(layer_bank(path, chosen.layer, ids))


def distances_to_upload(path: str, layer: str, ids: tuple[str, ...], model: Any) -> Any:
    """l2 distances [len(ids)] from the population's models ``ids`` to one model's (an upload's) ``layer``,
    through the LoRA factors when both are LoRA (never merging a whole bank)."""
    from probex.trees.distances import distances_to_models

    return distances_to_models(layer_bank(path, layer, ids).stack, model.bank(layer, cache=False).stack)[:, 0]


@st.cache_data(show_spinner=False, max_entries=32)
def index_table(path: str, tree: str, token: str, population: str, _index: Any):
    """The facets table (probex.language.facets.model_table) of an index's models, in its order."""
    from probex.language.facets import model_table

    return model_table(_index.records)


#: session_state key: the device experts train on ("cpu", "cuda:0", ...)
DEVICE_KEY = "device"


def training_device() -> str:
    """The device chosen in the sidebar for training ("cpu" until one is chosen)."""
    return st.session_state.get(DEVICE_KEY) or "cpu"


@st.cache_resource(max_entries=48, show_spinner=False)
def figure(kind: str, key: tuple, _build: Any):
    """A figure built once per ``(kind, key)`` and reused on reruns (``key`` names everything it shows)."""
    return _build()


@st.cache_data(show_spinner=False, max_entries=16)
def row_labels(path: str, tree: str, token: str, population: str, _table: Any) -> list[str]:
    """One line per model of a facets table ("id · concept · split · ..."), for pickers that search metadata."""
    shown = _table.drop(columns=[column for column in ("tree",) if column in _table])
    return [" · ".join(str(value) for value in row if str(value) not in ("", "nan")) for row in shown.itertuples(index=False)]


@st.cache_resource(show_spinner=False)
def warm_up() -> bool:
    """Once per server process: compile (or load from disk) UMAP's functions in a background thread, so that
    the first Atlas is not kept waiting for the compiler (probex.language.atlas.prepare_umap)."""
    import threading

    def run() -> None:
        try:
            from probex.language.atlas import prepare_umap  # here: it imports torch, which the page may not need

            prepare_umap(compile_now=True)
        except Exception as error:  # a warm-up only saves time: the Atlas compiles what it needs itself
            logger.warning("UMAP warm-up failed: %s", error)
        freeze_long_lived()

    threading.Thread(target=run, name="probex-umap-warm-up", daemon=True).start()
    return True


def freeze_long_lived() -> None:
    """Move every object alive now (imported modules: torch, pandas, plotly, numba, ...) out of reach of
    Python's cyclic garbage collector (``gc.freeze``).

    Streamlit runs a full collection after every script run (``runner.postScriptGC``); with torch and the
    rest imported that walks about 315,000 objects, 0.4 s a run on the 2-core machine, and the browser
    waits for the run to finish. Frozen objects are still freed by reference counting when dropped; only
    cycles among them outlive the server (garbage is collected before freezing; modules live as long
    anyway). Called once torch (and once UMAP's functions) are imported in the background: collections
    after that take milliseconds.
    """
    import gc

    gc.collect()  # what is garbage now is freed first, not frozen
    gc.freeze()
