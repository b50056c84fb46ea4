"""Model zoos: populations of models on disk, read safely, one layer at a time.

    from probex.zoo import ModelZoo
    zoo = ModelZoo.open("path/to/zoo")          # Model-J layouts or a probex manifest
    bank = zoo.bank(zoo.catalog()[0].name, split="train")
    bank.shape, len(bank)                        # (d_W, d_H), N; a LoRA layer: bank.factors (B, A, scale)

Modules: :mod:`~probex.zoo.safefile` (safe safetensors reading), :mod:`~probex.zoo.layouts`
(the three layouts), :mod:`~probex.zoo.manifest` (our own format, reading and writing),
:mod:`~probex.zoo.lora` (LoRA key styles and merging), :mod:`~probex.zoo.catalog` (which
tensors are layers and their 2-D shapes), :mod:`~probex.zoo.zoo` (ModelZoo),
:mod:`~probex.zoo.bank` (LayerBank), :mod:`~probex.zoo.bank_build` and :mod:`~probex.zoo.bank_cache`
(building and caching it), :mod:`~probex.zoo.factored` (LoRA factors), :mod:`~probex.zoo.stack`
(the views consumers read, the memory budget), :mod:`~probex.zoo.classnames`.
"""

from __future__ import annotations

from probex.zoo.bank import LayerBank
from probex.zoo.factored import LoraFactors
from probex.zoo.records import ALIGNED, CLASSIFIER, FOREST, LayerInfo, ModelRecord, TreeRole
from probex.zoo.stack import MatrixStack
from probex.zoo.zoo import ModelZoo

__all__ = ["ALIGNED", "CLASSIFIER", "FOREST", "LayerBank", "LayerInfo", "LoraFactors", "MatrixStack", "ModelRecord",
           "ModelZoo", "TreeRole"]
