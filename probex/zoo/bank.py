"""LayerBank: one layer of many models stacked into X [N, d_W, d_H], built once and cached on disk.

Building reads only the chosen layer's bytes from each weight file (LoRA pairs merged, conv
kernels flattened; see :mod:`probex.zoo.catalog`). The result is cached as two files in the
cache folder, written atomically (:func:`probex.storage.atomic_path`):

- ``<layer>.<key>.npy``: the array [N, d_W, d_H] in the asked dtype (float16 or float32);
- ``<layer>.<key>.json``: the index (ids, skipped models, shape, dtype, the array's byte size),
  written last.

The key hashes the layer, the dtype, and each selected model's id, file path, size and
modification time, so a changed file or a different selection builds a new bank. A cache entry
is trusted only when its index exists, matches the key and names the array's exact byte size;
anything else (a kill in the middle of a write, a truncated array) is rebuilt. On reuse the
array is memory-mapped copy-on-write: nothing is read until used, and writing into ``X``
never changes the cache.

NaN or Inf in a model's layer: the model is left out of the bank and listed in
``bank.skipped`` with the reason (and logged). A value that only overflows when cast to
float16 raises ZooError instead (ask for float32).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import os
import re
import warnings
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from probex.errors import ZooError
from probex.progress import Progress
from probex.storage import atomic_path
from probex.zoo.catalog import layer_catalog, layer_matrix
from probex.zoo.lora import LORA_KINDS, lora_scaling
from probex.zoo.records import LayerInfo, ModelRecord
from probex.zoo.safefile import read_tensors

logger = logging.getLogger(__name__)

#: Bump when the way banks are computed changes, so old caches are not reused.
CACHE_FORMAT = 1

_NUMPY_DTYPES = {torch.float16: np.float16, torch.float32: np.float32, torch.float64: np.float64}


def default_cache_dir() -> Path:
    """Where banks are cached: ``$PROBEX_CACHE/banks``, else ``~/.cache/probex/banks``."""
    from probex.storage import cache_dir

    return cache_dir("banks")


class LayerBank:
    """One layer of N models: ``X`` [N, d_W, d_H] with the models' ids, labels, trees and splits alongside.

    Experts take it directly (they read ``bank.X``). Index it with a boolean mask, a list of
    positions or a slice, or :meth:`select` by split, tree or ids, to get a smaller bank.

    Attributes:
        X: torch tensor [N, d_W, d_H] (float32 or float16).
        records: the N models' records, aligned with X.
        layer: the layer name.
        info: the layer's catalog entry (shape, kind, source tensors), when known.
        skipped: (model id, reason) of models left out (NaN/Inf in this layer).
    """

    def __init__(
        self,
        X: torch.Tensor,
        records: Sequence[ModelRecord],
        layer: str,
        info: LayerInfo | None = None,
        skipped: Iterable[tuple[str, str]] = (),
    ) -> None:
        if X.ndim != 3 or X.shape[0] != len(records):
            raise ValueError(f"LayerBank '{layer}': X must be [N, d_W, d_H] with N = {len(records)} records, got {tuple(X.shape)}")
        self.X = X
        self.records = list(records)
        self.layer = layer
        self.info = info
        self.skipped = list(skipped)

    # -- what it holds -----------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.records)

    def __repr__(self) -> str:
        return f"LayerBank(layer={self.layer!r}, models={len(self)}, shape={self.shape}, dtype={self.X.dtype})"

    @property
    def ids(self) -> list[str]:
        return [record.id for record in self.records]

    @property
    def labels(self) -> list[list[str]]:
        """Each model's class names."""
        return [list(record.labels) for record in self.records]

    @property
    def trees(self) -> list[str | None]:
        return [record.tree for record in self.records]

    @property
    def splits(self) -> list[str | None]:
        return [record.split for record in self.records]

    @property
    def shape(self) -> tuple[int, int]:
        """The layer's matrix shape (d_W, d_H); ``len(bank)`` is N."""
        return int(self.X.shape[1]), int(self.X.shape[2])

    @property
    def dtype(self) -> torch.dtype:
        return self.X.dtype

    @property
    def label_names(self) -> list[str]:
        """Every class name in the bank, sorted."""
        return sorted({label for record in self.records for label in record.labels})

    def label_matrix(self, classes: Sequence[str] | None = None) -> tuple[torch.Tensor, list[str]]:
        """Multi-label targets: Y [N, C] float32 with Y[i, c] = 1 when model i was trained on classes[c].

        Args:
            classes: the class order (default: :attr:`label_names`). Labels not in it are ignored.

        Returns:
            (Y, classes).
        """
        classes = list(self.label_names if classes is None else classes)
        column = {name: index for index, name in enumerate(classes)}
        Y = torch.zeros(len(self), len(classes), dtype=torch.float32)
        for row, record in enumerate(self.records):
            for label in record.labels:
                if label in column:
                    Y[row, column[label]] = 1.0
        return Y, classes

    # -- smaller banks -----------------------------------------------------------------------

    def __getitem__(self, index: Any) -> "LayerBank":
        if isinstance(index, slice):
            positions = list(range(len(self)))[index]
        elif isinstance(index, (int, np.integer)) and not isinstance(index, bool):
            raise TypeError("bank[i] would drop the model axis; use bank[[i]] for a bank of one model, or bank.X[i] for its matrix")
        else:
            positions = _positions(index, len(self))
        X = self.X[positions[0]:positions[-1] + 1:_step(positions)] if _is_range(positions) else self.X[torch.as_tensor(positions, dtype=torch.long)]
        return LayerBank(X, [self.records[i] for i in positions], self.layer, self.info, self.skipped)

    def select(
        self,
        split: str | Iterable[str] | None = None,
        tree: str | Iterable[str] | None = None,
        ids: Iterable[str] | None = None,
    ) -> "LayerBank":
        """The models of ``split`` and ``tree`` (a name or a list) and, if given, ``ids`` (in that order)."""
        keep = list(range(len(self)))
        if split is not None:
            splits = {split} if isinstance(split, str) else set(split)
            keep = [i for i in keep if self.records[i].split in splits]
        if tree is not None:
            trees = {tree} if isinstance(tree, str) else set(tree)
            keep = [i for i in keep if self.records[i].tree in trees]
        if ids is not None:
            ids = [ids] if isinstance(ids, str) else list(ids)
            position = {self.records[i].id: i for i in keep}
            missing = [model_id for model_id in ids if model_id not in {record.id for record in self.records}]
            if missing:
                close = difflib.get_close_matches(missing[0], self.ids, n=5, cutoff=0.5)
                raise ZooError(f"bank '{self.layer}': no model {missing[0]!r}" + (f"; closest: {', '.join(close)}" if close else ""))
            keep = [position[model_id] for model_id in ids if model_id in position]
        return self[keep]


