"""Sentence embeddings kept on disk, keyed by the encoder's spec and the exact texts."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import torch

from probex.storage import atomic_path

logger = logging.getLogger(__name__)

_CACHE_FORMAT = 1


def cache_file(cache_dir: str | Path, spec: str, texts: list[str]) -> Path:
    """Where the embeddings of ``texts`` by the encoder ``spec`` are kept in ``cache_dir``."""
    key = hashlib.sha256(json.dumps([_CACHE_FORMAT, spec, texts]).encode("utf-8")).hexdigest()
    return Path(cache_dir) / f"{spec.replace('/', '_').replace(':', '_')}-{key[:32]}.safetensors"


def read_cache(path: Path, n: int, dim: int) -> torch.Tensor | None:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        embeddings = load_file(str(path))["embeddings"]
    except (OSError, KeyError, SafetensorError) as error:
        logger.warning("%s: unreadable embedding cache entry (%s); recomputing it", path, error)
        return None
    if tuple(embeddings.shape) != (n, dim) or embeddings.dtype != torch.float32:
        logger.warning("%s: embedding cache entry has shape %s, expected %s; recomputing it", path, tuple(embeddings.shape), (n, dim))
        return None
    return embeddings


def write_cache(path: Path, embeddings: torch.Tensor) -> None:
    from safetensors.torch import save_file

    try:
        with atomic_path(path) as tmp:
            save_file({"embeddings": embeddings.contiguous()}, str(tmp))
    except OSError as error:  # a read-only cache must not break encoding
        logger.warning("%s: cannot write the embedding cache (%s)", path, error)
