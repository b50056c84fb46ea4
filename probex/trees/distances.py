"""Exact computations over a population's flattened layer, streamed in chunks of rows.

The population ``flat`` [N, D] is a :class:`~probex.zoo.stack.MatrixStack` (a 2-D tensor is
taken as one): a memory-mapped dense bank (e.g. a float16 memory map of 12 GB) or LoRA
factors. Every function here reads it in row chunks of at most ``CHUNK_BYTES`` as float32 (one
reused buffer; LoRA rows merged into it a chunk at a time), or in column chunks for the Gram
matrix, and never holds the whole population. The exact Gram matrix of LoRA models comes from
their factors when that is cheaper (r^2 (d_W + d_H) per pair instead of D).

Streamed loops run torch on ``STREAM_THREADS`` intra-op threads (``streaming_threads``). Each
chunk is a few memory-bound operations; a second thread adds little to them, and on a machine
whose cores are shared with other processes, every operation waits at the thread pool's
barrier for a descheduled thread: measured on the 2-core development machines under a load of
4, a read of 2,500 models of 768 x 768 took 2.3 s on one thread and 4.6 s on two.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

import numpy as np
import torch

from probex.errors import ProbeXError
from probex.progress import Progress
from probex.trees.factored_reads import factored_l2, factored_l2_to_factors, factored_sums
from probex.zoo.factored import centred_gram, inner_products
from probex.zoo.stack import MatrixStack

CHUNK_BYTES = 64 * 2**20  # float32 bytes of one streamed chunk
STREAM_THREADS = 1  # torch intra-op threads while streaming (see the module docstring)
# float32 products err by <~1e-6 of the norms; redo a distance whose cancellation could exceed 1%
_CANCELLATION_GUARD = 1e-2 / 1e-6
METRICS = ("l2", "l1")


@contextmanager
def streaming_threads() -> Iterator[None]:
    """Run torch on ``STREAM_THREADS`` threads inside the block, then restore the previous count."""
    previous = torch.get_num_threads()
    torch.set_num_threads(min(previous, STREAM_THREADS))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def as_flat(flat: MatrixStack | torch.Tensor) -> MatrixStack:
    """A population as a stack: a MatrixStack as it is, a tensor [N, D] as the stack [N, D, 1]."""
    if isinstance(flat, MatrixStack):
        return flat
    return MatrixStack(flat.reshape(flat.shape[0], -1, 1))


def flat_shape(flat: MatrixStack) -> tuple[int, int]:
    """(N, D) of a population: its models and the coordinates of each flattened matrix."""
    n, d_W, d_H = flat.shape
    return n, d_W * d_H


def row_chunks(flat: MatrixStack | torch.Tensor, rows: np.ndarray) -> Iterator[tuple[int, torch.Tensor]]:
    """(offset into ``rows``, float32 chunk [r, D]) of ``flat[rows]``. Each chunk reuses one
    buffer, so a caller must be done with a chunk before asking for the next."""
    flat = as_flat(flat)
    _, d_W, d_H = flat.shape
    step = max(1, CHUNK_BYTES // (4 * d_W * d_H))
    buffer = torch.empty(min(step, len(rows)), d_W * d_H, dtype=torch.float32)
    for start in range(0, len(rows), step):
        part = rows[start:start + step]
        chunk = buffer[:len(part)]
        flat.merged(part, out=chunk.view(len(part), d_W, d_H))  # contiguous rows: one slice, no gather
        yield start, chunk


def tree_means(flat: MatrixStack | torch.Tensor, rows: np.ndarray, labels: np.ndarray, n_trees: int,
               progress: Progress | None = None) -> torch.Tensor:
    """Mean of each tree's members [n_trees, D] (float32); ``labels`` [len(rows)] are the trees
    of ``flat[rows]``. Sums are float32 within a chunk, float64 across chunks (LoRA factors: one
    product per tree and chunk, see :mod:`probex.trees.factored_reads`)."""
    flat = as_flat(flat)
    counts = torch.from_numpy(np.bincount(labels, minlength=n_trees)).clamp(min=1).to(torch.float64)
    if flat.factored:
        onehot = torch.zeros(n_trees, len(rows))
        onehot[torch.from_numpy(labels), torch.arange(len(rows))] = 1.0
        with streaming_threads():
            sums = factored_sums(flat, rows, onehot)
        if progress:
            progress(len(rows), len(rows), "tree centres")
        return (sums / counts[:, None]).to(torch.float32)
    sums = torch.zeros(n_trees, flat_shape(flat)[1], dtype=torch.float64)
    with streaming_threads():
        for start, chunk in row_chunks(flat, rows):
            onehot = torch.zeros(n_trees, len(chunk))
            onehot[torch.from_numpy(labels[start:start + len(chunk)]), torch.arange(len(chunk))] = 1.0
            sums.add_(onehot @ chunk)
            if progress:
                progress(start + len(chunk), len(rows), "tree centres")
    return (sums / counts[:, None]).to(torch.float32)


def distances_to_centres(flat: MatrixStack | torch.Tensor, centres: torch.Tensor, metric: str, progress: Progress | None = None,
                         rows: np.ndarray | None = None) -> np.ndarray:
    """Exact distances [len(rows), K] from the models ``flat[rows]`` (all by default) to
    ``centres`` [K, D], ``metric`` "l2" or "l1"."""
    return distances_in_metrics(flat, centres, (metric,), progress, rows)[metric]


def distances_to_models(population: MatrixStack, others: MatrixStack) -> np.ndarray:
    """Exact l2 distances [N, M] from each model of ``population`` to each of ``others`` (e.g. an upload),
    both stacks of the same layer. When both are LoRA factors, through r x r products (an upload to
    5,000 SD LoRAs of 1280 x 1280: 4.6 s at load 13 on 2 cores); otherwise ``others`` merged, as dense centres."""
    if population.shape[1:] != others.shape[1:]:
        raise ProbeXError(f"distances_to_models: layers of shapes {population.shape[1:]} and {others.shape[1:]}")
    rows = np.arange(len(population))
    if population.factored and others.factored:
        with streaming_threads():
            return factored_l2_to_factors(population, others.take(), rows)
    return distances_to_centres(population, others.merged().reshape(len(others), -1), "l2", rows=rows)


def distances_in_metrics(flat: MatrixStack | torch.Tensor, centres: torch.Tensor, metrics: Sequence[str],
                         progress: Progress | None = None, rows: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Exact distances {metric: [len(rows), K]} from ``flat[rows]`` to ``centres`` [K, D] in
    each of ``metrics`` ("l2", "l1"), all from one read of the models.

    l2 goes through one matrix product around the mean m of the centres,
    |x-m|^2 - 2 (x-m).(c-m) + |c-m|^2, and the rows where float32 cancellation could exceed 1%
    (a model very near a centre that is far from m) are redone from differences.
    """
    flat = as_flat(flat)
    rows = np.arange(len(flat)) if rows is None else rows
    if flat.factored and set(metrics) == {"l2"}:  # from the factors (see probex.trees.factored_reads)
        with streaming_threads():
            distances = factored_l2(flat, centres, rows)
        if progress:
            progress(len(rows), len(rows), "distances to tree centres")
        return {"l2": distances}
    out = {metric: np.empty((len(rows), centres.shape[0])) for metric in metrics}
    middle = centres.mean(0)
    offsets = centres - middle
    offset_norms = offsets.double().pow(2).sum(1)
    with streaming_threads():
        for start, chunk in row_chunks(flat, rows):
            if "l1" in out:  # first: the l2 computation below shifts the chunk in place
                out["l1"][start:start + len(chunk)] = torch.cdist(chunk, centres, p=1.0).double().numpy()
            if "l2" in out:
                chunk.sub_(middle)
                norms = torch.linalg.vector_norm(chunk, dim=1).double().pow(2)
                squared = norms[:, None] + offset_norms[None, :] - 2.0 * (chunk @ offsets.T).double()
                risky = (norms[:, None] + offset_norms[None, :]) > _CANCELLATION_GUARD * squared
                if risky.any():
                    redo = risky.any(1)
                    exact = torch.cdist(chunk[redo], offsets, compute_mode="donot_use_mm_for_euclid_dist")
                    squared[redo] = exact.double().pow(2)
                out["l2"][start:start + len(chunk)] = squared.clamp(min=0.0).sqrt().numpy()
            if progress:
                progress(start + len(chunk), len(rows), "distances to tree centres")
    return out


