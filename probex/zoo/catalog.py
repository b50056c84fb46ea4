"""The layer catalog: which stored tensors are usable weight layers, and the 2-D matrix each becomes.

ProbeX reads one matrix X of shape [d_W, d_H] per model. Every floating-point tensor of a
checkpoint with at least one value is a candidate layer, presented as:

- 2-D [out, in]: as stored (kind ``"linear"``);
- 1-D [d] (biases, norms): a column [d, 1] (kind ``"vector"``);
- 3-D or more, e.g. a conv kernel [out, in, kh, kw]: flattened with the output channels first,
  [out, in*kh*kw] (kind ``"conv"``); leading singleton axes are dropped first, so a ViT
  ``pos_embed`` [1, 197, 768] becomes [197, 768] (kind ``"embedding"``);
- except in Model-J ResNet checkpoints, which are read as the official loader reads them: a
  kernel whose squeezed shape is 4-D becomes ``W.squeeze().reshape(-1, out)``, a raw reshape to
  [in*kh*kw, out] (kind ``"conv-modelj"``; see :mod:`probex.zoo.modelj_layers`). Pass
  ``conv_layout="out-first"`` or ``"modelj"`` to choose the layout explicitly;
- a LoRA pair (see :mod:`probex.zoo.lora`): one layer named by its module, X = s B A of shape
  [out, in] (kind ``"lora"``; ``"lora-embedding"`` for PEFT embedding pairs, [vocab, dim]);
  its factors, alpha and DoRA magnitude are not listed on their own. A DoRA pair is listed
  (kind ``"dora"``) but reading it raises ZooError: its matrix needs the base model.

Integer and boolean tensors (``position_ids``, ``num_batches_tracked``) and scalars are not
layers. The catalog depends only on tensor names, dtypes and shapes, so models of one
architecture share one cached catalog.
"""

from __future__ import annotations

import hashlib
import logging
import math
from functools import lru_cache
from typing import Mapping

import torch

from probex.errors import ZooError
from probex.zoo.limits import check_layer_bytes
from probex.zoo.lora import LORA_KINDS, LoraScaling, find_lora_pairs, lora_factors, lora_matrix_shape
from probex.zoo.modelj_layers import check_conv_layout, default_conv_layout
from probex.zoo.records import LayerInfo
from probex.zoo.safefile import SafetensorsHeader

logger = logging.getLogger(__name__)

#: safetensors dtype codes of floating-point tensors (the only ones that are weight layers).
FLOAT_DTYPES = frozenset({"F16", "BF16", "F32", "F64", "F8_E4M3", "F8_E5M2"})

# (name, dtype, shape) of every tensor, in file order: all the catalog depends on.
HeaderSignature = tuple[tuple[str, str, tuple[int, ...]], ...]


def header_signature(header: SafetensorsHeader) -> HeaderSignature:
    """The names, dtypes and shapes of a file's tensors, in file order."""
    return tuple((info.name, info.dtype, tuple(info.shape)) for info in header.tensors.values())


def layer_catalog(header: SafetensorsHeader, conv_layout: str | None = None) -> tuple[LayerInfo, ...]:
    """Every usable weight layer of one safetensors file, in file order (LoRA layers where their first factor is).

    Args:
        conv_layout: ``"out-first"`` or ``"modelj"`` (see the module docstring); None chooses
            by the file: ``"modelj"`` for Model-J ResNet checkpoints, ``"out-first"`` otherwise.
    """
    layout = check_conv_layout(conv_layout) if conv_layout is not None else default_conv_layout(header)
    return _catalog_of_signature(header_signature(header), layout)


def presented_shape(shape: tuple[int, ...], conv_layout: str = "out-first") -> tuple[tuple[int, int], str] | None:
    """The 2-D shape a stored tensor is presented as, and its kind; None if it is not a layer."""
    if len(shape) == 0 or math.prod(shape) == 0:
        return None
    if len(shape) == 1:
        return (shape[0], 1), "vector"
    if len(shape) == 2:
        return (shape[0], shape[1]), "linear"
    kernel = tuple(size for size in shape if size != 1)
    if conv_layout == "modelj" and len(kernel) == 4:
        # the official loader: W.squeeze().reshape(-1, out), a raw reshape of the stored values
        return (math.prod(kernel[1:]), kernel[0]), "conv-modelj"
    leading = 0  # leading singleton axes, counted (not sliced off one by one: linear in the shape's length)
    while leading < len(shape) - 2 and shape[leading] == 1:
        leading += 1
    squeezed = tuple(shape[leading:])
    if leading and len(squeezed) == 2:
        return (squeezed[0], squeezed[1]), "embedding"
    return (squeezed[0], math.prod(squeezed[1:])), "conv"


