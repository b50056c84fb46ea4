"""MatrixStack: N weight matrices as every consumer reads them, stored dense or as LoRA factors.

A stack is a *view*: the stored arrays (often a memory map of the bank cache, in the file's
dtype) and, optionally, the rows of them it holds. Selecting a split or a tree composes row
indices; nothing is copied until a consumer asks for rows, and then only those rows, in
float32 (``take``, ``merged``), in chunks of bounded size (``chunk_rows``).

The memory budget (``memory_budget``) is what consumers may hold at once in float32: a
training set larger than it is streamed batch by batch from the memory map instead of copied.
Default 2 GiB; set ``$PROBEX_MEMORY_BUDGET`` (bytes, or with a K/M/G suffix, e.g. ``6G``).
"""

from __future__ import annotations

import os
import re
import warnings
from typing import Any, Iterator

import numpy as np
import torch

from probex.errors import ProbeXError

from probex.zoo.factored import LoraFactors

MEMORY_BUDGET_ENV = "PROBEX_MEMORY_BUDGET"
DEFAULT_MEMORY_BUDGET = 2 * 2**30
#: float32 bytes of one streamed chunk of merged rows.
CHUNK_BYTES = 64 * 2**20

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)


def memory_budget() -> int:
    """Bytes consumers may hold at once in float32: ``$PROBEX_MEMORY_BUDGET`` or 2 GiB."""
    text = os.environ.get(MEMORY_BUDGET_ENV, "").strip()
    if not text:
        return DEFAULT_MEMORY_BUDGET
    match = _SIZE.match(text)
    if match is None or float(match.group(1)) <= 0:
        raise ProbeXError(f"${MEMORY_BUDGET_ENV} must be a size such as 2000000000, 512M or 6G; got {text!r}")
    return int(float(match.group(1)) * 1024 ** "_kmgt".index(match.group(2).lower() or "_"))


