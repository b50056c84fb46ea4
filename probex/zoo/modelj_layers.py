"""Model-J checkpoints as the paper and its official code see them: which family a file is, how
its convolutions become matrices, and the paper's layer numbers.

**Families.** A Model-J checkpoint is recognised from its header alone, so every reader (the
catalog, banks, search, a layers-only download) agrees without being told:

- ``"vit"`` (Sup.ViT, DINO, MAE): Transformers ``vit.*`` tensors and the metadata key
  ``dataset_chosen_targets``;
- ``"resnet"``: Transformers ``resnet.*`` tensors and ``dataset_chosen_targets``;
- ``"sd-lora"`` (SD_200, SD_1k): diffusers ``….lora.down.weight`` / ``.lora.up.weight`` pairs
  and the metadata key ``imagenet_class_id``.

**Conv layout.** The official loader turns a ResNet kernel whose squeezed shape is 4-D (the 3x3
bottleneck convs and the 7x7 stem) into ``W.squeeze().reshape(-1, out)``: a raw reshape of the
stored [out, in, kh, kw] values into [in*kh*kw, out], not a transpose. Model-J ResNet files are
read that way by default (layout ``"modelj"``), so banks, sweeps and checkpoints match the
paper's; every other file keeps ``"out-first"`` ([out, in*kh*kw]). Either layout can be asked
for explicitly (``ModelZoo.bank(..., conv_layout="out-first")``). 1x1 convs are [out, in] in both.

**Paper layer numbers.** The paper and the official code name layers by their index in a sorted
list (its ``layer_names/*.csv``):

- ViT: every float tensor whose squeezed shape is 2-D (the linear weights and the position
  embedding; not the patch-embedding conv or the class token), sorted by name:
  0 = ``classifier.weight``, 59 = ``vit.encoder.layer.7.attention.output.dense.weight``,
  64 = ``vit.encoder.layer.8.attention.attention.value.weight`` (74 layers);
- ResNet: every float tensor whose squeezed shape has two or more axes (the convolutions and
  the classifier weight), sorted by name (105 layers for Model-J's ResNet);
- SD LoRA: the ``.lora.down.weight`` keys sorted by name, as ``safe_open(...).keys()`` lists
  them, each naming its module: 46 =
  ``unet.down_blocks.2.attentions.1.transformer_blocks.0.attn2.to_q`` (128 layers).

A layers-only download keeps a few tensors of each file; it records the paper numbers of those
it kept in the metadata key ``probex_paper_layers``, so the numbers survive.
"""

from __future__ import annotations

import json
import math
from typing import Mapping

from probex.errors import ProbeXError, ZooError
from probex.zoo.safefile import SafetensorsHeader

#: How conv kernels become matrices: ``"out-first"`` ([out, in*kh*kw], probex's default) or
#: ``"modelj"`` (the official Model-J loader's raw reshape to [in*kh*kw, out]).
CONV_LAYOUTS = ("out-first", "modelj")

#: Metadata key where a layers-only download records the paper numbers of the layers it kept.
PAPER_LAYERS_KEY = "probex_paper_layers"

_FLOAT_DTYPES = frozenset({"F16", "BF16", "F32", "F64", "F8_E4M3", "F8_E5M2"})
_LORA_DOWN = ".lora.down.weight"


def modelj_family(header: SafetensorsHeader) -> str | None:
    """``"vit"``, ``"resnet"`` or ``"sd-lora"`` for a Model-J checkpoint (see the module docstring); None otherwise."""
    names = header.tensors
    if "dataset_chosen_targets" in header.metadata:
        if any(name.startswith("resnet.") for name in names):
            return "resnet"
        if any(name.startswith("vit.") for name in names):
            return "vit"
    if "imagenet_class_id" in header.metadata and any(name.endswith(_LORA_DOWN) for name in names):
        return "sd-lora"
    return None


def default_conv_layout(header: SafetensorsHeader) -> str:
    """``"modelj"`` for Model-J ResNet checkpoints (as the official loader reads them), else ``"out-first"``."""
    return "modelj" if modelj_family(header) == "resnet" else "out-first"


def check_conv_layout(conv_layout: str) -> str:
    """``conv_layout`` itself when it is one of :data:`CONV_LAYOUTS`; ValueError naming them otherwise."""
    if conv_layout not in CONV_LAYOUTS:
        raise ProbeXError(f"conv_layout must be one of {', '.join(CONV_LAYOUTS)}; got {conv_layout!r}")
    return conv_layout


def paper_layer_names(header: SafetensorsHeader) -> list[str] | None:
    """The paper's layer list of a whole Model-J checkpoint (index i names layer i); None for other files."""
    family = modelj_family(header)
    if family == "sd-lora":
        return sorted(name[: -len(_LORA_DOWN)] for name in header.tensors if name.endswith(_LORA_DOWN))
    if family is None:
        return None
    wanted = (lambda axes: axes == 2) if family == "vit" else (lambda axes: axes >= 2)
    return sorted(
        info.name
        for info in header.tensors.values()
        if info.dtype in _FLOAT_DTYPES and math.prod(info.shape) > 0 and wanted(sum(size != 1 for size in info.shape))
    )


def paper_layer_numbers(header: SafetensorsHeader) -> dict[str, int]:
    """layer name -> the paper's number, for the layers this file holds; empty for files that are not Model-J's."""
    recorded = header.metadata.get(PAPER_LAYERS_KEY)
    if recorded:
        try:
            numbers = json.loads(recorded)
        except json.JSONDecodeError:
            numbers = None
        if isinstance(numbers, dict) and all(isinstance(value, int) for value in numbers.values()):
            return {str(name): int(value) for name, value in numbers.items()}
    names = paper_layer_names(header)
    return {name: index for index, name in enumerate(names)} if names is not None else {}


def is_layer_number(layer: object) -> bool:
    """True for an int or a string of digits ("59"): a paper layer number rather than a name."""
    if isinstance(layer, bool):
        return False
    return isinstance(layer, int) or (isinstance(layer, str) and layer.strip().isdigit())


def resolve_layer(header: SafetensorsHeader, layer: str | int, layer_names: Mapping[str, object] | None = None) -> str:
    """The layer name for ``layer``: a name is returned as is; a paper number ("59") is looked up.

    Args:
        header: a checkpoint of the zoo (its paper numbers are the zoo's).
        layer: a layer name, or the paper's number of a layer of a Model-J checkpoint.
        layer_names: the names a plain name is checked against first (a name made of digits
            wins over a number); default the file's tensor names.

    Raises:
        ZooError: a number for a file that is not a Model-J checkpoint, or a number the file
            does not hold (with the range it does hold).
    """
    if not is_layer_number(layer):
        return str(layer)
    text = str(layer).strip()
    if text in (layer_names if layer_names is not None else header.tensors):
        return text
    numbers = paper_layer_numbers(header)
    if not numbers:
        raise ZooError(
            f"{header.source}: layer {text!r}: layer numbers name layers only in Model-J checkpoints "
            "(the paper's layer lists); give a layer name instead (`probex layers ZOO` lists them)"
        )
    by_number = {number: name for name, number in numbers.items()}
    if int(text) not in by_number:
        held = sorted(by_number)
        span = f"{held[0]}..{held[-1]}" if held == list(range(held[0], held[-1] + 1)) else ", ".join(map(str, held[:12]))
        raise ZooError(f"{header.source}: no paper layer {int(text)}; this file holds paper layers {span}")
    return by_number[int(text)]
