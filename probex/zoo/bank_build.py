"""Building a LayerBank: read one layer of every model, stack it (dense or as LoRA factors), cache it once.

See :mod:`probex.zoo.bank` for what a bank holds and :mod:`probex.zoo.bank_cache` for the cache.
"""

from __future__ import annotations

import difflib
import logging
import os
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from probex.errors import ZooError
from probex.progress import Progress
from probex.zoo import bank_cache
from probex.zoo.bank import LayerBank, default_cache_dir
from probex.zoo.catalog import layer_catalog, layer_matrix
from probex.zoo.limits import check_layer_bytes
from probex.zoo.factored import LoraFactors
from probex.zoo.lora import LORA_KINDS, lora_factors, lora_scaling
from probex.zoo.records import FileIdentity, LayerInfo, ModelRecord, file_identity
from probex.zoo.safefile import read_tensors

logger = logging.getLogger(__name__)

_NUMPY_DTYPES = {torch.float16: np.float16, torch.float32: np.float32, torch.float64: np.float64}
_FLOAT32_MAX_SQUARED = float(np.finfo(np.float32).max) ** 2
_DENSE_ARRAYS = ("X",)
_LORA_ARRAYS = ("B", "A", "scale")
_COMPACT_ROWS = 64


def build_bank(
    records: Sequence[ModelRecord],
    layer: str,
    *,
    dtype: torch.dtype | None = None,
    progress: Progress | None = None,
    cache: bool | str | os.PathLike = True,
    zoo_root: Path | None = None,
    population: Sequence[ModelRecord] | None = None,
    conv_layout: str | None = None,
) -> LayerBank:
    """Stack ``layer`` of every record into a LayerBank, reusing a cached build when one is valid.

    With ``population`` (the records of the whole zoo) and a cache, the bank of every
    population model that has the layer in the same shape is built (or loaded) once, and the
    view of ``records`` is returned. See :meth:`probex.zoo.ModelZoo.bank` for the arguments.
    """
    if dtype is not None and dtype not in _NUMPY_DTYPES:
        raise ZooError(f"LayerBank dtype {dtype} is not supported; use torch.float32 or torch.float16 (or None: the file's)")
    where = str(zoo_root) if zoo_root is not None else "zoo"
    if not records:
        raise ZooError(f"{where}: no models selected, so there is no bank of layer '{layer}'")
    infos = _layer_infos(records, layer, where, conv_layout)
    base, base_infos = records, infos
    if cache is not False and population is not None:
        base, base_infos = _population_with_layer(population, records, infos[0], layer, conv_layout)
    dtype = dtype or _file_dtype(base_infos)
    if cache is False:
        arrays, kept, skipped = _fill(base, base_infos, dtype, progress, None, None, conv_layout)
        _require_some(kept, layer, where)
        full = _bank(arrays, [base[i] for i in kept], layer, base_infos[0], skipped)
    else:
        full = _cached_bank(base, base_infos, layer, dtype, progress,
                            default_cache_dir() if cache is True else Path(cache).expanduser(), where, conv_layout)
    if base is records:
        return full
    kept_ids = set(full.ids)
    view = full.select(ids=[record.id for record in records if record.id in kept_ids])
    chosen = {record.id for record in records}
    view.skipped = [item for item in full.skipped if item[0] in chosen]
    if not len(view):
        _require_some([], layer, where)
    return view


def _file_dtype(infos: Sequence[LayerInfo]) -> torch.dtype:
    """The bank dtype that keeps the files' values: float16 when every file stores the layer in F16, else float32."""
    return torch.float16 if all(info.dtype == "F16" for info in infos) else torch.float32


def _layer_infos(records: Sequence[ModelRecord], layer: str, where: str,
                 conv_layout: str | None = None) -> list[LayerInfo]:
    """The layer's catalog entry in every record; ZooError if one lacks it or shapes differ."""
    infos: list[LayerInfo] = []
    lookups: dict[int, dict[str, LayerInfo]] = {}
    for record in records:
        catalog = _catalog(record, conv_layout)
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
    # one model's matrix, merged (a consumer may merge a LoRA pair), must fit the documented limit
    check_layer_bytes(infos[0].shape, f"{records[0].path} ({records[0].id}): layer '{layer}'")
    return infos