def _positions(index: Any, n: int) -> list[int]:
    array = index.cpu().numpy() if isinstance(index, torch.Tensor) else np.asarray(index)
    if array.dtype == bool:
        if array.shape != (n,):
            raise IndexError(f"boolean mask of shape {array.shape} for a bank of {n} models")
        return [int(i) for i in np.flatnonzero(array)]
    if array.size == 0:
        return []
    if not np.issubdtype(array.dtype, np.integer) or array.ndim != 1:
        raise TypeError("index a LayerBank with a boolean mask, a list of positions or a slice")
    positions = [int(i) + n if i < 0 else int(i) for i in array]
    if any(not 0 <= i < n for i in positions):
        raise IndexError(f"position out of range for a bank of {n} models")
    return positions


def _is_range(positions: list[int]) -> bool:
    if len(positions) < 2:
        return len(positions) == 1
    step = positions[1] - positions[0]
    return step > 0 and all(b - a == step for a, b in zip(positions, positions[1:]))


def _step(positions: list[int]) -> int:
    return positions[1] - positions[0] if len(positions) > 1 else 1


# ---------------------------------------------------------------------------------------------
# building and caching


def build_bank(
    records: Sequence[ModelRecord],
    layer: str,
    *,
    dtype: torch.dtype = torch.float32,
    progress: Progress | None = None,
    cache: bool | str | os.PathLike = True,
    zoo_root: Path | None = None,
    conv_layout: str | None = None,
) -> LayerBank:
    """Stack ``layer`` of every record into a LayerBank, reusing a cached build when one is valid.

    See :meth:`probex.zoo.ModelZoo.bank` for the arguments.
    """
    if dtype not in _NUMPY_DTYPES:
        raise ZooError(f"LayerBank dtype {dtype} is not supported; use torch.float32 or torch.float16")
    where = str(zoo_root) if zoo_root is not None else "zoo"
    if not records:
        raise ZooError(f"{where}: no models selected, so there is no bank of layer '{layer}'")
    infos = _layer_infos(records, layer, where, conv_layout)
    if cache is False:
        array, kept, skipped = _fill(records, infos, dtype, progress, out=None)
        _require_some(kept, layer, where)
        X = torch.from_numpy(array[: len(kept)] if len(kept) < len(records) else array)
        return LayerBank(X, [records[i] for i in kept], layer, infos[0], skipped)

    cache_dir = default_cache_dir() if cache is True else Path(cache).expanduser()
    key = cache_key(records, layer, dtype, infos)
    stem = f"{_safe_name(layer)}.{key[:24]}"
    array_path, index_path = cache_dir / f"{stem}.npy", cache_dir / f"{stem}.json"
    cached = _load_cached(array_path, index_path, key)
    if cached is not None:
        array, index = cached
        by_id = {record.id: record for record in records}
        logger.info("layer bank '%s' of %d models from the cache %s", layer, len(index["ids"]), array_path)
        if progress is not None:
            progress(len(records), len(records), "loaded from cache")
        return LayerBank(_as_tensor(array), [by_id[i] for i in index["ids"]], layer, infos[0], [tuple(s) for s in index["skipped"]])

    shape = (len(records), *infos[0].shape)
    with atomic_path(array_path) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=_NUMPY_DTYPES[dtype], shape=shape)
        _, kept, skipped = _fill(records, infos, dtype, progress, out=out)
        _require_some(kept, layer, where)
        out.flush()
        del out
        if len(kept) < len(records):
            _compact(tmp, len(kept))
    index = {
        "format": CACHE_FORMAT,
        "key": key,
        "layer": layer,
        "dtype": str(dtype).replace("torch.", ""),
        "shape": [len(kept), *infos[0].shape],
        "array_bytes": array_path.stat().st_size,
        "ids": [records[i].id for i in kept],
        "skipped": [list(item) for item in skipped],
    }
    with atomic_path(index_path) as tmp:  # written last: it is what makes the array trusted
        tmp.write_text(json.dumps(index), encoding="utf-8")
    array = np.load(array_path, mmap_mode="c")
    return LayerBank(_as_tensor(array), [records[i] for i in kept], layer, infos[0], skipped)


