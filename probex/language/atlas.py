"""The atlas: one 2-D map (UMAP) of models and words in an aligned expert's weight-language space.

The models of a :class:`~probex.language.search.ModelIndex` and text anchors (by default every class
name of the tree, through the expert's prompt template) are embedded in the same space, so
they are projected together: UMAP with the cosine metric on the concatenated unit rows. A
model lands near the words that describe it::

    atlas = build_atlas(index)                       # models + the tree's class names
    atlas.points                                      # x, y, kind, label, model_id, split, tree, image
    atlas = atlas.with_prompts(["a red star"])        # prompt points placed on the same map
    atlas_figure(atlas, color="label")                # probex.figures

Cache: the coordinates are stored as a small safetensors file keyed by a hash of the model
embeddings, the anchors' text and embeddings, and the projection's parameters (so one file
per expert, anchor set and setting), written atomically; the same inputs read it back
instead of running UMAP again. By default the cache lives in ``$PROBEX_CACHE/atlas`` (else
``~/.cache/probex/atlas``); ``cache_dir=False`` turns it off.

Placing new prompts (:meth:`Atlas.with_prompts`) never refits and never needs the fitted
UMAP: a prompt goes to the similarity-weighted mean of the coordinates of its nearest fitted
points (cosine in the expert's space, softmax weights with temperature
``PLACEMENT_TEMPERATURE``), which is how UMAP's own ``transform`` initialises new points.
It is one matrix product, gives the same answer whether the map was just fitted or read from
the cache, and works for the PCA fallback alike.

Compilation: UMAP's numba functions are compiled the first time a process fits a map (8-15 s on
two busy cores). :func:`prepare_umap` keeps them compiled on disk (``$PROBEX_CACHE/numba``, unless
``$NUMBA_CACHE_DIR`` names another folder), so a new process loads them in a second; an app
can also call it in a background thread at start-up, before anyone asks for a map.

Fallback: UMAP needs more points than its neighbourhood (``n_neighbors``); with fewer than
``n_neighbors + 2`` points the map is a PCA projection and :attr:`Atlas.message` says so.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

# numba colours its compile messages with colorama, whose init/deinit swap sys.stdout and sys.stderr of
# the whole process; UMAP compiles in a background thread of the app, so that swap would steal other
# threads' output (seen as a CLI message lost in the test suite). Plain messages keep the streams alone.
os.environ.setdefault("NUMBA_DISABLE_ERROR_MESSAGE_HIGHLIGHTING", "1")

import numpy as np

from probex.errors import ProbeXError
from probex.language.search import ModelIndex

if TYPE_CHECKING:
    import pandas

logger = logging.getLogger(__name__)

#: Bump when the way coordinates are computed changes, so old cache entries are not reused.
CACHE_FORMAT = 1
#: Softmax temperature of the cosine similarities that weight a new prompt's nearest points.
PLACEMENT_TEMPERATURE = 0.05
#: How many nearest fitted points place a new prompt.
PLACEMENT_NEIGHBOURS = 10

COLUMNS = ("x", "y", "kind", "label", "model_id", "split", "tree", "image")


@dataclass
class Atlas:
    """A 2-D map of models, text anchors and prompts.

    Attributes:
        points: one row per point with columns x, y, kind ("model", "anchor" or "prompt"),
            label (the model's concepts joined by "; ", or the anchor / prompt text),
            model_id, split, tree, image (the first training image, "" when none);
            "" where a column does not apply.
        message: why the map is not a UMAP (the small-population fallback), else None.
        method: "umap" or "pca".
        index: the ModelIndex it maps (used to embed new prompts).
        vectors: the embeddings [M, d] of the fitted points (models, then anchors), unit rows.
    """

    points: "pandas.DataFrame"
    message: Optional[str] = None
    method: str = "umap"
    index: Optional[ModelIndex] = field(default=None, repr=False)
    vectors: Optional[np.ndarray] = field(default=None, repr=False)

    def with_prompts(self, prompts: Sequence[str]) -> "Atlas":
        """A copy with one "prompt" point per prompt, placed on the fitted map (no refit; see the module docstring)."""
        import pandas as pd

        if isinstance(prompts, str):
            raise TypeError("prompts must be a list of strings; wrap one prompt: [prompt]")
        prompts = [prompt for prompt in prompts if prompt.strip()]
        if not prompts:
            return self
        if self.index is None or self.vectors is None:
            raise ProbeXError("this Atlas has no index to embed prompts with; build it with build_atlas(index)")
        fitted = self.points.iloc[: len(self.vectors)]
        coordinates = place_points(self.index.embed_prompts(prompts), self.vectors, fitted[["x", "y"]].to_numpy())
        rows = _rows(coordinates, "prompt", prompts)
        points = pd.concat([self.points, rows], ignore_index=True)
        return replace(self, points=points)


def build_atlas(
    index: ModelIndex,
    anchors: Optional[Sequence[str]] = None,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    seed: int = 0,
    cache_dir: str | os.PathLike | None | bool = None,
) -> Atlas:
    """Project the index's models and the text ``anchors`` into one 2-D map.

    Args:
        index: the models, in an aligned expert's space.
        anchors: words to place among them (default: every class name of the index's tree).
        n_neighbors, min_dist: UMAP's parameters.
        seed: UMAP's random state (the same inputs give the same map).
        cache_dir: the coordinate cache folder; None for the default one, False for none.
    """
    import pandas as pd

    anchors = list(index.classes if anchors is None else anchors)
    anchor_vectors = index.expert_text(anchors) if anchors else np.zeros((0, index.embeddings.shape[1]), np.float32)
    vectors = np.concatenate([index.embeddings, anchor_vectors]).astype(np.float32)
    params = {"n_neighbors": int(n_neighbors), "min_dist": float(min_dist), "seed": int(seed), "metric": "cosine"}
    too_few = len(vectors) < n_neighbors + 2
    method = "pca" if too_few else "umap"
    message = (f"{len(vectors)} points ({len(index)} models, {len(anchors)} anchors) are too few for UMAP with "
               f"n_neighbors={n_neighbors} (it needs at least {n_neighbors + 2}); showing a PCA projection instead"
               if too_few else None)
    cache_file = _cache_file(cache_dir, vectors, anchors, method, params)
    coordinates = _read_cache(cache_file, len(vectors)) if cache_file is not None else None
    if coordinates is None:
        coordinates = _pca(vectors) if too_few else _umap(vectors, params)
        if cache_file is not None:
            _write_cache(cache_file, coordinates)
    else:
        logger.info("atlas coordinates of %d points from the cache %s", len(vectors), cache_file)
    points = pd.concat([_model_rows(coordinates[: len(index)], index), _rows(coordinates[len(index):], "anchor", anchors)],
                       ignore_index=True)
    return Atlas(points=points, message=message, method=method, index=index, vectors=vectors)


def place_points(queries: np.ndarray, vectors: np.ndarray, coordinates: np.ndarray,
                 k: int = PLACEMENT_NEIGHBOURS, temperature: float = PLACEMENT_TEMPERATURE) -> np.ndarray:
    """Map coordinates [Q, 2] for new unit vectors [Q, d]: softmax-weighted mean of their k most similar fitted points."""
    similarity = np.asarray(queries, np.float32) @ np.asarray(vectors, np.float32).T
    k = max(1, min(k, similarity.shape[1]))
    nearest = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
    top = np.take_along_axis(similarity, nearest, axis=1)
    weights = np.exp((top - top[:, :1]) / temperature)
    weights /= weights.sum(axis=1, keepdims=True)
    return np.einsum("qk,qkc->qc", weights, np.asarray(coordinates, np.float32)[nearest]).astype(np.float32)


# -- projections -------------------------------------------------------------------------------


#: UMAP's numba functions a cosine map of float32 rows compiles (umap-learn 0.5).
_UMAP_JIT = ("distances.cosine", "utils.fast_knn_indices", "layouts.clip",
             "layouts._nb_optimize_layout_euclidean_single_epoch", "umap_.fast_knn_indices", "umap_.smooth_knn_dist",
             "umap_.compute_membership_strengths")


def prepare_umap(compile_now: bool = False) -> None:
    """Keep UMAP's compiled functions on disk (see the module docstring); ``compile_now`` also compiles (or
    loads) them at once with a tiny map, e.g. in a background thread while an app starts."""
    import importlib

    import numba
    from numba.core.caching import NullCache

    from probex.storage import cache_dir

    if not os.environ.get("NUMBA_CACHE_DIR") and not numba.config.CACHE_DIR:
        numba.config.CACHE_DIR = str(cache_dir("numba"))
    for name in _UMAP_JIT:
        module, _, function = name.rpartition(".")
        dispatcher = getattr(importlib.import_module(f"umap.{module}"), function, None)
        if dispatcher is not None and isinstance(getattr(dispatcher, "_cache", None), NullCache):
            dispatcher.enable_caching()
    if compile_now:
        tiny = np.random.default_rng(0).standard_normal((40, 8)).astype(np.float32)
        _umap(tiny, {"n_neighbors": 15, "min_dist": 0.1, "seed": 0, "metric": "cosine"}, prepared=True)


def _umap(vectors: np.ndarray, params: dict, prepared: bool = False) -> np.ndarray:
    import umap

    if not prepared:
        prepare_umap()
    reducer = umap.UMAP(n_neighbors=params["n_neighbors"], min_dist=params["min_dist"], metric=params["metric"],
                        random_state=params["seed"], n_components=2, n_jobs=1)  # a seed runs on one thread anyway
    logger.info("fitting UMAP on %d points", len(vectors))
    return np.asarray(reducer.fit_transform(vectors), dtype=np.float32)


def _pca(vectors: np.ndarray) -> np.ndarray:
    """The first two principal components (zeros where the points span fewer dimensions)."""
    centred = vectors - vectors.mean(axis=0, keepdims=True)
    coordinates = np.zeros((len(vectors), 2), dtype=np.float32)
    if len(vectors) < 2:
        return coordinates
    _, singular, right = np.linalg.svd(centred.astype(np.float64), full_matrices=False)
    components = min(2, int((singular > 1e-9 * max(singular[0], 1e-30)).sum()))
    coordinates[:, :components] = centred @ right[:components].T
    return coordinates


# -- tables --------------------------------------------------------------------------------------


def _model_rows(coordinates: np.ndarray, index: ModelIndex) -> "pandas.DataFrame":
    import pandas as pd

    records = index.records
    return pd.DataFrame({
        "x": coordinates[:, 0], "y": coordinates[:, 1], "kind": "model",
        "label": ["; ".join(record.labels) for record in records],
        "model_id": [record.id for record in records],
        "split": [record.split or "" for record in records],
        "tree": [record.tree or "" for record in records],
        "image": [str(record.images[0]) if record.images else "" for record in records],
    }, columns=list(COLUMNS))


def _rows(coordinates: np.ndarray, kind: str, texts: Sequence[str]) -> "pandas.DataFrame":
    import pandas as pd

    return pd.DataFrame({"x": coordinates[:, 0], "y": coordinates[:, 1], "kind": kind, "label": list(texts),
                         "model_id": "", "split": "", "tree": "", "image": ""}, columns=list(COLUMNS))


# -- the coordinate cache ----------------------------------------------------------------------


def default_cache_dir() -> Path:
    """Where atlas coordinates are cached: ``$PROBEX_CACHE/atlas``, else ``~/.cache/probex/atlas``."""
    from probex.storage import cache_dir

    return cache_dir("atlas")


def cache_key(vectors: np.ndarray, anchors: Sequence[str], method: str, params: dict) -> str:
    """Hash of what a map is computed from: every point's embedding, the anchor texts, the method and parameters."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"format": CACHE_FORMAT, "anchors": list(anchors), "method": method, "params": params,
                              "shape": list(vectors.shape)}, sort_keys=True).encode("utf-8"))
    digest.update(np.ascontiguousarray(vectors, dtype=np.float32).tobytes())
    return digest.hexdigest()


