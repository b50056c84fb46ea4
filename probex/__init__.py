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
    "ProbeX": "probex.experts.nn",
    "ProbeXNetwork": "probex.experts.nn",
    "ProbeXClassifier": "probex.experts.classifier",
    "DenseExpert": "probex.experts.classifier",
    "load_expert": "probex.experts.base",
    "StatNNClassifier": "probex.experts.statnn",
    "StatNNNetworkClassifier": "probex.experts.statnn",
    "statnn_features": "probex.experts.statnn",
    "ModelZoo": "probex.zoo",
    "LayerBank": "probex.zoo",
    "ModelRecord": "probex.zoo",
    "LayerInfo": "probex.zoo",
    "download_modelj": "probex.zoo.hub",
    "download_repos": "probex.zoo.hub",
    "RemoteSafetensors": "probex.zoo.remote",
    "TreeRouter": "probex.trees.router",
    "MixtureOfExperts": "probex.experts.moe",
    "dendrogram_figure": "probex.figures",
    "load_text_encoder": "probex.language.text",
    "ProbeXAligner": "probex.experts.aligner",
    "DenseAligner": "probex.experts.aligner",
    "StatNNAligner": "probex.experts.aligner",
    "ModelIndex": "probex.language.search",
    "Hit": "probex.language.search",
    "build_atlas": "probex.language.atlas",
    "Atlas": "probex.language.atlas",
    "atlas_figure": "probex.figures",
    "weight_map_figure": "probex.figures",
    "layer_sweep_figure": "probex.figures",
    "training_curves_figure": "probex.figures",
    "image_grid_figure": "probex.figures",
    "sweep_layers": "probex.experiments.sweep",
    "set_threads": "probex.experts.training",
    "ProbeXError": "probex.errors",
    "ZooError": "probex.errors",
    "ParameterError": "probex.errors",
    "NotFittedError": "probex.estimator",
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