def cache_key(records: Sequence[ModelRecord], layer: str, dtype: torch.dtype, infos: Sequence[LayerInfo]) -> str:
    """Hash of what a bank is built from: layer, dtype, and each model's id, file, size and mtime."""
    models = []
    for record, info in zip(records, infos):
        stat = os.stat(record.path)
        alpha = lora_scaling(record.metadata) if info.kind in LORA_KINDS else None
        models.append([record.id, str(Path(record.path).absolute()), stat.st_size, stat.st_mtime_ns, alpha])
    material = {"format": CACHE_FORMAT, "layer": layer, "dtype": str(dtype), "models": models,
                "presented": [infos[0].kind, list(infos[0].shape)] if infos else None}
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def _layer_infos(records: Sequence[ModelRecord], layer: str, where: str, conv_layout: str | None = None) -> list[LayerInfo]:
    """The layer's catalog entry in every record; ZooError if one lacks it or shapes differ."""

    infos: list[LayerInfo] = []
    lookups: dict[int, dict[str, LayerInfo]] = {}
    for record in records:
        catalog = layer_catalog(record.read_header(), conv_layout)
        lookup = lookups.setdefault(id(catalog), {info.name: info for info in catalog})
        info = lookup.get(layer)
        if info is None:
            close = difflib.get_close_matches(layer, list(lookup), n=5, cutoff=0.4)
            hint = f"closest available: {', '.join(close)}" if close else f"it has {len(lookup)} layers, e.g. {', '.join(list(lookup)[:5])}"
            others = " (the selected models differ in architecture; see zoo.architectures())" if infos else ""
            raise ZooError(f"{record.path} ({record.id}): layer '{layer}' missing{others}; {hint}")
        if infos and info.shape != infos[0].shape:
            raise ZooError(
                f"{record.path} ({record.id}): layer '{layer}' is {info.shape}, but {infos[0].shape} in "
                f"{records[0].id}; banks stack one shape (see zoo.architectures())"
            )
        infos.append(info)
    return infos


