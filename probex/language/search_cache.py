"""What a tree's expert says about every model of its population, kept on disk between runs.

Answering a prompt over a whole zoo needs, per tree, the expert's view of every model: an
aligned expert's embeddings [N, d] or a classifier's predicted class probabilities [N, C].
Computing them reads every model's layers and runs the expert (seconds per tree); the answer
to any prompt is then one matrix product. So they are cached in ``$PROBEX_CACHE/search``
(else ``~/.cache/probex/search``), one safetensors file per (tree, expert, population)::

    key = population_key(tree, "embeddings", expert, layers, records)
    values = load_values(key, ids) or compute ...; save_values(key, ids, values)

Trust, as for the bank cache (:mod:`probex.zoo.bank_cache`): the key hashes the expert's
own parameters and state (not its folder, so an expert retrained in place gives a new key),
the layers it reads, and for every model its id, file path, size, mtime_ns, ctime_ns, inode
and device, and its metadata (a LoRA's alpha lives there): any write to a model file changes
its ctime, which no one can set back. An entry is used only when its key is the one computed
now, it lists exactly the models asked for in their order, and its values match the CRC-32
recorded beside them; anything else is recomputed. An entry is one file, written to a
temporary and renamed into place, so a crash never leaves half an entry.
"""

from __future__ import annotations

import hashlib
import json
import logging
import zlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from probex.storage import atomic_path, cache_dir, safe_name
from probex.zoo.records import ModelRecord, file_identity

logger = logging.getLogger(__name__)

#: Bump when what is cached or how it is computed changes, so old entries are not reused.
CACHE_FORMAT = 1
CACHE_KIND = "search"


def expert_fingerprint(expert: Any) -> str:
    """A hash of a fitted expert's class, parameters, state and every tensor it holds."""
    state, tensors = expert._state()
    digest = hashlib.sha256()
    header = {"class": type(expert).__name__, "params": expert.get_params(deep=False), "state": state,
              "layers": getattr(expert, "layers_", None)}
    digest.update(json.dumps(header, sort_keys=True, default=repr).encode("utf-8"))
    for name in sorted(tensors):
        array = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}:{array.dtype}:{list(array.shape)}".encode("utf-8"))
        digest.update(array.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def population_key(tree: str, kind: str, expert: Any, layers: Sequence[str], records: Sequence[ModelRecord]) -> str | None:
    """The cache key of one tree's values, or None (then nothing is cached) when a model file cannot be stat'ed
    or the expert cannot show its state (an object that is not a :class:`~probex.experts.base.BaseExpert`)."""
    if not callable(getattr(expert, "_state", None)) or not callable(getattr(expert, "get_params", None)):
        return None
    try:
        models = [[record.id, str(Path(record.path).resolve()), list(file_identity(record.path)),
                   json.dumps(record.metadata, sort_keys=True, default=str)] for record in records]
    except OSError:
        return None
    material = {"format": CACHE_FORMAT, "tree": tree, "kind": kind, "expert": expert_fingerprint(expert),
                "layers": list(layers), "models": models}
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode("utf-8")).hexdigest()


def entry_path(tree: str, key: str) -> Path:
    """The file of one cache entry (the tree's name made safe, then the key)."""
    return cache_dir(CACHE_KIND) / f"{safe_name(tree)[:60]}.{key[:24]}.safetensors"


def load_values(tree: str, key: str | None, ids: Sequence[str]) -> tuple[list[str], np.ndarray] | None:
    """The cached (kept ids, values) of a tree, or None when absent or not trusted.

    The entry must hold the key computed now and list ``ids`` in order (less the models the
    expert could not read, which the entry names as skipped), and its values must match their CRC-32.
    """
    if key is None:
        return None
    path = entry_path(tree, key)
    if not path.is_file():
        return None
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="np") as handle:
            metadata = handle.metadata() or {}
            values = handle.get_tensor("values")
        kept, skipped = json.loads(metadata["ids"]), json.loads(metadata["skipped"])
        problem = None
        if metadata.get("format") != str(CACHE_FORMAT) or metadata.get("key") != key:
            problem = "it belongs to another expert or population"
        elif [i for i in ids if i not in set(skipped)] != kept or values.shape[0] != len(kept):
            problem = "it lists other models"
        elif zlib.crc32(np.ascontiguousarray(values).tobytes()) != int(metadata["crc32"]):
            problem = "its values do not match their checksum"
    except (OSError, ValueError, KeyError, TypeError, SafetensorError) as error:
        problem = f"unreadable ({error})"
    if problem is not None:
        logger.warning("%s: %s; recomputing it", path, problem)
        return None
    logger.info("%s: %d models of tree %s from the search cache", path.name, len(kept), tree)
    return kept, values


def save_values(tree: str, key: str | None, ids: Sequence[str], kept: Sequence[str], values: np.ndarray) -> None:
    """Cache a tree's values (one row per kept model); a failure to write is logged, never raised."""
    if key is None:
        return
    from safetensors.numpy import save_file

    values = np.ascontiguousarray(values, dtype=np.float32)
    kept_set = set(kept)
    metadata = {"format": str(CACHE_FORMAT), "key": key, "ids": json.dumps(list(kept)),
                "skipped": json.dumps([i for i in ids if i not in kept_set]),
                "crc32": str(zlib.crc32(values.tobytes()))}
    path = entry_path(tree, key)
    try:
        with atomic_path(path) as tmp:
            save_file({"values": values}, str(tmp), metadata=metadata)
    except OSError as error:
        logger.warning("%s: cannot write the search cache (%s); it will be computed again next time", path, error)
