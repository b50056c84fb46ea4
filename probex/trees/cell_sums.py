"""One streamed read for the coordinate-subset shortcut: the subset, and exact tree means later.

The shortcut (``probex.trees.subset``) needs, for every model, its coordinates on a few random
blocks (for the linkage), then each tree's exact mean and every model's exact distance to it
(for the confirmation and the radii). Read naively, that is three reads of a population that
may be a 12 GB memory map: gathering the blocks (on a cold page cache the kernel reads whole
neighbourhoods around each block, so most of the file), summing the trees, measuring the
distances. The distances need the means, so they need a read of their own; this module folds
the other two into one sequential read, before the trees are known:

1. Seeds: a random sample of models, read on the blocks only, thinned by farthest-point
   traversal to at most ``max_cells`` seeds; seeds far apart tend to lie in different trees.
2. The read: each model's block coordinates are kept (for the linkage), the model joins the
   *cell* of its nearest seed on those coordinates, and its full weights are added to its
   cell's sum (float32 within ``FLUSH_ROWS`` models, float64 beyond).
3. Once the linkage has given every model its tree, ``tree_means_from_cells`` checks each cell
   exactly: a cell whose models all belong to one tree adds its sum to that tree. A cell mixing
   trees is not estimated: the models of a tree other than the cell's majority ("strays") are
   read again and their exact weights moved to their own tree; when strays exceed
   ``MAX_STRAY_FRACTION`` of the models, a full read by tree replaces the cell sums. Either way
   the means are exact sums; a bad seed choice only costs reads.

Models outside the linkage (more than ``max_linkage_models``) get cells of their own, so the
means over the linked models alone are available too.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from probex.trees.distances import CHUNK_BYTES, as_flat, flat_shape, row_chunks, streaming_threads, tree_means
from probex.trees.factored_reads import factored_sums
from probex.progress import Progress
from probex.zoo.stack import MatrixStack

MAX_CELLS = 8  # seeds; more cells separate more trees but cost a wider product per chunk
SEED_SAMPLE = 512  # models read on the blocks to choose the seeds from
CELL_BYTES = 256 * 2**20  # memory for the cell sums (float64 + a float32 accumulator)
FLUSH_ROWS = 256  # models summed in float32 before the float64 sums take them
MAX_STRAY_FRACTION = 0.25  # above it, re-reading strays costs more than one full read


@dataclass
class SubsetRead:
    """What one streamed read of a population keeps.

    ``subset`` [len(rows), s] float64: the linked models' coordinates on the blocks;
    ``cells`` [n]: each model's cell; ``cell_sums`` [n_cells, D] float64: the sum of each cell's
    models; ``seconds``: how long the read took.
    """

    subset: torch.Tensor
    cells: np.ndarray
    cell_sums: torch.Tensor
    seconds: float


@dataclass
class CellMeans:
    """Exact tree means [K, D] (float32) and how they were obtained: ``strays`` models read
    again, or ``full_read`` when the cells were given up for a read of every model."""

    means: torch.Tensor
    strays: int
    full_read: bool


def block_columns(flat: MatrixStack | torch.Tensor, blocks: list[tuple[int, int]],
                  rows: torch.Tensor | None = None) -> torch.Tensor:
    """``flat[rows]`` (all rows by default) on the blocks, as float64 [r, s]. ``flat`` is a
    population (LoRA rows merge only the matrix rows the blocks touch) or a chunk [r, D] of one."""
    if isinstance(flat, torch.Tensor) and flat.ndim == 2:
        parts = [flat[:, start:stop] if rows is None else flat[:, start:stop].index_select(0, rows)
                 for start, stop in blocks]
    else:
        stack = as_flat(flat)
        parts = [stack.flat_columns(start, stop, rows) for start, stop in blocks]
    return torch.cat(parts, dim=1).to(torch.float64)


def choose_seeds(flat: MatrixStack | torch.Tensor, blocks: list[tuple[int, int]], count: int,
                 rng: np.random.Generator) -> torch.Tensor:
    """Up to ``count`` seeds [g, s] on the blocks: farthest-point traversal of a random sample."""
    n = len(as_flat(flat))
    sample = np.sort(rng.choice(n, min(n, SEED_SAMPLE), replace=False))
    points = block_columns(flat, blocks, torch.from_numpy(sample))
    chosen = [0]
    nearest = (points - points[0]).pow(2).sum(1)
    while len(chosen) < count:
        farthest = int(nearest.argmax())
        if nearest[farthest] <= 0:  # every sampled model duplicates a seed
            break
        chosen.append(farthest)
        nearest = torch.minimum(nearest, (points - points[farthest]).pow(2).sum(1))
    return points[chosen]


def read_subset_and_cells(flat: MatrixStack | torch.Tensor, rows: np.ndarray, blocks: list[tuple[int, int]],
                          rng: np.random.Generator, max_cells: int = MAX_CELLS,
                          progress: Progress | None = None) -> SubsetRead:
    """Read ``flat`` [n, D] once, in order: the block coordinates of the linked models ``rows``
    and the sums of the cells (see the module docstring)."""
    started = time.perf_counter()
    flat = as_flat(flat)
    n, dim = flat_shape(flat)
    _, d_W, d_H = flat.shape
    has_rest = len(rows) < n
    affordable = CELL_BYTES // (12 * dim * (2 if has_rest else 1))
    slot = torch.full((n,), -1, dtype=torch.int64)  # where a linked model's coordinates go in ``subset``
    slot[torch.from_numpy(rows)] = torch.arange(len(rows))
    step = max(1, CHUNK_BYTES // (4 * dim))
    with streaming_threads():
        seeds = choose_seeds(flat, blocks, max(1, min(max_cells, affordable)), rng)
        n_seeds = seeds.shape[0]
        n_cells = n_seeds * (2 if has_rest else 1)  # models outside the linkage: cells of their own
        if flat.factored:
            return _read_factored(flat, slot, blocks, seeds, n_cells, started, progress)
        subset = torch.empty(len(rows), seeds.shape[1], dtype=torch.float64)
        cells = torch.empty(n, dtype=torch.int64)
        sums = torch.zeros(n_cells, dim, dtype=torch.float64)
        pending = torch.zeros(n_cells, dim, dtype=torch.float32)
        buffer = torch.empty(min(step, n), dim, dtype=torch.float32)
        unflushed = 0
        for start in range(0, n, step):
            stop = min(start + step, n)
            chunk = buffer[:stop - start]
            flat.merged(slice(start, stop), out=chunk.view(stop - start, d_W, d_H))
            coordinates = block_columns(chunk, blocks)  # from the chunk just read
            where = slot[start:stop]
            linked = where >= 0
            subset[where[linked]] = coordinates[linked]
            cell = torch.cdist(coordinates, seeds).argmin(1) + n_seeds * (~linked)
            cells[start:stop] = cell
            onehot = torch.zeros(n_cells, stop - start)
            onehot[cell, torch.arange(stop - start)] = 1.0
            pending.addmm_(onehot, chunk)
            unflushed += stop - start
            if unflushed >= FLUSH_ROWS or stop == n:
                np.add(sums.numpy(), pending.numpy(), out=sums.numpy())  # 5x faster than torch's mixed-type add_
                pending.zero_()
                unflushed = 0
            if progress:
                progress(stop, n, "reading models (coordinate subset, cell sums)")
    return SubsetRead(subset=subset, cells=cells.numpy(), cell_sums=sums, seconds=time.perf_counter() - started)


def _read_factored(flat: MatrixStack, slot: torch.Tensor, blocks: list[tuple[int, int]], seeds: torch.Tensor,
                   n_cells: int, started: float, progress: Progress | None) -> SubsetRead:
    """``read_subset_and_cells`` for LoRA factors: block coordinates from the factors (only the matrix
    rows the blocks touch are formed), then each cell's sum as products of its models' factors."""
    n = len(flat)
    linked = slot >= 0
    subset = torch.empty(int(linked.sum()), seeds.shape[1], dtype=torch.float64)
    cells = torch.empty(n, dtype=torch.int64)
    step = 4096
    for start in range(0, n, step):
        stop = min(start + step, n)
        coordinates = block_columns(flat, blocks, torch.arange(start, stop))
        where = slot[start:stop]
        subset[where[where >= 0]] = coordinates[where >= 0]
        cells[start:stop] = torch.cdist(coordinates, seeds).argmin(1) + seeds.shape[0] * (where < 0)
        if progress:
            progress(stop, n, "reading models (coordinate subset)")
    onehot = torch.zeros(n_cells, n)
    onehot[cells, torch.arange(n)] = 1.0
    sums = factored_sums(flat, np.arange(n), onehot)
    if progress:
        progress(n, n, "cell sums")
    return SubsetRead(subset=subset, cells=cells.numpy(), cell_sums=sums, seconds=time.perf_counter() - started)


def tree_means_from_cells(flat: MatrixStack | torch.Tensor, read: SubsetRead, labels: np.ndarray, n_trees: int,
                          progress: Progress | None = None) -> CellMeans:
    """Exact means [n_trees, D] of the trees ``labels`` [n] (-1: a model to leave out) from the
    cell sums of ``read``, re-reading strays (see the module docstring)."""
    sums = torch.zeros(n_trees, read.cell_sums.shape[1], dtype=torch.float64)
    stray_rows, stray_from, stray_to = [], [], []
    for cell in np.unique(read.cells):
        members = np.flatnonzero(read.cells == cell)
        trees = labels[members]
        if not np.any(trees >= 0):  # a cell of left-out models only
            continue
        majority = int(np.bincount(trees[trees >= 0]).argmax())
        sums[majority] += read.cell_sums[cell]
        strays = members[trees != majority]
        stray_rows.append(strays)
        stray_from.append(np.full(len(strays), majority))
        stray_to.append(labels[strays])
    strays = np.concatenate(stray_rows) if stray_rows else np.zeros(0, dtype=np.int64)
    included = np.flatnonzero(labels >= 0)
    if len(strays) > MAX_STRAY_FRACTION * len(included):
        return CellMeans(tree_means(flat, included, labels[included], n_trees, progress), len(strays), True)
    if len(strays):
        order = np.argsort(strays)  # read in file order
        strays, source, target = strays[order], np.concatenate(stray_from)[order], np.concatenate(stray_to)[order]
        flat = as_flat(flat)
        with streaming_threads():
            if flat.factored:
                sums.add_(factored_sums(flat, strays, _moves(source, target, n_trees)))
            else:
                for start, chunk in row_chunks(flat, strays):
                    part = slice(start, start + len(chunk))
                    sums.add_(_moves(source[part], target[part], n_trees) @ chunk)
    counts = torch.from_numpy(np.bincount(labels[included], minlength=n_trees)).clamp(min=1).to(torch.float64)
    return CellMeans((sums / counts[:, None]).to(torch.float32), len(strays), False)



def _moves(source: np.ndarray, target: np.ndarray, n_trees: int) -> torch.Tensor:
    """[n_trees, m]: -1 at each stray's cell majority tree, +1 at its own tree (none when left out)."""
    span = torch.arange(len(source))
    moves = torch.zeros(n_trees, len(source))
    moves[torch.from_numpy(source), span] = -1.0
    kept = target >= 0
    moves[torch.from_numpy(target[kept]), span[torch.from_numpy(kept)]] += 1.0
    return moves
