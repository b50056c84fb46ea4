"""Checking what users hand to the experts: weight tensors, layer banks and label sets.

An expert's input is one layer per model, X: [N, d_W, d_H], given as a torch tensor, a numpy
array, LoRA factors (:class:`~probex.zoo.factored.LoraFactors`) or a LayerBank (dense or
factored); several layers at once are a list of those (the paper's multi-layer form). Each
becomes a :class:`~probex.zoo.stack.MatrixStack`, a view that experts read batch by batch in
float32 (a memory-mapped bank is never copied whole). Every mistake becomes a ValueError that
says what was expected and what was given.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from probex.errors import ProbeXError
from probex.zoo.stack import MatrixStack, as_stack

LayerInput = Any  # torch.Tensor | np.ndarray | LoraFactors | LayerBank, or a list of those


def _as_stack(item: Any, position: str) -> MatrixStack:
    stack = as_stack(item, position)
    dtype = stack.dtype
    if not (dtype.is_floating_point or dtype in (torch.int8, torch.int16, torch.int32, torch.int64)):
        raise ProbeXError(f"{position}: expected real-valued weights; got dtype {dtype}")
    if len(stack) == 0:
        raise ProbeXError(f"{position}: got no models (N = 0)")
    return stack


def _model_names(item: Any, rows: list[int]) -> str:
    ids = getattr(item, "ids", None)
    names = [str(ids[r]) for r in rows[:5]] if ids is not None else [f"#{r}" for r in rows[:5]]
    more = f" and {len(rows) - 5} more" if len(rows) > 5 else ""
    return ", ".join(names) + more


def check_finite(stack: MatrixStack, item: Any = None, position: str = "X") -> None:
    """Raise ValueError naming the models whose weights hold NaN or Inf (LoRA: in their factors), read in chunks."""
    bad: list[int] = []
    step = max(1, stack.chunk_rows()) if not stack.factored else 4096
    for start in range(0, len(stack), step):
        block = stack.take(slice(start, start + step))
        if stack.factored:
            finite = (torch.isfinite(block.B).flatten(1).all(dim=1) & torch.isfinite(block.A).flatten(1).all(dim=1)
                      & torch.isfinite(block.scale))
        else:
            finite = torch.isfinite(block.reshape(block.shape[0], -1)).all(dim=1)
        bad.extend(int(i) + start for i in torch.nonzero(~finite).flatten())
    if bad:
        raise ProbeXError(
            f"{position}: NaN or Inf in the weights of {len(bad)} model(s): "
            f"{_model_names(item, bad)}; remove or repair them before fitting"
        )


def as_layers(X: LayerInput, name: str = "X") -> list[MatrixStack]:
    """Normalise expert input to a list of MatrixStacks [N, d_W, d_H], one per layer, checked.

    Accepts one tensor / array / LoraFactors / LayerBank, or a list or tuple of them (one per
    layer). All layers must hold the same number of models; weights must be finite. A
    LayerBank's own rows are finite by construction (its build leaves out non-finite models),
    so it is not read again here.
    """
    items = list(X) if isinstance(X, (list, tuple)) else [X]
    if not items:
        raise ProbeXError(f"{name}: expected at least one layer; got an empty list")
    layers = []
    for index, item in enumerate(items):
        position = name if len(items) == 1 else f"{name}[{index}]"
        stack = _as_stack(item, position)
        if not _built_bank(item):
            check_finite(stack, item, position)
        layers.append(stack)
    counts = {len(stack) for stack in layers}
    if len(counts) > 1:
        raise ProbeXError(f"{name}: every layer must hold the same models; got model counts {[len(s) for s in layers]}")
    return layers


def _built_bank(item: Any) -> bool:
    """A LayerBank that build_bank made (finite rows only), as opposed to one built by hand from a tensor."""
    return getattr(item, "info", None) is not None and hasattr(item, "skipped")


def check_layer_shapes(layers: Sequence[MatrixStack], expected: Sequence[tuple[int, int]], name: str = "X") -> None:
    """Raise ValueError unless the layers have the per-model shapes seen in fit."""
    if len(layers) != len(expected):
        raise ProbeXError(f"{name}: the expert was fitted on {len(expected)} layer(s); got {len(layers)}")
    for index, (stack, shape) in enumerate(zip(layers, expected)):
        given = tuple(stack.shape[1:])
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