def _fill(
    records: Sequence[ModelRecord],
    infos: Sequence[LayerInfo],
    dtype: torch.dtype,
    progress: Progress | None,
    out: np.ndarray | None,
) -> tuple[np.ndarray, list[int], list[tuple[str, str]]]:
    """Read each record's layer into consecutive rows of ``out`` (allocated if None), skipping non-finite ones."""
    if out is None:
        out = np.empty((len(records), *infos[0].shape), dtype=_NUMPY_DTYPES[dtype])
    kept: list[int] = []
    skipped: list[tuple[str, str]] = []
    for position, (record, info) in enumerate(zip(records, infos)):
        tensors = read_tensors(record.path, info.tensors, header=record.header)
        matrix = layer_matrix(info, tensors, scaling=lora_scaling(record.metadata), source=str(record.path))
        if not bool(torch.isfinite(matrix).all()):
            bad = int((~torch.isfinite(matrix)).sum())
            reason = f"layer '{info.name}' has {bad} NaN/Inf values"
            logger.warning("%s (%s): %s; left out of the bank", record.id, record.path, reason)
            skipped.append((record.id, reason))
        else:
            converted = matrix.to(dtype)
            if not bool(torch.isfinite(converted).all()):
                raise ZooError(
                    f"{record.path} ({record.id}): layer '{info.name}' has values beyond the {dtype} range "
                    f"(largest {float(matrix.abs().max()):.3g}); build the bank with dtype=torch.float32"
                )
            out[len(kept)] = converted.numpy()
            kept.append(position)
        if progress is not None:
            progress(position + 1, len(records), f"reading layer {info.name}")
    return out, kept, skipped


def _require_some(kept: list[int], layer: str, where: str) -> None:
    if not kept:
        raise ZooError(f"{where}: every selected model has NaN/Inf values in layer '{layer}'; choose another layer")


def _compact(path: Path, rows: int) -> None:
    """Rewrite the .npy at ``path`` keeping only its first ``rows`` rows (after skipped models)."""
    full = np.load(path, mmap_mode="r")
    compact_path = path.with_name(path.name + ".compact")
    try:
        compact = np.lib.format.open_memmap(compact_path, mode="w+", dtype=full.dtype, shape=(rows, *full.shape[1:]))
        for start in range(0, rows, 64):
            stop = min(start + 64, rows)
            compact[start:stop] = full[start:stop]
        compact.flush()
        del compact, full
        os.replace(compact_path, path)
    finally:
        if compact_path.exists():
            compact_path.unlink()


def _load_cached(array_path: Path, index_path: Path, key: str) -> tuple[np.ndarray, dict[str, Any]] | None:
    """The cached array (memory-mapped) and its index, or None if there is no trustworthy cache entry."""
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
        if index.get("format") != CACHE_FORMAT or index.get("key") != key:
            return None
        if array_path.stat().st_size != index["array_bytes"]:
            logger.warning("%s: size differs from its index; rebuilding the bank", array_path)
            return None
        array = np.load(array_path, mmap_mode="c")
        if list(array.shape) != index["shape"] or len(index["ids"]) != array.shape[0]:
            logger.warning("%s: shape differs from its index; rebuilding the bank", array_path)
            return None
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as error:
        logger.warning("%s: unreadable cache entry (%s); rebuilding the bank", index_path, error)
        return None
    return array, index


def _as_tensor(array: np.ndarray) -> torch.Tensor:
    with warnings.catch_warnings():  # a copy-on-write memory map is writable; torch warns about memmaps anyway
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(array)


def _safe_name(layer: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", layer)[:80]
