"""LayerBank: one layer of many models, built once per zoo and cached on disk; splits are views of it.

Building reads only the chosen layer's bytes from each weight file (conv kernels flattened;
see :mod:`probex.zoo.catalog`) into one of two forms, in the file's dtype (float16 files stay
float16; every consumer computes in float32, chunk by chunk):

- a dense layer: X [N, d_W, d_H];
- a LoRA layer: its factors B [N, d_W, r], A [N, r, d_H] and the scale alpha / r of each
  model (:class:`~probex.zoo.factored.LoraFactors`; mixed ranks padded with zeros, exactly).
  Nothing merges them unless asked: ``bank.X`` does, and says so.

A zoo has one cached bank per layer: ``zoo.bank(layer, split="train")`` builds (or loads) the
bank of every model of the zoo that has the layer in that shape, and returns the view of the
split's models. Views and selections (``bank[mask]``, ``bank.select(...)``) share the stored
arrays: nothing is copied until a consumer reads rows. The cache and what it checks:
:mod:`probex.zoo.bank_cache`.

NaN or Inf in a model's layer: the model is left out of the bank and listed in
``bank.skipped`` with the reason (and logged). A value that only overflows when cast to
float16 raises ZooError instead (ask for float32).
"""

from __future__ import annotations

import difflib
import logging
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from probex.errors import ProbeXError, ZooError
from probex.zoo.factored import LoraFactors
from probex.zoo.records import LayerInfo, ModelRecord
from probex.zoo.stack import MatrixStack, as_stack

logger = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """Where banks are cached: ``$PROBEX_CACHE/banks``, else ``~/.cache/probex/banks``."""
    from probex.storage import cache_dir

    return cache_dir("banks")


