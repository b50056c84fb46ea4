"""One streamed read: block coordinates for the linkage, and exact tree means from cell sums."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from probex.trees.cell_sums import block_columns, read_subset_and_cells, tree_means_from_cells
from probex.trees.distances import tree_means
from probex.trees.subset import coordinate_blocks

from tests.trees.test_router import concat, grow_tree


def population(*sizes: int):
    """Trees of 64 x 64 models with different roots: (flat [n, 4096], tree index of each model)."""
    banks = [grow_tree(name, size, shape=(64, 64), root_seed=k + 1, seed=k + 10)
             for k, (name, size) in enumerate(zip("abcdefgh", sizes))]
    bank = concat(*banks)
    labels = np.repeat(np.arange(len(sizes)), sizes)
    return bank.X.reshape(len(labels), -1), labels


def read(flat: torch.Tensor, rows: np.ndarray | None = None, max_cells: int = 8):
    rng = np.random.default_rng(0)
    blocks = coordinate_blocks(flat.shape[1], 512, rng)
    rows = np.arange(flat.shape[0]) if rows is None else rows
    return blocks, read_subset_and_cells(flat, rows, blocks, rng, max_cells=max_cells)


def assert_exact_means(result, flat, labels, n_trees):
    included = np.flatnonzero(labels >= 0)
    expected = tree_means(flat, included, labels[included], n_trees)
    torch.testing.assert_close(result.means, expected, rtol=1e-6, atol=1e-6)


def test_read_keeps_the_block_coordinates_of_the_linked_models():
    flat, _ = population(12, 9)
    rows = np.array([0, 3, 4, 10, 20])
    blocks, subset_read = read(flat, rows)
    assert torch.equal(subset_read.subset, block_columns(flat, blocks, torch.from_numpy(rows)))


def test_cells_of_separate_trees_give_exact_means_without_reading_again():
    flat, labels = population(20, 15, 10)
    _, subset_read = read(flat)
    result = tree_means_from_cells(flat, subset_read, labels, 3)
    assert (result.strays, result.full_read) == (0, False)
    assert_exact_means(result, flat, labels, 3)


def test_strays_of_a_cell_mixing_trees_are_read_again_and_moved():
    flat, labels = population(30, 5)
    _, subset_read = read(flat, max_cells=1)  # one cell holds both trees
    result = tree_means_from_cells(flat, subset_read, labels, 2)
    assert (result.strays, result.full_read) == (5, False)
    assert_exact_means(result, flat, labels, 2)


def test_cells_mixing_many_models_fall_back_to_a_full_read():
    flat, labels = population(20, 20)
    _, subset_read = read(flat, max_cells=1)
    result = tree_means_from_cells(flat, subset_read, labels, 2)
    assert result.full_read
    assert_exact_means(result, flat, labels, 2)


def test_models_outside_the_linkage_have_cells_of_their_own_and_can_be_left_out():
    flat, labels = population(20, 15)
    rows = np.arange(0, 35, 2)
    _, subset_read = read(flat, rows)
    linked_cells = set(subset_read.cells[rows])
    assert linked_cells.isdisjoint(np.delete(subset_read.cells, rows))
    linked_only = np.where(np.isin(np.arange(35), rows), labels, -1)
    result = tree_means_from_cells(flat, subset_read, linked_only, 2)
    assert (result.strays, result.full_read) == (0, False)
    assert_exact_means(result, flat, linked_only, 2)


def test_a_wrong_partition_is_never_averaged_into_a_tree():
    # labels that split one true tree in two: every cell of that tree now mixes two labels
    flat, labels = population(16, 16)
    labels = labels.copy()
    labels[:3] = 2
    _, subset_read = read(flat)
    result = tree_means_from_cells(flat, subset_read, labels, 3)
    assert result.strays >= 3 or result.full_read
    assert_exact_means(result, flat, labels, 3)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float64])
def test_block_coordinates_are_the_stored_values_in_float64(dtype):
    flat, _ = population(6, 6)
    flat = flat.to(dtype)
    blocks, subset_read = read(flat)
    expected = torch.cat([flat[:, start:stop] for start, stop in blocks], dim=1).to(torch.float64)
    assert torch.equal(subset_read.subset, expected)
