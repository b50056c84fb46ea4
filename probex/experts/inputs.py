"""Checking what users hand to the experts: weight tensors, layer banks and label sets.

An expert's input is one layer per model, X: [N, d_W, d_H], given as a torch tensor, a numpy
array or a LayerBank (anything with a ``.X`` attribute holding such a tensor); several layers at
once are a list of those (the paper's multi-layer form). Every mistake becomes a ValueError that
says what was expected and what was given.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from probex.errors import ProbeXError

LayerInput = Any  # torch.Tensor | np.ndarray | LayerBank, or a list of those


def _as_tensor(item: Any, position: str) -> torch.Tensor:
    value = getattr(item, "X", item)
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(np.asarray(value))
    if not isinstance(value, torch.Tensor):
        raise ProbeXError(
            f"{position}: expected a tensor of shape [N, d_W, d_H], a numpy array or a LayerBank; "
            f"got {type(item).__name__}"
        )
    if value.ndim != 3:
        raise ProbeXError(
            f"{position}: expected shape [N, d_W, d_H] (one weight matrix per model); "
            f"got a tensor of shape {tuple(value.shape)}"
        )
    if not (value.is_floating_point() or value.dtype in (torch.int8, torch.int16, torch.int32, torch.int64)):
        raise ProbeXError(f"{position}: expected real-valued weights; got dtype {value.dtype}")
    if value.shape[0] == 0:
        raise ProbeXError(f"{position}: got no models (N = 0)")
    return value


def _model_names(item: Any, rows: list[int]) -> str:
    ids = getattr(item, "ids", None)
    names = [str(ids[r]) for r in rows[:5]] if ids is not None else [f"#{r}" for r in rows[:5]]
    more = f" and {len(rows) - 5} more" if len(rows) > 5 else ""
    return ", ".join(names) + more


def check_finite(tensor: torch.Tensor, item: Any = None, position: str = "X", chunk: int = 4096) -> None:
    """Raise ValueError naming the models whose weights hold NaN or Inf."""
    bad: list[int] = []
    for start in range(0, tensor.shape[0], chunk):
        block = tensor[start : start + chunk]
        finite = torch.isfinite(block.reshape(block.shape[0], -1)).all(dim=1)
        bad.extend(int(i) + start for i in torch.nonzero(~finite).flatten())
    if bad:
        raise ProbeXError(
            f"{position}: NaN or Inf in the weights of {len(bad)} model(s): "
            f"{_model_names(item, bad)}; remove or repair them before fitting"
        )


def as_layers(X: LayerInput, name: str = "X") -> list[torch.Tensor]:
    """Normalise expert input to a list of tensors [N, d_W, d_H], one per layer, checked.

    Accepts one tensor / array / LayerBank, or a list or tuple of them (one per layer). All
    layers must hold the same number of models; weights must be finite.
    """
    items = list(X) if isinstance(X, (list, tuple)) else [X]
    if not items:
        raise ProbeXError(f"{name}: expected at least one layer; got an empty list")
    layers = []
    for index, item in enumerate(items):
        position = name if len(items) == 1 else f"{name}[{index}]"
        tensor = _as_tensor(item, position)
        check_finite(tensor, item, position)
        layers.append(tensor)
    counts = {t.shape[0] for t in layers}
    if len(counts) > 1:
        raise ProbeXError(f"{name}: every layer must hold the same models; got model counts {[t.shape[0] for t in layers]}")
    return layers


def check_layer_shapes(layers: Sequence[torch.Tensor], expected: Sequence[tuple[int, int]], name: str = "X") -> None:
    """Raise ValueError unless the layers have the per-model shapes seen in fit."""
    if len(layers) != len(expected):
        raise ProbeXError(f"{name}: the expert was fitted on {len(expected)} layer(s); got {len(layers)}")
    for index, (tensor, shape) in enumerate(zip(layers, expected)):
        given = tuple(tensor.shape[1:])
        if given != tuple(shape):
            where = name if len(expected) == 1 else f"{name}[{index}]"
            raise ProbeXError(f"{where}: expected per-model shape {tuple(shape)} as in fit; got {given}")


def labels_of(X: LayerInput) -> Any:
    """The labels a LayerBank carries (first layer of a list), or None."""
    first = X[0] if isinstance(X, (list, tuple)) and X else X
    return getattr(first, "labels", None)


def layer_names_of(X: LayerInput) -> list[str] | None:
    """The layer names of LayerBank input (one per layer), or None when X is raw tensors."""
    items = list(X) if isinstance(X, (list, tuple)) else [X]
    names = [getattr(item, "layer", None) for item in items]
    return [str(name) for name in names] if all(isinstance(name, str) for name in names) else None
