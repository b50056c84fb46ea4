"""Exact computations over a population's flattened layer, streamed in chunks of rows.

The population ``flat`` [N, D] may be memory-mapped (e.g. ``torch.from_numpy`` of a float16
``numpy.memmap`` of 12 GB): every function here reads it in row chunks of at most
``CHUNK_BYTES`` as float32 (one reused buffer), or in column chunks for the Gram matrix, and
never holds the whole population.

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

from probex.progress import Progress

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


def row_chunks(flat: torch.Tensor, rows: np.ndarray) -> Iterator[tuple[int, torch.Tensor]]:
    """(offset into ``rows``, float32 chunk [r, D]) of ``flat[rows]``. Each chunk reuses one
    buffer, so a caller must be done with a chunk before asking for the next."""
    step = max(1, CHUNK_BYTES // (4 * flat.shape[1]))
    buffer = torch.empty(min(step, len(rows)), flat.shape[1], dtype=torch.float32)
    for start in range(0, len(rows), step):
        part = rows[start:start + step]
        chunk = buffer[:len(part)]
        if part[-1] - part[0] + 1 == len(part):  # contiguous rows: one slice, no gather
            chunk.copy_(flat[int(part[0]):int(part[-1]) + 1])
        else:
            chunk.copy_(flat.index_select(0, torch.from_numpy(part)))
        yield start, chunk


def tree_means(flat: torch.Tensor, rows: np.ndarray, labels: np.ndarray, n_trees: int,
               progress: Progress | None = None) -> torch.Tensor:
    """Mean of each tree's members [n_trees, D] (float32); ``labels`` [len(rows)] are the trees
    of ``flat[rows]``. Sums are float32 within a chunk, float64 across chunks."""
    sums = torch.zeros(n_trees, flat.shape[1], dtype=torch.float64)
    with streaming_threads():
        for start, chunk in row_chunks(flat, rows):
            onehot = torch.zeros(n_trees, len(chunk))
            onehot[torch.from_numpy(labels[start:start + len(chunk)]), torch.arange(len(chunk))] = 1.0
            sums.add_(onehot @ chunk)
            if progress:
                progress(start + len(chunk), len(rows), "tree centres")
    counts = torch.from_numpy(np.bincount(labels, minlength=n_trees)).clamp(min=1).to(torch.float64)
    return (sums / counts[:, None]).to(torch.float32)


def distances_to_centres(flat: torch.Tensor, centres: torch.Tensor, metric: str, progress: Progress | None = None,
                         rows: np.ndarray | None = None) -> np.ndarray:
    """Exact distances [len(rows), K] from the models ``flat[rows]`` (all by default) to
    ``centres`` [K, D], ``metric`` "l2" or "l1"."""
    return distances_in_metrics(flat, centres, (metric,), progress, rows)[metric]


def distances_in_metrics(flat: torch.Tensor, centres: torch.Tensor, metrics: Sequence[str],
                         progress: Progress | None = None, rows: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Exact distances {metric: [len(rows), K]} from ``flat[rows]`` to ``centres`` [K, D] in
    each of ``metrics`` ("l2", "l1"), all from one read of the models.

    l2 goes through one matrix product around the mean m of the centres,
    |x-m|^2 - 2 (x-m).(c-m) + |c-m|^2, and the rows where float32 cancellation could exceed 1%
    (a model very near a centre that is far from m) are redone from differences.
    """
    rows = np.arange(flat.shape[0]) if rows is None else rows
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


def exact_gram(flat: torch.Tensor, rows: np.ndarray, progress: Progress | None = None) -> np.ndarray:
    """Centred float64 Gram matrix [r, r] of ``flat[rows]`` on all coordinates, streamed in
    column chunks of bounded memory (its l2 distances are the exact pairwise distances)."""
    dim = flat.shape[1]
    width = max(1, CHUNK_BYTES // (8 * len(rows)))
    index = torch.from_numpy(rows)
    everyone = len(rows) == flat.shape[0]
    gram = torch.zeros(len(rows), len(rows), dtype=torch.float64)
    starts = range(0, dim, width)
    for done, start in enumerate(starts):
        columns = flat[:, start:start + width]
        add_centred_products(gram, columns if everyone else columns.index_select(0, index))
        if progress:
            progress(done + 1, len(starts), "pairwise distances")
    return gram.numpy()


def add_centred_products(gram: torch.Tensor, columns: torch.Tensor, scale: float = 1.0) -> None:
    """gram += scale * C C^T, where C is ``columns`` [r, c] in float64 centred over the rows."""
    centred = columns.to(torch.float64, copy=True)  # never centre the caller's tensor in place
    centred -= centred.mean(0, keepdim=True)
    gram.addmm_(centred, centred.T, alpha=scale)
