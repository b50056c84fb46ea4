"""LoRA checkpoints: recognise the key styles found in the wild, pair the factors, and scale them.

A LoRA layer stores two factors of a weight update: ``down`` (also called ``A``) of shape
[r, in] and ``up`` (``B``) of shape [out, r]. ProbeX reads the update

    X = s * up @ down        shape [out, in]

where the scale s is alpha / r (alpha / sqrt(r) for rsLoRA), or 1 when the checkpoint stores
no alpha (what the diffusers loaders do for such files). :func:`lora_scale` is the one place
that computes s; :func:`lora_factors` gives (B, A, s) for readers that keep the factors, and
:func:`~probex.zoo.catalog.layer_matrix` multiplies them out. Conv LoRA factors (kohya LoCon:
down [r, in, kh, kw], up [out, r, 1, 1]) merge the same way into [out, in*kh*kw].

Key styles, and the module name each pair is presented under:

=====================  ====================================================================
diffusers processors   ``unet.….attn2.processor.to_q_lora.down.weight`` / ``.up.weight``
                       -> ``unet.….attn2.to_q`` (``to_out_lora`` -> ``to_out.0``, the
                       Linear inside diffusers' ``to_out`` list, as the newer style names it)
diffusers              ``unet.….attn2.to_q.lora.down.weight`` / ``.lora.up.weight`` (and the
                       text-encoder form ``….q_proj.lora_linear_layer.down.weight``)
                       -> ``unet.….attn2.to_q``
PEFT                   ``base_model.model.….q_proj.lora_A.weight`` / ``lora_B.weight``
                       (optionally with an adapter name: ``lora_A.default.weight``)
                       -> ``….q_proj`` (the ``base_model.model.`` wrapper prefix dropped)
PEFT embeddings        ``….embed_tokens.lora_embedding_A`` [r, vocab] / ``lora_embedding_B``
                       [dim, r] -> ``….embed_tokens``, X = s (B A)^T [vocab, dim], the shape of
                       the embedding it updates (kind ``"lora-embedding"``)
kohya                  ``lora_unet_…_to_q.lora_down.weight`` / ``.lora_up.weight`` and a
                       scalar ``lora_unet_…_to_q.alpha`` -> ``lora_unet_…_to_q`` (kohya
                       flattens dots to underscores, which cannot be undone unambiguously)
=====================  ====================================================================

The alpha of a layer is, in order:

1. a scalar tensor ``<module>.alpha`` beside the pair (kohya);
2. the adapter's LoRA config: diffusers' ``lora_adapter_metadata`` entry of the file's metadata
   (a JSON LoraConfig, its keys prefixed by the component, ``unet.lora_alpha``, when a whole
   pipeline was saved), else PEFT's ``adapter_config.json`` beside the file (read into the
   record's metadata as ``peft_adapter_config`` when the zoo is opened). Its ``alpha_pattern``
   (per-module alphas, PEFT's regex keys) comes before its ``lora_alpha``, and ``use_rslora``
   makes s = alpha / sqrt(r);
3. a ``lora_alpha`` / ``network_alpha`` / ``ss_network_alpha`` entry of the file's metadata;
4. none: s = 1.

The rank r is read from the factors' shapes. **DoRA** (a magnitude vector ``lora_magnitude_vector``
or ``dora_scale`` beside the pair, or ``use_dora`` in the config) is refused with a clear
message: its update m (W0 + sBA) / ||W0 + sBA|| needs the base model's weight W0, which an
adapter file does not hold, so no matrix can be formed from the file alone. Nothing is ever
merged at a guessed scale.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Mapping, NamedTuple

import torch

from probex.errors import ZooError

if TYPE_CHECKING:
    from probex.zoo.records import LayerInfo

#: Metadata keys that may carry one alpha for the whole file, in order of preference.
ALPHA_METADATA_KEYS = ("lora_alpha", "network_alpha", "ss_network_alpha")

#: Metadata key of diffusers' LoRA config (a JSON LoraConfig) inside a safetensors file.
DIFFUSERS_CONFIG_KEY = "lora_adapter_metadata"

#: Record metadata key under which a zoo keeps the LoRA fields of PEFT's adapter_config.json.
PEFT_CONFIG_KEY = "peft_adapter_config"

#: LayerInfo kinds made of LoRA factors.
LORA_KINDS = ("lora", "lora-embedding", "dora")

_PEFT_PREFIX = "base_model.model."

# (style, pattern); each pattern names the module and which factor ("part") a key holds.
_KEY_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "diffusers-processor",
        re.compile(r"^(?P<module>.+)\.processor\.(?P<proj>[A-Za-z0-9_]+?)_lora\.(?P<part>down|up)\.weight$"),
    ),
    ("diffusers", re.compile(r"^(?P<module>.+)\.(?:lora|lora_linear_layer)\.(?P<part>down|up)\.weight$")),
    ("peft-embedding", re.compile(r"^(?P<module>.+)\.lora_embedding_(?P<part>A|B)(?:\.[A-Za-z0-9_-]+)?(?:\.weight)?$")),
    ("peft", re.compile(r"^(?P<module>.+)\.lora_(?P<part>A|B)(?:\.[A-Za-z0-9_-]+)?\.weight$")),
    ("peft", re.compile(r"^(?P<module>.+)\.lora_(?P<part>magnitude)_vector(?:\.[A-Za-z0-9_-]+)?(?:\.weight)?$")),
    ("kohya", re.compile(r"^(?P<module>.+)\.lora_(?P<part>down|up)\.weight$")),
    ("kohya", re.compile(r"^(?P<module>.+)\.dora_(?P<part>scale)$")),
)

_PART = {"down": "down", "A": "down", "up": "up", "B": "up", "magnitude": "magnitude", "scale": "magnitude"}


@dataclass(frozen=True)
class LoraPair:
    """The stored tensors of one LoRA layer.

    Attributes:
        module: the module the update applies to (the layer name probex presents).
        down: tensor name of the down / A factor, [r, in] (or [r, in, kh, kw]).
        up: tensor name of the up / B factor, [out, r] (or [out, r, 1, 1]).
        alpha: tensor name of a scalar alpha stored beside the pair, or None.
        style: ``"diffusers-processor"``, ``"diffusers"``, ``"peft"``, ``"peft-embedding"`` or ``"kohya"``.
        magnitude: tensor name of a DoRA magnitude vector beside the pair, or None.
    """

    module: str
    down: str
    up: str
    alpha: str | None
    style: str
    magnitude: str | None = None

    @property
    def tensors(self) -> tuple[str, ...]:
        """The stored tensor names of this pair: up, down, then alpha and the DoRA magnitude when present."""
        return (self.up, self.down) + ((self.alpha,) if self.alpha else ()) + ((self.magnitude,) if self.magnitude else ())

    @property
    def kind(self) -> str:
        """The LayerInfo kind of this pair: ``"dora"``, ``"lora-embedding"`` or ``"lora"``."""
        if self.magnitude:
            return "dora"
        return "lora-embedding" if self.style == "peft-embedding" else "lora"


def parse_lora_key(name: str) -> tuple[str, str, str, str] | None:
    """Split a LoRA factor key into (style, module name, raw module prefix, "down" | "up" | "magnitude"); None otherwise.

    >>> parse_lora_key("unet.mid_block.attentions.0.transformer_blocks.0.attn1.processor.to_out_lora.up.weight")
    ('diffusers-processor', 'unet.mid_block.attentions.0.transformer_blocks.0.attn1.to_out.0', 'unet.mid_block.attentions.0.transformer_blocks.0.attn1.processor.to_out_lora', 'up')
    """
    for style, pattern in _KEY_PATTERNS:
        match = pattern.match(name)
        if match is None:
            continue
        raw = match.group("module")
        module = raw
        if style == "diffusers-processor":
            projection = match.group("proj")
            module = f"{raw}.{'to_out.0' if projection == 'to_out' else projection}"
            raw = f"{raw}.processor.{projection}_lora"
        elif style.startswith("peft") and module.startswith(_PEFT_PREFIX):
            module = module[len(_PEFT_PREFIX):]
        return style, module, raw, _PART[match.group("part")]
    return None


def find_lora_pairs(names: Iterable[str]) -> tuple[list[LoraPair], list[str], list[str]]:
    """Group tensor names into LoRA pairs.

    Returns:
        (pairs in order of first appearance, names that are not part of any LoRA pair or
        alpha, LoRA factor names whose partner is missing).
    """
    names = list(names)
    present = set(names)
    halves: dict[str, dict[str, str]] = {}  # module -> {"down": name, "up": name, "magnitude", "style", "raw"}
    for name in names:
        parsed = parse_lora_key(name)
        if parsed is None:
            continue
        style, module, raw, part = parsed
        entry = halves.setdefault(module, {"style": style, "raw": raw})
        entry[part] = name
        if part != "magnitude":
            entry["style"], entry["raw"] = style, raw
    pairs: list[LoraPair] = []
    used: set[str] = set()
    unpaired: list[str] = []
    for module, entry in halves.items():
        if "down" not in entry or "up" not in entry:
            unpaired.extend(entry.get(part) for part in ("down", "up", "magnitude") if part in entry)
            continue
        alpha = f"{entry['raw']}.alpha"
        pair = LoraPair(
            module=module,
            down=entry["down"],
            up=entry["up"],
            alpha=alpha if alpha in present else None,
            style=entry["style"],
            magnitude=entry.get("magnitude"),
        )
        pairs.append(pair)
        used.update(pair.tensors)
    unpaired_set = set(unpaired)
    others = [name for name in names if name not in used and name not in unpaired_set]
    return pairs, others, unpaired


def lora_matrix_shape(up_shape: tuple[int, ...], down_shape: tuple[int, ...], embedding: bool = False) -> tuple[int, int] | None:
    """Shape of the update: [out, in*k...] (or [vocab, dim] for an embedding pair); None when the shapes do not pair."""
    if len(up_shape) < 2 or len(down_shape) < 2:
        return None
    rank = down_shape[0]
    if up_shape[1] != rank or rank == 0 or any(size != 1 for size in up_shape[2:]):
        return None
    if embedding:
        return (down_shape[1], up_shape[0]) if len(up_shape) == len(down_shape) == 2 else None
    return up_shape[0], math.prod(down_shape[1:])


def metadata_alpha(metadata: Mapping[str, object]) -> float | None:
    """The file-wide LoRA alpha of a plain metadata entry (``lora_alpha``, ``network_alpha``, ``ss_network_alpha``), or None."""
    for key in ALPHA_METADATA_KEYS:
        alpha = _finite(metadata.get(key))
        if alpha is not None:
            return alpha
    return None


class LoraConfig(NamedTuple):
    """The fields of one LoRA config (PEFT's ``LoraConfig``) that decide the scale."""

    alpha: float | None = None
    use_rslora: bool = False
    alpha_pattern: tuple[tuple[str, float], ...] = ()  # (PEFT module regex, alpha), in the config's order
    use_dora: bool = False


class LoraScaling(NamedTuple):
    """How one file's LoRA updates are scaled (read by :func:`lora_scaling`; a tuple, so it hashes and serialises).

    Attributes:
        configs: (component prefix, config) pairs: prefix ``""`` applies to every module,
            ``"unet"`` to the modules named ``unet.…`` (a diffusers pipeline file).
        alpha: the plain metadata alpha (``lora_alpha``, ``network_alpha``, ``ss_network_alpha``).
        source: where ``configs`` came from (``"lora_adapter_metadata"``, ``"adapter_config.json"``), for messages.
    """

    configs: tuple[tuple[str, LoraConfig], ...] = ()
    alpha: float | None = None
    source: str = ""


def lora_scaling(metadata: Mapping[str, object]) -> LoraScaling:
    """The scaling of a file's LoRA pairs, from its metadata (and a zoo's ``peft_adapter_config`` entry).

    Raises:
        ZooError: a LoRA config is present but is not valid JSON (it is never guessed around).
    """
    for key, source in ((DIFFUSERS_CONFIG_KEY, "lora_adapter_metadata"), (PEFT_CONFIG_KEY, "adapter_config.json")):
        text = metadata.get(key)
        if text:
            return LoraScaling(_parse_configs(text, source), metadata_alpha(metadata), source)
    return LoraScaling((), metadata_alpha(metadata), "")


def peft_adapter_config(text: str) -> str | None:
    """The LoRA fields of a PEFT ``adapter_config.json`` (its text) as the JSON a record keeps; None if not a LoRA config."""
    try:
        config = json.loads(text)
    except json.JSONDecodeError:
        return None
    if not isinstance(config, dict) or "lora_alpha" not in config:
        return None
    fields = ("r", "lora_alpha", "use_rslora", "alpha_pattern", "rank_pattern", "use_dora", "peft_type")
    return json.dumps({key: config[key] for key in fields if key in config}, sort_keys=True)


def lora_scale(scaling: LoraScaling | None, module: str, rank: int, stored_alpha: float | None = None) -> float:
    """The factor s of X = s B A for one LoRA layer: alpha / r, alpha / sqrt(r) for rsLoRA, 1 without an alpha.

    The one place probex computes a LoRA scale: merged matrices and factor banks both use it.

    Args:
        scaling: the file's scaling (:func:`lora_scaling`); None for a file without any.
        module: the layer's module name (matched against per-module alphas).
        rank: r, from the factors' shapes.
        stored_alpha: a scalar alpha tensor stored beside the pair (kohya); it wins.
    """
    scaling = scaling or LoraScaling()
    config = _config_for(scaling, module)
    alpha = stored_alpha
    if alpha is None and config is not None:
        prefix = next((prefix for prefix, candidate in scaling.configs if candidate is config), "")
        relative = module[len(prefix) + 1:] if prefix else module
        alpha = _pattern_alpha(config.alpha_pattern, relative)
        alpha = config.alpha if alpha is None else alpha
    if alpha is None:
        alpha = scaling.alpha
    if alpha is None:
        return 1.0
    rslora = config is not None and config.use_rslora
    return float(alpha) / (math.sqrt(rank) if rslora else rank)


def lora_factors(
    info: "LayerInfo", tensors: Mapping[str, torch.Tensor], scaling: LoraScaling | None = None, *, source: str = ""
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(B [d_W, r], A [r, d_H], s) of one LoRA layer, in float32, with X = s B A of the layer's catalog shape.

    For an embedding pair B and A are the stored factors transposed (X = s (B_stored A_stored)^T).

    Raises:
        ZooError: a DoRA layer (see the module docstring), or factors that do not pair.
    """
    label = f"{source}: layer '{info.name}'" if source else f"layer '{info.name}'"
    config = _config_for(scaling or LoraScaling(), info.name)
    if info.kind == "dora" or (config is not None and config.use_dora):
        raise ZooError(
            f"{label} is a DoRA layer: its update m (W0 + sBA) / ||W0 + sBA|| needs the base model's "
            "weight W0, which the adapter file does not hold, so probex cannot form its matrix. Merge the "
            "adapter into its base model and read the merged weights, or use plain LoRA adapters"
        )
    up, down = tensors[info.tensors[0]], tensors[info.tensors[1]]
    embedding = info.kind == "lora-embedding"
    shape = lora_matrix_shape(tuple(up.shape), tuple(down.shape), embedding)
    if shape is None:
        raise ZooError(
            f"{label}: LoRA factors do not fit together: up {tuple(up.shape)} and down "
            f"{tuple(down.shape)} (expected up [out, r] and down [r, in])"
        )
    rank = down.shape[0]
    stored = tensors[info.tensors[2]] if len(info.tensors) > 2 else None
    stored_alpha = float(stored.float().reshape(-1)[0]) if stored is not None else None
    B = up.reshape(up.shape[0], rank).float()
    A = down.reshape(rank, -1).float()
    if embedding:
        B, A = A.t().contiguous(), B.t().contiguous()
    return B, A, lora_scale(scaling, info.name, rank, stored_alpha)


def merge_lora(
    up: torch.Tensor, down: torch.Tensor, alpha: float | torch.Tensor | None = None, *, name: str = "LoRA layer"
) -> torch.Tensor:
    """Merge one LoRA pair: ``(alpha / r) * up @ down`` in float32 (scale 1 without an alpha).

    Args:
        up: B factor, [out, r] (or [out, r, 1, 1]).
        down: A factor, [r, in] (or [r, in, kh, kw]).
        alpha: the stored alpha (a number or a scalar tensor); None means scale 1.
        name: the layer, for error messages.
    """
    shape = lora_matrix_shape(tuple(up.shape), tuple(down.shape))
    if shape is None:
        raise ZooError(
            f"{name}: LoRA factors do not fit together: up {tuple(up.shape)} and down "
            f"{tuple(down.shape)} (expected up [out, r] and down [r, in])"
        )
    rank = down.shape[0]
    alpha_value = float(alpha.float().reshape(-1)[0]) if isinstance(alpha, torch.Tensor) else alpha
    scale = lora_scale(None, name, rank, alpha_value)
    return scale * (up.reshape(shape[0], rank).float() @ down.reshape(rank, -1).float())


# --- reading LoRA configs -----------------------------------------------------------------------


def _finite(value: object) -> float | None:
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _flag(value: object) -> bool:
    return value is True or (isinstance(value, str) and value.strip().lower() in ("true", "1"))


def _parse_configs(text: object, source: str) -> tuple[tuple[str, LoraConfig], ...]:
    """(prefix, config) pairs of a LoraConfig JSON, plain or with diffusers' component prefixes (``unet.lora_alpha``)."""
    try:
        raw = json.loads(text) if isinstance(text, str) else text
    except json.JSONDecodeError as error:
        raise ZooError(f"{source}: the LoRA config is not valid JSON ({error}); cannot tell the LoRA scale") from None
    if not isinstance(raw, dict):
        raise ZooError(f"{source}: the LoRA config is a {type(raw).__name__}, not a JSON object; cannot tell the LoRA scale")
    groups: dict[str, dict] = {}
    for key, value in raw.items():
        prefix, _, field = str(key).rpartition(".")
        groups.setdefault(prefix, {})[field] = value
    configs = []
    for prefix, fields in groups.items():
        if not {"lora_alpha", "r", "use_rslora", "alpha_pattern", "use_dora"} & set(fields):
            continue
        pattern = fields.get("alpha_pattern") or {}
        alpha_pattern = tuple(
            (str(key), float(value)) for key, value in (pattern.items() if isinstance(pattern, dict) else ())
            if _finite(value) is not None
        )
        configs.append((prefix, LoraConfig(_finite(fields.get("lora_alpha")), _flag(fields.get("use_rslora")),
                                           alpha_pattern, _flag(fields.get("use_dora")))))
    return tuple(sorted(configs, key=lambda item: -len(item[0])))  # longest prefix first


def _config_for(scaling: LoraScaling, module: str) -> LoraConfig | None:
    for prefix, config in scaling.configs:  # longest prefix first
        if prefix == "" or module == prefix or module.startswith(prefix + "."):
            return config
    return None


def _pattern_alpha(alpha_pattern: tuple[tuple[str, float], ...], module: str) -> float | None:
    """PEFT's per-module alpha: a key equal to the module name or matching its tail (``(.*\\.)?KEY$``)."""
    for key, alpha in alpha_pattern:
        if key == module:
            return alpha
    for key, alpha in alpha_pattern:
        try:
            if re.fullmatch(rf"(?:.*\.)?(?:{key})", module):
                return alpha
        except re.error:
            continue
    return None
