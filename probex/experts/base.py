"""The shared part of every expert: the estimator contract, the registry, saving and loading.

Experts are scikit-learn estimators (:class:`probex.estimator.Estimator`): hyperparameters are
stored unchanged by ``__init__``, checked at the start of ``fit``, and ``clone``,
``get_params`` and ``set_params`` work as in scikit-learn. Every expert class registers
itself under its class name when it is defined, so ``load_expert`` can rebuild any of them,
a user's own subclass included (define or import it before loading).

An expert is saved as a folder holding ``config.json`` (its class, parameters, layer names,
metadata and JSON-ready fitted state) and ``model.safetensors`` (its tensors)::

    expert.save("experts/tree-A"); load_expert("experts/tree-A")
"""

from __future__ import annotations

import importlib
import json
import pkgutil
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Optional

import torch
from safetensors.torch import load_file, save_file

from probex import __version__
from probex.errors import ProbeXError
from probex.estimator import Estimator, Rule, integer, real
from probex.experts.inputs import LayerInput, layer_names_of
from probex.experts.training import resolve_device
from probex.storage import atomic_directory, atomic_write_json, holds_only, json_field, open_regular, read_regular_bytes

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT = "probex-expert"

#: class name -> expert class, filled by ``BaseExpert.__init_subclass__`` as classes are defined
EXPERT_CLASSES: dict[str, type["BaseExpert"]] = {}


def _is_device(value: Any) -> bool:
    try:
        resolve_device(value)
    except (ValueError, RuntimeError, TypeError):
        return False
    return True


#: the hyperparameters of every expert trained by ``probex.experts.training.train_network``
TRAINING_RULES: dict[str, Rule] = {
    "epochs": integer(low=1),
    "lr": real(low=0, low_open=True),
    "weight_decay": real(low=0),
    "batch_size": integer(low=1),
    "patience": integer(low=1, optional=True),
    "device": Rule("'auto', 'cpu', or 'cuda' / 'cuda:N' where CUDA is present", _is_device),
    "seed": integer(low=0),
}


class BaseExpert(Estimator, ABC):
    """The estimator contract, the registry and save/load shared by every expert."""

    _fit_hint = "call fit(X, y) first, or load a saved expert with load_expert"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__name__.startswith("_"):  # shared machinery, not an expert one can save
            return
        known = EXPERT_CLASSES.get(cls.__name__)
        if known is not None and (known.__module__, known.__qualname__) != (cls.__module__, cls.__qualname__):
            raise ProbeXError(
                f"an expert class named {cls.__name__} exists already ({known.__module__}); saved experts "
                "are found by class name, so give yours another name"
            )
        EXPERT_CLASSES[cls.__name__] = cls  # a class defined again (a re-run notebook cell) replaces itself

    @classmethod
    def _from_saved(cls, params: dict[str, Any]) -> "BaseExpert":
        """An unfitted expert with the parameters of a saved config (a class may translate older names)."""
        return cls(**params)

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
            "params": self.get_params(deep=False),
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


def _import_builtin_experts() -> None:
    """Import every module of probex.experts, so that each built-in expert class is registered."""
    import probex.experts

    for module in pkgutil.iter_modules(probex.experts.__path__):
        importlib.import_module(f"probex.experts.{module.name}")


def load_expert(directory: str | Path, device: Optional[str] = None) -> BaseExpert:
    """Load an expert written by ``expert.save(directory)``; ``device`` overrides the saved one.

    The expert's class is found by its name among the registered ones: the built-in experts and
    any subclass of BaseExpert defined (or imported) before this call.
    """
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
    _import_builtin_experts()
    expert_class = EXPERT_CLASSES.get(config.get("class")) if isinstance(config.get("class"), str) else None
    if expert_class is None:
        raise ProbeXError(
            f"{config_path}: unknown expert class {config.get('class')!r}; known: {sorted(EXPERT_CLASSES)}. "
            "If it is your own subclass of BaseExpert, define or import it before loading"
        )
    try:
        expert = expert_class._from_saved(config["params"])
        if device is not None and "device" in expert.get_params():
            expert.set_params(device=device)
        expert._check_params()
        open_regular(directory / WEIGHTS_FILE).close()  # a FIFO or a device would block the loader
        tensors = {k: v.float() if v.dtype == torch.float16 else v for k, v in load_file(str(directory / WEIGHTS_FILE)).items()}
        expert._restore(config["state"], tensors)
    except (KeyError, TypeError, OSError, _safetensors_error()) as error:
        raise ProbeXError(f"{directory}: a damaged saved expert ({type(error).__name__}: {error}); save it again") from None
    expert.layers_ = config.get("layers")
    expert.metadata_ = dict(config.get("metadata") or {})
    return expert