def _population_with_layer(population: Sequence[ModelRecord], records: Sequence[ModelRecord], first: LayerInfo,
                           layer: str, conv_layout: str | None = None) -> tuple[list[ModelRecord], list[LayerInfo]]:
    """The population's models that have ``layer`` in the shape of ``first`` (the selection's), and their infos."""
    chosen = {record.id for record in records}
    base, infos = [], []
    for record in population:
        try:
            catalog = _catalog(record, conv_layout)
        except ZooError:
            if record.id in chosen:
                raise
            logger.warning("%s (%s): unreadable now; left out of the bank of layer '%s'", record.path, record.id, layer)
            continue
        info = next((entry for entry in catalog if entry.name == layer), None)
        if info is not None and info.shape == first.shape and info.kind == first.kind:
            base.append(record)
            infos.append(info)
    if not chosen <= {record.id for record in base}:  # a selection that is not part of the population
        return list(records), _layer_infos(records, layer, "zoo", conv_layout)
    return base, infos


def _catalog(record: ModelRecord, conv_layout: str | None = None) -> tuple[LayerInfo, ...]:
    """The catalog of a record's file as it is now, kept beside the header it was read from (a zoo's
    banks ask for the catalogs of all its models at every call)."""
    header = record.read_header()
    kept = record.__dict__.get("_bank_catalog")
    if kept is None or kept[0] is not header or kept[1] != conv_layout:
        kept = (header, conv_layout, layer_catalog(header, conv_layout))
        record.__dict__["_bank_catalog"] = kept
    return kept[2]


def _ranks(infos: Sequence[LayerInfo]) -> list[int]:
    """Each model's LoRA rank, from the stored down factor's shape [r, ...] (as ``lora_factors`` reads it)."""
    return [int(info.source_shape[1][0]) for info in infos]


def _allocate(infos: Sequence[LayerInfo], dtype: torch.dtype, paths: dict[str, Path] | None) -> dict[str, np.ndarray]:
    """Zeroed arrays for the bank (memory-mapped files at ``paths`` when given)."""
    n, (d_W, d_H) = len(infos), infos[0].shape
    numpy_dtype = _NUMPY_DTYPES[dtype]
    if infos[0].kind in LORA_KINDS:
        r = max(_ranks(infos))
        shapes = {"B": ((n, d_W, r), numpy_dtype), "A": ((n, r, d_H), numpy_dtype), "scale": ((n,), np.float32)}
    else:
        shapes = {"X": ((n, d_W, d_H), numpy_dtype)}
    if paths is None:
        return {name: np.zeros(shape, dtype=kind) for name, (shape, kind) in shapes.items()}
    return {name: np.lib.format.open_memmap(paths[name], mode="w+", dtype=kind, shape=shape)  # zero-filled
            for name, (shape, kind) in shapes.items()}


def _read_layer(record: ModelRecord, layer: str,
                conv_layout: str | None = None) -> tuple[LayerInfo, dict[str, torch.Tensor], FileIdentity]:
    """The layer's tensors as the file holds them now, read with the header of that same file."""
    for _ in range(3):
        header = record.read_header()
        identity = record.header_identity
        info = next((entry for entry in layer_catalog(header, conv_layout) if entry.name == layer), None)
        if info is None:
            raise ZooError(f"{record.path} ({record.id}): layer '{layer}' missing (the file changed since the zoo was opened)")
        tensors = read_tensors(record.path, info.tensors, header=header)
        if file_identity(record.path) == identity:
            return info, tensors, identity
    raise ZooError(f"{record.path} ({record.id}): the file keeps changing while it is read; run again once it is written")