@lru_cache(maxsize=256)
def _catalog_of_signature(signature: HeaderSignature, conv_layout: str) -> tuple[LayerInfo, ...]:
    shapes = {name: shape for name, _, shape in signature}
    dtypes = {name: dtype for name, dtype, _ in signature}
    pairs, others, unpaired = find_lora_pairs(name for name, _, _ in signature)
    if unpaired:
        logger.warning("LoRA factors without their partner are not layers: %s", ", ".join(unpaired[:5]))
    # position in the file of each layer, so the catalog reads in model order
    position = {name: index for index, (name, _, _) in enumerate(signature)}
    entries: list[tuple[int, LayerInfo]] = []
    for pair in pairs:
        merged = lora_matrix_shape(shapes[pair.up], shapes[pair.down], embedding=pair.kind == "lora-embedding")
        if merged is None or dtypes[pair.up] not in FLOAT_DTYPES or dtypes[pair.down] not in FLOAT_DTYPES:
            logger.warning(
                "LoRA pair %s skipped: up %s and down %s do not form [out, r] @ [r, in]",
                pair.module, shapes[pair.up], shapes[pair.down],
            )
            continue
        tensors = pair.tensors
        if pair.alpha is not None and math.prod(shapes[pair.alpha]) != 1:
            logger.warning("LoRA alpha %s is not a scalar (%s); ignored", pair.alpha, shapes[pair.alpha])
            tensors = (pair.up, pair.down) + ((pair.magnitude,) if pair.magnitude else ())
        info = LayerInfo(
            name=pair.module,
            shape=merged,
            source_shape=tuple(shapes[name] for name in tensors),
            kind=pair.kind,
            tensors=tensors,
            dtype=dtypes[pair.up],
        )
        entries.append((min(position[pair.up], position[pair.down]), info))
    for name in others:
        if dtypes[name] not in FLOAT_DTYPES:
            continue
        presented = presented_shape(shapes[name], conv_layout)
        if presented is None:
            continue
        shape, kind = presented
        info = LayerInfo(name=name, shape=shape, source_shape=(shapes[name],), kind=kind, tensors=(name,), dtype=dtypes[name])
        entries.append((position[name], info))
    entries.sort(key=lambda entry: entry[0])
    return tuple(info for _, info in entries)


def layer_matrix(
    info: LayerInfo, tensors: Mapping[str, torch.Tensor], *, scaling: LoraScaling | None = None, source: str = ""
) -> torch.Tensor:
    """The float32 matrix [d_W, d_H] of one layer, from its stored tensors (as read from the file).

    A layer larger than ``PROBEX_MAX_LAYER_BYTES`` as float32 is refused (LimitError) before it
    is formed (:mod:`probex.zoo.limits`).

    Args:
        info: the layer, from :func:`layer_catalog`.
        tensors: at least the tensors named in ``info.tensors``.
        scaling: the file's LoRA scaling (:func:`probex.zoo.lora.lora_scaling` of its metadata);
            None: scale 1 unless the pair stores an alpha.
        source: the file, for error messages.
    """
    label = f"{source}: layer '{info.name}'" if source else f"layer '{info.name}'"
    check_layer_bytes(info.shape, label)  # before anything is allocated: a LoRA pair may declare any size
    if info.kind in LORA_KINDS:
        B, A, scale = lora_factors(info, tensors, scaling, source=source)
        matrix = scale * (B @ A)
    else:
        # a plain reshape of the stored values: [out, in*kh*kw] for "conv", and for "conv-modelj"
        # exactly the official W.squeeze().reshape(-1, out) (squeezing moves no value)
        matrix = tensors[info.tensors[0]].float().reshape(info.shape)
    if tuple(matrix.shape) != tuple(info.shape):
        raise ZooError(f"{label}: read shape {tuple(matrix.shape)}, catalog says {info.shape}")
    return matrix


def architecture_signature(catalog: tuple[LayerInfo, ...]) -> tuple[tuple[str, tuple[int, int]], ...]:
    """What makes two models the same architecture: their layer names and presented shapes."""
    return tuple((info.name, info.shape) for info in catalog)


def architecture_name(catalog: tuple[LayerInfo, ...]) -> str:
    """A short readable key for an architecture, e.g. ``"152 layers, 5.6M weights #3fa2c1"``."""
    digest = hashlib.sha1(repr(architecture_signature(catalog)).encode()).hexdigest()[:6]
    layers = f"{len(catalog)} layer{'' if len(catalog) == 1 else 's'}"
    return f"{layers}, {_count(sum(info.numel for info in catalog))} weights #{digest}"


def _count(number: int) -> str:
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if number >= size:
            return f"{number / size:.1f}{suffix}"
    return str(number)