class LayerBank:
    """One layer of N models with the models' ids, labels, trees and splits alongside.

    Experts, the router and the figures take it directly and read it chunk by chunk (through
    :attr:`stack`). Index it with a boolean mask, a list of positions or a slice, or
    :meth:`select` by split, tree or ids, to get a smaller bank: a view, no copy.

    Args:
        weights: X [N, d_W, d_H] (a tensor), LoraFactors [N], or a MatrixStack.
        records: the N models' records, aligned with the weights.
        layer: the layer name.
        info: the layer's catalog entry (shape, kind, source tensors), when known.
        skipped: (model id, reason) of models left out (NaN/Inf in this layer).
    """

    def __init__(
        self,
        weights: torch.Tensor | LoraFactors | MatrixStack,
        records: Sequence[ModelRecord],
        layer: str,
        info: LayerInfo | None = None,
        skipped: Iterable[tuple[str, str]] = (),
    ) -> None:
        stack = as_stack(weights, f"LayerBank '{layer}'")
        if len(stack) != len(records):
            raise ProbeXError(f"LayerBank '{layer}': weights of {len(stack)} models for {len(records)} records")
        self.stack = stack
        self.records = list(records)
        self.layer = layer
        self.info = info
        self.skipped = list(skipped)

    # -- what it holds -----------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.records)

    def __repr__(self) -> str:
        form = f", LoRA rank {self.rank}" if self.is_factored else ""
        return f"LayerBank(layer={self.layer!r}, models={len(self)}, shape={self.shape}{form}, dtype={self.dtype})"

    @property
    def is_factored(self) -> bool:
        """True for a LoRA layer kept as its factors (see :attr:`factors`)."""
        return self.stack.factored

    @property
    def rank(self) -> int | None:
        """The (padded) LoRA rank of a factored bank; None for a dense one."""
        return self.stack.storage.rank if self.is_factored else None

    @property
    def X(self) -> torch.Tensor:
        """The matrices [N, d_W, d_H]. For a LoRA bank this merges the factors: it materialises
        N d_W d_H float32 values (6.5 MB a model at 1280 x 1280). Consumers of probex read the
        factors instead; ask for ``X`` only for a few models (``bank[:8].X``)."""
        return self.stack.merged() if self.is_factored else self.stack.stored()

    @property
    def factors(self) -> LoraFactors:
        """The LoRA factors of its models (B [N, d_W, r], A [N, r, d_H], scale [N]) in the stored dtype."""
        if not self.is_factored:
            raise ProbeXError(f"bank '{self.layer}' is a dense layer ({self.info.kind if self.info else 'not LoRA'}); read bank.X")
        return self.stack.stored()

    @property
    def ids(self) -> list[str]:
        return [record.id for record in self.records]

    @property
    def labels(self) -> list[list[str]]:
        """Each model's class names."""
        return [list(record.labels) for record in self.records]

    @property
    def trees(self) -> list[str | None]:
        return [record.tree for record in self.records]

    @property
    def splits(self) -> list[str | None]:
        return [record.split for record in self.records]

    @property
    def shape(self) -> tuple[int, int]:
        """The layer's matrix shape (d_W, d_H); ``len(bank)`` is N."""
        return self.stack.shape[1], self.stack.shape[2]

    @property
    def dtype(self) -> torch.dtype:
        """The stored dtype (the file's, unless another was asked for)."""
        return self.stack.dtype

    @property
    def label_names(self) -> list[str]:
        """Every class name in the bank, sorted."""
        return sorted({label for record in self.records for label in record.labels})

    def label_matrix(self, classes: Sequence[str] | None = None) -> tuple[torch.Tensor, list[str]]:
        """Multi-label targets: Y [N, C] float32 with Y[i, c] = 1 when model i was trained on classes[c].

        Args:
            classes: the class order (default: :attr:`label_names`). Labels not in it are ignored.

        Returns:
            (Y, classes).
        """
        classes = list(self.label_names if classes is None else classes)
        column = {name: index for index, name in enumerate(classes)}
        Y = torch.zeros(len(self), len(classes), dtype=torch.float32)
        for row, record in enumerate(self.records):
            for label in record.labels:
                if label in column:
                    Y[row, column[label]] = 1.0
        return Y, classes

    # -- smaller banks (views) ---------------------------------------------------------------

    def __getitem__(self, index: Any) -> "LayerBank":
        if isinstance(index, slice):
            positions = list(range(len(self)))[index]
        elif isinstance(index, (int, np.integer)) and not isinstance(index, bool):
            raise TypeError("bank[i] would drop the model axis; use bank[[i]] for a bank of one model, or bank.X[i] for its matrix")
        else:
            positions = _positions(index, len(self))
        return LayerBank(self.stack.view(np.asarray(positions, dtype=np.int64)), [self.records[i] for i in positions],
                         self.layer, self.info, self.skipped)

    def select(
        self,
        split: str | Iterable[str] | None = None,
        tree: str | Iterable[str] | None = None,
        ids: Iterable[str] | None = None,
    ) -> "LayerBank":
        """The models of ``split`` and ``tree`` (a name or a list) and, if given, ``ids`` (in that order)."""
        keep = list(range(len(self)))
        if split is not None:
            splits = {split} if isinstance(split, str) else set(split)
            keep = [i for i in keep if self.records[i].split in splits]
        if tree is not None:
            trees = {tree} if isinstance(tree, str) else set(tree)
            keep = [i for i in keep if self.records[i].tree in trees]
        if ids is not None:
            ids = [ids] if isinstance(ids, str) else list(ids)
            position = {self.records[i].id: i for i in keep}
            present = {record.id for record in self.records}
            missing = [model_id for model_id in ids if model_id not in present]
            if missing:
                close = difflib.get_close_matches(missing[0], self.ids, n=5, cutoff=0.5)
                raise ZooError(f"bank '{self.layer}': no model {missing[0]!r}" + (f"; closest: {', '.join(close)}" if close else ""))
            keep = [position[model_id] for model_id in ids if model_id in position]
        return self[keep]


def _positions(index: Any, n: int) -> list[int]:
    array = index.cpu().numpy() if isinstance(index, torch.Tensor) else np.asarray(index)
    if array.dtype == bool:
        if array.shape != (n,):
            raise IndexError(f"boolean mask of shape {array.shape} for a bank of {n} models")
        return [int(i) for i in np.flatnonzero(array)]
    if array.size == 0:
        return []
    if not np.issubdtype(array.dtype, np.integer) or array.ndim != 1:
        raise TypeError("index a LayerBank with a boolean mask, a list of positions or a slice")
    positions = [int(i) + n if i < 0 else int(i) for i in array]
    if any(not 0 <= i < n for i in positions):
        raise IndexError(f"position out of range for a bank of {n} models")
    return positions