def exact_gram(flat: MatrixStack | torch.Tensor, rows: np.ndarray, progress: Progress | None = None) -> np.ndarray:
    """Centred float64 Gram matrix [r, r] of ``flat[rows]`` on all coordinates (its l2 distances
    are the exact pairwise distances): from LoRA factors when r^2 (d_W + d_H) < D, else streamed
    in column chunks of bounded memory."""
    flat = as_flat(flat)
    n, d_W, d_H = flat.shape
    dim = d_W * d_H
    if flat.factored and flat.storage.rank ** 2 * (d_W + d_H) < dim:
        factors = flat.storage[torch.from_numpy(np.ascontiguousarray(flat.rows(rows)))]
        gram = centred_gram(inner_products(factors))
        if progress:
            progress(1, 1, "pairwise distances")
        return gram.numpy()
    width = max(1, CHUNK_BYTES // (8 * len(rows)))
    everyone = len(rows) == n and np.array_equal(rows, np.arange(n))
    gram = torch.zeros(len(rows), len(rows), dtype=torch.float64)
    starts = range(0, dim, width)
    for done, start in enumerate(starts):
        add_centred_products(gram, flat.flat_columns(start, min(start + width, dim), None if everyone else rows))
        if progress:
            progress(done + 1, len(starts), "pairwise distances")
    return gram.numpy()


def add_centred_products(gram: torch.Tensor, columns: torch.Tensor, scale: float = 1.0) -> None:
    """gram += scale * C C^T, where C is ``columns`` [r, c] in float64 centred over the rows."""
    centred = columns.to(torch.float64, copy=True)  # never centre the caller's tensor in place
    centred -= centred.mean(0, keepdim=True)
    gram.addmm_(centred, centred.T, alpha=scale)
