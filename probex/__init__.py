"""probex: learning on model weights with tree experts (ProbeX, CVPR 2025).

The public names are imported lazily, so ``import probex`` (and the CLI) start fast and only
load torch, scikit-learn or the Hub client when a name that needs them is first used::

    from probex import ProbeX, ProbeXClassifier, DenseExpert, ModelZoo, LayerBank
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_PUBLIC = {
    "ProbeX": "probex.nn",
    "ProbeXNetwork": "probex.nn",
    "ProbeXClassifier": "probex.experts",
    "DenseExpert": "probex.experts",
    "load_expert": "probex.experts",
    "StatNNClassifier": "probex.statnn",
    "statnn_features": "probex.statnn",
    "ModelZoo": "probex.zoo",
    "LayerBank": "probex.zoo",
    "ModelRecord": "probex.zoo",
    "LayerInfo": "probex.zoo",
    "download_modelj": "probex.zoo.hub",
    "download_repos": "probex.zoo.hub",
    "RemoteSafetensors": "probex.zoo.remote",
    "TreeRouter": "probex.router",
    "MixtureOfExperts": "probex.moe",
    "dendrogram_figure": "probex.figures",
    "load_text_encoder": "probex.text",
    "ProbeXAligner": "probex.aligner",
    "DenseAligner": "probex.aligner",
    "StatNNAligner": "probex.aligner",
    "ModelIndex": "probex.search",
    "Hit": "probex.search",
    "build_atlas": "probex.atlas",
    "Atlas": "probex.atlas",
    "atlas_figure": "probex.figures",
    "weight_map_figure": "probex.figures",
    "layer_sweep_figure": "probex.figures",
    "training_curves_figure": "probex.figures",
    "image_grid_figure": "probex.figures",
    "sweep_layers": "probex.sweep",
    "set_threads": "probex.training",
    "ProbeXError": "probex.errors",
    "ZooError": "probex.errors",
}

__all__ = sorted(_PUBLIC) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'probex' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
