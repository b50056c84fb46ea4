"""LoRA checkpoints: recognise the key styles found in the wild and merge each pair into one matrix.

A LoRA layer stores two factors of a weight update: ``down`` (also called ``A``) of shape
[r, in] and ``up`` (``B``) of shape [out, r]. ProbeX reads the merged update

    X = (alpha / r) * up @ down        shape [out, in]

where the scale applies only when the checkpoint stores an alpha (otherwise 1, which is what
the diffusers loaders do for files without one). Conv LoRA factors (kohya LoCon: down
[r, in, kh, kw], up [out, r, 1, 1]) merge the same way into [out, in*kh*kw].

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
kohya                  ``lora_unet_…_to_q.lora_down.weight`` / ``.lora_up.weight`` and a
                       scalar ``lora_unet_…_to_q.alpha`` -> ``lora_unet_…_to_q`` (kohya
                       flattens dots to underscores, which cannot be undone unambiguously)
=====================  ====================================================================

The alpha is, in order: a scalar tensor ``<module>.alpha`` beside the pair (kohya), else a
``lora_alpha`` / ``network_alpha`` / ``ss_network_alpha`` entry of the file's metadata, else
none (scale 1). The rank r is read from the factors' shapes.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Iterable, Mapping

import torch

from probex.errors import ZooError

#: Metadata keys that may carry one alpha for the whole file, in order of preference.
ALPHA_METADATA_KEYS = ("lora_alpha", "network_alpha", "ss_network_alpha")

_PEFT_PREFIX = "base_model.model."

# (style, pattern); each pattern names the module and which factor ("part") a key holds.
_KEY_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "diffusers-processor",
        re.compile(r"^(?P<module>.+)\.processor\.(?P<proj>[A-Za-z0-9_]+?)_lora\.(?P<part>down|up)\.weight$"),
    ),
    ("diffusers", re.compile(r"^(?P<module>.+)\.(?:lora|lora_linear_layer)\.(?P<part>down|up)\.weight$")),
    ("peft", re.compile(r"^(?P<module>.+)\.lora_(?P<part>A|B)(?:\.[A-Za-z0-9_-]+)?\.weight$")),
    ("kohya", re.compile(r"^(?P<module>.+)\.lora_(?P<part>down|up)\.weight$")),
)

_PART = {"down": "down", "A": "down", "up": "up", "B": "up"}


@dataclass(frozen=True)
class LoraPair:
    """The stored tensors of one LoRA layer.

    Attributes:
        module: the module the update applies to (the layer name probex presents).
        down: tensor name of the down / A factor, [r, in] (or [r, in, kh, kw]).
        up: tensor name of the up / B factor, [out, r] (or [out, r, 1, 1]).
        alpha: tensor name of a scalar alpha stored beside the pair, or None.
        style: ``"diffusers-processor"``, ``"diffusers"``, ``"peft"`` or ``"kohya"``.
    """

    module: str
    down: str
    up: str
    alpha: str | None
    style: str

    @property
    def tensors(self) -> tuple[str, ...]:
        """The stored tensor names of this pair: up, down, then alpha when present."""
        return (self.up, self.down) + ((self.alpha,) if self.alpha else ())


def parse_lora_key(name: str) -> tuple[str, str, str, str] | None:
    """Split a LoRA factor key into (style, module name, raw module prefix, "down" | "up"); None otherwise.

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
        elif style == "peft" and module.startswith(_PEFT_PREFIX):
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
    halves: dict[str, dict[str, str]] = {}  # module -> {"down": name, "up": name, "style", "raw"}
    for name in names:
        parsed = parse_lora_key(name)
        if parsed is None:
            continue
        style, module, raw, part = parsed
        entry = halves.setdefault(module, {"style": style, "raw": raw})
        entry[part] = name
    pairs: list[LoraPair] = []
    used: set[str] = set()
    unpaired: list[str] = []
    for module, entry in halves.items():
        if "down" not in entry or "up" not in entry:
            unpaired.extend(entry.get(part) for part in ("down", "up") if part in entry)
            continue
        alpha = f"{entry['raw']}.alpha"
        pair = LoraPair(
            module=module,
            down=entry["down"],
            up=entry["up"],
            alpha=alpha if alpha in present else None,
            style=entry["style"],
        )
        pairs.append(pair)
        used.update(pair.tensors)
    unpaired_set = set(unpaired)
    others = [name for name in names if name not in used and name not in unpaired_set]
    return pairs, others, unpaired


def lora_matrix_shape(up_shape: tuple[int, ...], down_shape: tuple[int, ...]) -> tuple[int, int] | None:
    """Shape [out, in*k...] of the merged matrix, or None when the two shapes do not form a pair."""
    if len(up_shape) < 2 or len(down_shape) < 2:
        return None
    rank = down_shape[0]
    if up_shape[1] != rank or rank == 0 or any(size != 1 for size in up_shape[2:]):
        return None
    return up_shape[0], math.prod(down_shape[1:])


def metadata_alpha(metadata: Mapping[str, object]) -> float | None:
    """The file-wide LoRA alpha stored in a checkpoint's metadata, or None."""
    for key in ALPHA_METADATA_KEYS:
        value = metadata.get(key)
        if value is None or value == "":
            continue
        try:
            alpha = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            continue
        if math.isfinite(alpha):
            return alpha
    return None


def lora_factors(
    up: torch.Tensor, down: torch.Tensor, alpha: float | torch.Tensor | None = None, *, name: str = "LoRA layer"
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """One LoRA pair as its factors: (B [out, r], A [r, in*k...], scale) with X = scale * B @ A.

    B and A keep their stored dtype; ``scale`` is alpha / r, or 1.0 when there is no alpha.

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
    scale = 1.0
    if alpha is not None:
        alpha_value = float(alpha.float().reshape(-1)[0]) if isinstance(alpha, torch.Tensor) else float(alpha)
        scale = alpha_value / rank
    return up.reshape(shape[0], rank), down.reshape(rank, -1), scale


def merge_lora(
    up: torch.Tensor, down: torch.Tensor, alpha: float | torch.Tensor | None = None, *, name: str = "LoRA layer"
) -> torch.Tensor:
    """Merge one LoRA pair: ``(alpha / r) * up @ down`` in float32 (see :func:`lora_factors`).

    Returns:
        float32 tensor [out, in] (or [out, in*kh*kw]).
    """
    B, A, scale = lora_factors(up, down, alpha, name=name)
    merged = B.float() @ A.float()
    return merged * scale if alpha is not None else merged