class MatrixStack:
    """N matrices [d_W, d_H]: rows ``positions`` (all when None) of a dense tensor or of LoraFactors.

    Args:
        storage: a tensor [M, d_W, d_H] (any float dtype, possibly memory-mapped) or LoraFactors [M].
        positions: int64 [N] rows of ``storage`` this stack holds, in order; None for all M.
    """

    def __init__(self, storage: torch.Tensor | LoraFactors, positions: np.ndarray | None = None) -> None:
        if isinstance(storage, torch.Tensor) and storage.ndim != 3:
            raise ProbeXError(f"MatrixStack: expected a tensor [N, d_W, d_H]; got shape {tuple(storage.shape)}")
        self.storage = storage
        self.positions = None if positions is None else np.asarray(positions, dtype=np.int64)

    # -- what it holds --------------------------------------------------------------------

    @property
    def factored(self) -> bool:
        """True when the matrices are LoRA factors (see :class:`~probex.zoo.factored.LoraFactors`)."""
        return isinstance(self.storage, LoraFactors)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(N, d_W, d_H)."""
        _, d_W, d_H = self.storage.shape
        return len(self), int(d_W), int(d_H)

    @property
    def dtype(self) -> torch.dtype:
        """The stored dtype (computations are float32)."""
        return self.storage.dtype

    def __len__(self) -> int:
        return len(self.storage) if self.positions is None else len(self.positions)

    def __repr__(self) -> str:
        kind = f"LoRA rank {self.storage.rank}" if self.factored else "dense"
        return f"MatrixStack(models={len(self)}, shape={self.shape[1:]}, {kind}, dtype={self.dtype})"

    def float32_bytes(self) -> int:
        """Bytes of all its rows taken as float32 (what ``take()`` of everything would hold)."""
        n, d_W, d_H = self.shape
        per_model = (self.storage.rank * (d_W + d_H) + 1) if self.factored else d_W * d_H
        return 4 * n * per_model

    def chunk_rows(self, max_bytes: int = CHUNK_BYTES) -> int:
        """How many merged float32 rows fit in ``max_bytes`` (at least 1)."""
        _, d_W, d_H = self.shape
        return max(1, max_bytes // (4 * d_W * d_H))

    # -- views ------------------------------------------------------------------------------

    def rows(self, index: Any = None) -> np.ndarray:
        """The storage rows of ``index`` (positions in this stack; all when None)."""
        everything = np.arange(len(self.storage)) if self.positions is None else self.positions
        if index is None:
            return everything
        if isinstance(index, slice):
            return everything[index]
        if isinstance(index, torch.Tensor):
            index = index.cpu().numpy()
        return everything[np.asarray(index, dtype=np.int64)]

    def view(self, index: Any) -> "MatrixStack":
        """The stack of rows ``index`` of this one (a slice, positions or a mask), sharing the storage."""
        if isinstance(index, np.ndarray) and index.dtype == bool or isinstance(index, torch.Tensor) and index.dtype == torch.bool:
            index = np.flatnonzero(np.asarray(index.cpu() if isinstance(index, torch.Tensor) else index))
        return MatrixStack(self.storage, self.rows(index))

    # -- reading ---------------------------------------------------------------------------

    def stored(self, index: Any = None) -> torch.Tensor | LoraFactors:
        """Rows ``index`` (all when None) in the stored dtype: the storage itself, a slice of it
        when the rows are consecutive, else a gathered copy."""
        if index is None and self.positions is None:
            return self.storage
        return self._stored(self.rows(index))

    def _stored(self, rows: np.ndarray) -> torch.Tensor | LoraFactors:
        if len(rows) and rows[-1] - rows[0] + 1 == len(rows) and np.all(np.diff(rows) == 1):
            return self.storage[int(rows[0]):int(rows[-1]) + 1]
        index = torch.from_numpy(np.ascontiguousarray(rows))
        if self.factored:
            return self.storage[index]
        return self.storage.index_select(0, index)

    def take(self, index: Any = None, device: torch.device | str | None = None) -> torch.Tensor | LoraFactors:
        """Rows ``index`` (all when None) in float32 on ``device``: a tensor [k, d_W, d_H] or LoraFactors [k]."""
        if index is None and self.positions is None:
            stored = self.storage
        else:
            stored = self._stored(self.rows(index))
        return stored.to(device=device, dtype=torch.float32)

    def merged(self, index: Any = None, out: torch.Tensor | None = None) -> torch.Tensor:
        """Rows ``index`` as float32 matrices [k, d_W, d_H] (LoRA factors merged: this materialises them)."""
        stored = self.storage if index is None and self.positions is None else self._stored(self.rows(index))
        if isinstance(stored, LoraFactors):
            return stored.merge(out=out)
        if out is None:
            return stored.to(dtype=torch.float32)
        return out.copy_(stored)

    def chunks(self, max_bytes: int = CHUNK_BYTES) -> Iterator[tuple[int, int]]:
        """(start, stop) ranges of rows whose merged float32 values hold at most ``max_bytes``."""
        step = self.chunk_rows(max_bytes)
        for start in range(0, len(self), step):
            yield start, min(start + step, len(self))

    def flat_columns(self, start: int, stop: int, index: Any = None) -> torch.Tensor:
        """Coordinates [start, stop) of the flattened matrices (row-major, d_W * d_H of them) of rows
        ``index``, as float32 [k, stop - start]. LoRA rows merge only the matrix rows they touch."""
        rows = torch.from_numpy(np.ascontiguousarray(self.rows(index)))
        _, d_W, d_H = self.shape
        if not self.factored:
            flat = self.storage.reshape(len(self.storage), d_W * d_H)[:, start:stop]
            if self.positions is None and index is None:
                return flat.float()
            return flat.index_select(0, rows).float()
        first, last = start // d_H, (stop - 1) // d_H
        offset = first * d_H
        if first == last:  # within one matrix row: its B row and A's columns [start, stop) of it
            B, A = self.storage.B[:, first:first + 1], self.storage.A[:, :, start - offset:stop - offset]
            offset = start
        else:
            B, A = self.storage.B[:, first:last + 1], self.storage.A
        B, A = B.index_select(0, rows).float(), A.index_select(0, rows).float()
        part = (B @ A) * self.storage.scale.index_select(0, rows).float()[:, None, None]
        return part.reshape(len(rows), -1)[:, start - offset:stop - offset]


def as_stack(value: Any, name: str = "X") -> MatrixStack:
    """``value`` as a MatrixStack: a LayerBank's, a stack, LoraFactors, or a tensor / array [N, d_W, d_H];
    numpy arrays (memory maps included) are wrapped without a copy.
    Anything else with an ``X`` attribute holding such a tensor is read through it."""
    stack = getattr(value, "stack", None)
    if stack is None:
        stack = getattr(value, "X", value)
    if isinstance(stack, MatrixStack):
        return stack
    if isinstance(stack, LoraFactors):
        return MatrixStack(stack)
    if isinstance(stack, np.ndarray):
        with warnings.catch_warnings():  # read-only memory maps are fine: stacks never write
            warnings.simplefilter("ignore", UserWarning)
            stack = torch.from_numpy(stack)
    if not isinstance(stack, torch.Tensor):
        raise ProbeXError(f"{name}: expected a tensor [N, d_W, d_H], a numpy array, LoraFactors or a LayerBank; "
                         f"got {type(value).__name__}")
    if stack.ndim != 3:
        raise ProbeXError(f"{name}: expected shape [N, d_W, d_H] (one weight matrix per model); "
                         f"got a tensor of shape {tuple(stack.shape)}")
    return MatrixStack(stack)