def _fill(
    records: Sequence[ModelRecord],
    infos: Sequence[LayerInfo],
    dtype: torch.dtype,
    progress: Progress | None,
    out: dict[str, np.ndarray] | None,
    identities: Sequence[FileIdentity] | None,
    conv_layout: str | None = None,
) -> tuple[dict[str, np.ndarray], list[int], list[tuple[str, str]]]:
    """Read each record's layer into consecutive rows of ``out`` (allocated if None), skipping non-finite ones.

    ``identities``: the file identities the cache key was made from; a file that is not that
    file any more raises ZooError (the entry would be keyed wrongly).
    """
    out = _allocate(infos, dtype, None) if out is None else out
    lora = infos[0].kind in LORA_KINDS
    kept: list[int] = []
    skipped: list[tuple[str, str]] = []
    for position, (record, expected) in enumerate(zip(records, infos)):
        info, tensors, identity = _read_layer(record, expected.name, conv_layout)
        if identities is not None and identity != identities[position]:
            raise ZooError(f"{record.path} ({record.id}): the file changed while the bank was built; run again")
        if info.shape != expected.shape or info.kind != expected.kind:
            raise ZooError(f"{record.path} ({record.id}): layer '{info.name}' is now {info.shape}; the zoo said "
                           f"{expected.shape} (the file changed since the zoo was opened); open the zoo again")
        scaling = lora_scaling(record.metadata)
        problem = _store_lora(out, len(kept), info, tensors, scaling, dtype, record) if lora else \
            _store_dense(out, len(kept), info, tensors, scaling, dtype, record)
        if problem is not None:
            logger.warning("%s (%s): %s; left out of the bank", record.id, record.path, problem)
            skipped.append((record.id, problem))
        else:
            kept.append(position)
        if progress is not None:
            progress(position + 1, len(records), f"reading layer {info.name}")
    return out, kept, skipped


def _store_dense(out, row, info, tensors, scaling, dtype, record) -> str | None:
    matrix = layer_matrix(info, tensors, scaling=scaling, source=str(record.path))
    if not bool(torch.isfinite(matrix).all()):
        return f"layer '{info.name}' has {int((~torch.isfinite(matrix)).sum())} NaN/Inf values"
    out["X"][row] = _converted(matrix, dtype, record, info).numpy()
    return None


def _store_lora(out, row, info, tensors, scaling, dtype, record) -> str | None:
    B, A, scale = lora_factors(info, tensors, scaling, source=str(record.path))
    bad = int((~torch.isfinite(B)).sum() + (~torch.isfinite(A)).sum()) + (0 if np.isfinite(scale) else 1)
    if bad:
        return f"layer '{info.name}' has {bad} NaN/Inf values in its LoRA factors"
    # ||s B A||_F <= |s| ||B||_F ||A||_F: the exact norm (r x r products) only when that bound is not enough
    bound = float(scale) ** 2 * float(B.float().square().sum()) * float(A.float().square().sum())  # inf: exact check
    if not bound < _FLOAT32_MAX_SQUARED and not (
            float(LoraFactors(B[None], A[None], torch.tensor([scale], dtype=torch.float32)).squared_norms()[0])
            < _FLOAT32_MAX_SQUARED):
        return f"layer '{info.name}' merges to values beyond the float32 range"
    rank = B.shape[1]
    out["B"][row, :, :rank] = _converted(B, dtype, record, info).numpy()
    out["A"][row, :rank, :] = _converted(A, dtype, record, info).numpy()
    out["scale"][row] = scale
    return None


def _converted(values: torch.Tensor, dtype: torch.dtype, record: ModelRecord, info: LayerInfo) -> torch.Tensor:
    converted = values.to(dtype)
    if not bool(torch.isfinite(converted).all()):
        raise ZooError(
            f"{record.path} ({record.id}): layer '{info.name}' has values beyond the {dtype} range "
            f"(largest {float(values.float().abs().max()):.3g}); build the bank with dtype=torch.float32"
        )
    return converted


def _require_some(kept: list[int], layer: str, where: str) -> None:
    if not kept:
        raise ZooError(f"{where}: every selected model has NaN/Inf values in layer '{layer}'; choose another layer")


def _bank(arrays: dict[str, np.ndarray], records: Sequence[ModelRecord], layer: str, info: LayerInfo,
          skipped: Sequence[tuple[str, str]]) -> LayerBank:
    """The bank of ``arrays`` (their first len(records) rows)."""
    tensors = {name: _as_tensor(array[: len(records)]) for name, array in arrays.items()}
    weights = LoraFactors(tensors["B"], tensors["A"], tensors["scale"]) if "B" in tensors else tensors["X"]
    return LayerBank(weights, records, layer, info, skipped)


