"""The text tower of an open_clip model, behind the ``"open_clip:<model>/<tag or file>"`` specs of ``load_text_encoder``.

Weights come from a local safetensors file or, for a pretrained tag, from the Hub as the
safetensors file open_clip publishes (pickled checkpoints are never loaded).
"""

from __future__ import annotations

import functools
import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import torch

from probex.errors import HubUnavailableError, ProbeXError
from probex.language.text import OPEN_CLIP_PREFIX, TextEncoder, _check_texts

logger = logging.getLogger(__name__)

#: The file open_clip's own Hub repos hold the weights in, as safetensors.
OPEN_CLIP_SAFETENSORS = "open_clip_model.safetensors"


def load_open_clip_encoder(spec: str, device: torch.device, cache_dir: Path | None) -> "OpenCLIPTextEncoder":
    """The encoder of an ``open_clip:`` spec (see :func:`probex.language.text.load_text_encoder`)."""
    model_name, source = _parse_open_clip_spec(spec)
    model, tokenizer = _load_open_clip(spec, model_name, source, str(device))
    return OpenCLIPTextEncoder(spec, model, tokenizer, device, cache_dir)


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
            raise ProbeXError(f"text encoder {self.spec!r}: token embeddings are only available for open_clip's own text transformer")
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
        raise ProbeXError(
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
        raise ProbeXError(f"text encoder {spec!r}: open_clip has no model {model_name!r}; see open_clip.list_models()")
    quick_gelu = False
    if _is_local_file(source):
        path = Path(source).expanduser()
    else:
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        if source not in tags:
            raise ProbeXError(
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
        raise ProbeXError(
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
        raise ProbeXError(
            f"text encoder {spec!r}: {path} is not a .safetensors file; pickled checkpoints (.bin, .pt) are never loaded. "
            "Convert it once on a trusted machine (safetensors.torch.save_file(model.state_dict(), 'model.safetensors'))"
        )
    if not path.is_file():
        raise ProbeXError(f"text encoder {spec!r}: no file {path}")
    try:
        return load_file(str(path))
    except (OSError, SafetensorError) as error:
        raise ProbeXError(f"text encoder {spec!r}: {path} is not a readable safetensors file ({error})") from None


def _hub_repo(hub: str) -> str:
    """The Hub repo of open_clip's ``hf_hub`` entry ("timm/vit_large_patch14_clip_224.openai/" or "<repo>/<file>")."""
    return hub.rstrip("/") if hub.endswith("/") else hub.rsplit("/", 1)[0]


def open_clip_weights_on_machine(spec: str) -> bool:
    """Whether an open_clip spec's weights are here without the network: a local file, or a pretrained tag whose
    safetensors weights are already in the Hugging Face cache (nothing is downloaded)."""
    try:
        model_name, source = _parse_open_clip_spec(spec)
    except ProbeXError:
        return False
    if Path(source).expanduser().is_file():
        return True
    try:
        import open_clip
        from huggingface_hub import try_to_load_from_cache

        hub = open_clip.get_pretrained_cfg(model_name, source).get("hf_hub", "")
    except Exception:  # open_clip missing, or an unknown model or tag
        return False
    return bool(hub) and isinstance(try_to_load_from_cache(_hub_repo(hub), OPEN_CLIP_SAFETENSORS), str)


def _download_open_clip_weights(spec: str, model_name: str, config: dict) -> Path:
    """The published safetensors weights of a pretrained tag, from the Hub (or its local cache).

    ``model_name`` is the name to load the same weights from a local file (with
    ``-quickgelu`` where the tag needs it), used in the error message.
    """
    hub = config.get("hf_hub", "")
    if not hub:
        raise ProbeXError(
            f"text encoder {spec!r}: open_clip publishes these weights only as a download URL, not on the Hugging Face Hub; "
            f"convert them to safetensors and use 'open_clip:{model_name}/<path to the .safetensors file>'"
        )
    repo_id = _hub_repo(hub)
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