def _cache_file(cache_dir, vectors: np.ndarray, anchors: Sequence[str], method: str, params: dict) -> Optional[Path]:
    if cache_dir is False:
        return None
    folder = default_cache_dir() if cache_dir is None or cache_dir is True else Path(cache_dir).expanduser()
    return folder / f"atlas-{method}-{cache_key(vectors, anchors, method, params)[:32]}.safetensors"


def _read_cache(path: Path, n_points: int) -> Optional[np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    if not path.is_file():
        return None
    try:
        coordinates = load_file(str(path))["coordinates"]
    except (OSError, KeyError, SafetensorError) as error:
        logger.warning("%s: unreadable atlas cache entry (%s); recomputing the map", path, error)
        return None
    if coordinates.shape != (n_points, 2) or coordinates.dtype != np.float32 or not np.isfinite(coordinates).all():
        logger.warning("%s: atlas cache entry has shape %s, expected %s; recomputing the map", path, coordinates.shape,
                       (n_points, 2))
        return None
    return coordinates


def _write_cache(path: Path, coordinates: np.ndarray) -> None:
    from safetensors.numpy import save_file

    from probex.storage import atomic_path

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            save_file({"coordinates": np.ascontiguousarray(coordinates, dtype=np.float32)}, str(tmp))
    except OSError as error:  # a read-only cache must not break the map
        logger.warning("%s: cannot write the atlas cache (%s)", path, error)