def _cached_bank(records: Sequence[ModelRecord], infos: Sequence[LayerInfo], layer: str, dtype: torch.dtype,
                 progress: Progress | None, cache_dir: Path, where: str, conv_layout: str | None = None) -> LayerBank:
    """The bank from a verified cache entry, else built into a new one."""
    names = _LORA_ARRAYS if infos[0].kind in LORA_KINDS else _DENSE_ARRAYS
    identities = [record.header_identity for record in records]  # set by read_header in _layer_infos
    models = [(record.id, record.path, identity, lora_scaling(record.metadata) if info.kind in LORA_KINDS else None)
              for record, info, identity in zip(records, infos, identities)]
    presented = [infos[0].kind, list(infos[0].shape)]  # e.g. a conv read in another layout is another bank
    key = bank_cache.cache_key(layer, str(dtype).replace("torch.", ""), models, presented)
    stem = bank_cache.entry_stem(layer, key)
    bank_cache.remove_stale_temporaries(cache_dir)
    by_id = {record.id: record for record in records}
    targets = {name: cache_dir / f"{stem}.{name}.npy" for name in names}
    loaded = bank_cache.load_entry(cache_dir, stem, key, [record.id for record in records], names)
    if loaded is not None:
        arrays, index = loaded
        logger.info("layer bank '%s' of %d models from the cache %s", layer, len(index["ids"]), cache_dir / stem)
        if progress is not None:
            progress(len(records), len(records), "loaded from cache")
        return _bank(arrays, [by_id[i] for i in index["ids"]], layer, infos[0], [tuple(s) for s in index["skipped"]])

    cache_dir.mkdir(parents=True, exist_ok=True)
    temporaries = {name: bank_cache.temporary_name(path) for name, path in targets.items()}
    try:
        out = _allocate(infos, dtype, temporaries)
        _, kept, skipped = _fill(records, infos, dtype, progress, out, identities, conv_layout)
        _require_some(kept, layer, where)
        for array in out.values():
            array.flush()
        del out
        for name, tmp in temporaries.items():
            if len(kept) < len(records):
                _compact(tmp, len(kept))
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, targets[name])
    finally:
        for tmp in temporaries.values():
            tmp.unlink(missing_ok=True)
    entries = {}
    for name, path in targets.items():
        crc = bank_cache.file_crc32(path)
        bank_cache.remember_verified(path, crc)
        entries[name] = {"bytes": path.stat().st_size, "crc32": crc, "shape": list(np.load(path, mmap_mode="r").shape)}
    index = {"key": key, "layer": layer, "dtype": str(dtype).replace("torch.", ""), "kind": infos[0].kind,
             "ids": [records[i].id for i in kept], "skipped": [list(item) for item in skipped], "arrays": entries}
    bank_cache.write_index(cache_dir, stem, index)
    arrays = {name: np.load(path, mmap_mode="c") for name, path in targets.items()}
    return _bank(arrays, [records[i] for i in kept], layer, infos[0], skipped)


def _compact(path: Path, rows: int) -> None:
    """Rewrite the .npy at ``path`` keeping only its first ``rows`` rows (after skipped models)."""
    full = np.load(path, mmap_mode="r")
    compact_path = bank_cache.temporary_name(path)
    try:
        compact = np.lib.format.open_memmap(compact_path, mode="w+", dtype=full.dtype, shape=(rows, *full.shape[1:]))
        for start in range(0, rows, _COMPACT_ROWS):
            stop = min(start + _COMPACT_ROWS, rows)
            compact[start:stop] = full[start:stop]
        compact.flush()
        del compact, full
        os.replace(compact_path, path)
    finally:
        compact_path.unlink(missing_ok=True)


def _as_tensor(array: np.ndarray) -> torch.Tensor:
    with warnings.catch_warnings():  # a copy-on-write memory map is writable; torch warns about memmaps anyway
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(array)
