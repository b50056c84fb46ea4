"""The shared part of every expert: parameters, repr, and saving and loading (``load_expert``).

An expert is saved as a folder holding ``config.json`` (its class, parameters, layer names,
metadata and JSON-ready fitted state) and ``model.safetensors`` (its tensors)::

    expert.save("experts/tree-A"); load_expert("experts/tree-A")
"""

from __future__ import annotations

import inspect
import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Optional

import torch
from safetensors.torch import load_file, save_file

from probex import __version__
from probex.errors import ProbeXError
from probex.experts.inputs import LayerInput, layer_names_of
from probex.storage import atomic_directory, atomic_write_json, holds_only, json_field, open_regular, read_regular_bytes

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT = "probex-expert"


class BaseExpert(ABC):
    """Parameters, repr and save/load shared by every expert."""

    def get_params(self) -> dict[str, Any]:
        """The constructor's arguments as stored (scikit-learn's contract)."""
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {name: getattr(self, name) for name in names}

    def set_params(self, **params: Any) -> "BaseExpert":
        valid = self.get_params()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(f"{type(self).__name__} has no parameter {name!r}; parameters: {sorted(valid)}")
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        defaults = {p.name: p.default for p in inspect.signature(type(self).__init__).parameters.values()}
        changed = [f"{k}={v!r}" for k, v in self.get_params().items() if defaults.get(k) != v]
        return f"{type(self).__name__}({', '.join(changed)})"

    def _check_fitted(self) -> None:
        if not hasattr(self, "targets_"):
            raise ValueError(f"this {type(self).__name__} is not fitted yet: call fit(X, y) first")

    # -- persistence: subclasses provide their state as JSON and tensors -----------------
    @abstractmethod
    def _state(self) -> tuple[dict, dict[str, torch.Tensor]]:
        """The fitted state: JSON-ready values and named tensors."""

    @abstractmethod
    def _restore(self, state: dict, tensors: dict[str, torch.Tensor]) -> None:
        """Set the fitted state from what ``_state`` returned."""

    def _remember_layers(self, X: LayerInput) -> None:
        """Keep the layer names of LayerBank input as ``layers_`` (None for raw tensors)."""
        self.layers_ = layer_names_of(X)

    def save(self, directory: str | Path, metadata: Optional[dict] = None, half: bool = False) -> Path:
        """Write the fitted expert to ``directory`` (config.json + model.safetensors), atomically.

        The config keeps the layer names it was trained on (``layers_``, when fitted on
        LayerBanks) and ``metadata``, any JSON-ready facts to keep beside it (the tree, scores).
        ``half=True`` stores float tensors as float16 (half the size; loaded back as float32).
        """
        self._check_fitted()
        state, tensors = self._state()
        if half:
            tensors = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
        config = {
            "format": FORMAT,
            "probex_version": __version__,
            "class": type(self).__name__,
            "params": self.get_params(),
            "layers": getattr(self, "layers_", None),
            "metadata": dict(metadata or getattr(self, "metadata_", None) or {}),
            "state": state,
        }
        directory = Path(directory)
        with atomic_directory(directory, FORMAT, legacy=_saved_before_markers) as tmp:
            save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp / WEIGHTS_FILE))
            atomic_write_json(tmp / CONFIG_FILE, config)
        return directory


def _safetensors_error() -> type:
    """The exception safetensors raises for a malformed file."""
    from safetensors import SafetensorError

    return SafetensorError


def _saved_before_markers(folder: Path) -> bool:
    """An expert folder saved before probex marked its folders (it may be replaced like a marked one)."""
    return holds_only(folder, {CONFIG_FILE, WEIGHTS_FILE}) and json_field(folder / CONFIG_FILE, "format") == FORMAT


def _expert_classes() -> dict[str, type]:
    from probex.experts.aligner import DenseAligner, ProbeXAligner, StatNNAligner
    from probex.experts.classifier import DenseExpert, ProbeXClassifier
    from probex.experts.statnn import StatNNClassifier

    return {cls.__name__: cls for cls in (ProbeXClassifier, DenseExpert, StatNNClassifier, ProbeXAligner, DenseAligner, StatNNAligner)}


def load_expert(directory: str | Path, device: Optional[str] = None) -> BaseExpert:
    """Load an expert written by ``expert.save(directory)``; ``device`` overrides the saved one."""
    directory = Path(directory)
    config_path = directory / CONFIG_FILE
    if not config_path.is_file():
        raise ProbeXError(f"{directory}: not a saved expert (no {CONFIG_FILE})")
    try:
        config = json.loads(read_regular_bytes(config_path, 64 * 2**20, "expert config"))
    except (OSError, ValueError) as error:
        raise ProbeXError(f"{config_path}: not readable as an expert's config ({error})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ProbeXError(f"{config_path}: not a probex expert config (format {config.get('format') if isinstance(config, dict) else None!r})")
    classes = _expert_classes()
    if not isinstance(config.get("class"), str) or config["class"] not in classes:
        raise ProbeXError(f"{config_path}: unknown expert class {config.get('class')!r}; known: {sorted(classes)}")
    try:
        expert = classes[config["class"]](**config["params"])
        if device is not None:
            expert.device = device
        open_regular(directory / WEIGHTS_FILE).close()  # a FIFO or a device would block the loader
        tensors = {k: v.float() if v.dtype == torch.float16 else v for k, v in load_file(str(directory / WEIGHTS_FILE)).items()}
        expert._restore(config["state"], tensors)
    except (KeyError, TypeError, OSError, _safetensors_error()) as error:
        raise ProbeXError(f"{directory}: a damaged saved expert ({type(error).__name__}: {error}); save it again") from None
    expert.layers_ = config.get("layers")
    expert.metadata_ = dict(config.get("metadata") or {})
    return expert
