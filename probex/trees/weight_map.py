"""The weight map: models as points on the first two principal components of one layer's raw weights.

Computed in bounded memory, exactly where that is affordable:

- LoRA factors: PCA through the exact Gram matrix of the models, <X_i, X_j> from r x r
  products (:func:`probex.zoo.factored.inner_products`), when it costs at most
  ``EXACT_FLOPS``;
- dense matrices: PCA of the float64 values when they hold at most ``EXACT_BYTES``;
- otherwise on a random projection of every matrix, X -> S_W X S_H^T with Gaussian S_W
  [k, d_W] and S_H [k, d_H] (``SKETCH_SIDE`` = k; for LoRA factors s (S_W B)(A S_H^T), never
  merged), read a chunk at a time. Squared distances between projected matrices are unbiased
  estimates of the true ones; the map says when it was drawn this way.

The two leading components come from a symmetric eigensolver on the smaller Gram matrix, or
from Lanczos iterations (scipy ``eigsh``) when that matrix is large. Each component's sign is
fixed so that its largest coordinate is positive: the same models give the same picture.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from probex.zoo.factored import centred_gram, inner_products
from probex.zoo.stack import MatrixStack

EXACT_FLOPS = 2e10  # Gram matrix of LoRA factors: N^2 r^2 (d_W + d_H) multiply-adds at most
EXACT_BYTES = 256 * 2**20  # float64 values of a dense population read whole at most
SKETCH_SIDE = 64  # k: each matrix is projected to k x k values (fewer when the layer is smaller)
_LANCZOS_ABOVE = 600  # Gram matrices larger than this: two leading eigenpairs by Lanczos


@dataclass
class WeightMap:
    """``coordinates`` [N, 2], ``variance`` [2] (each component's share of the total variance) and
    ``method``: "exact" or "random projection to k_W x k_H"."""

    coordinates: np.ndarray
    variance: np.ndarray
    method: str


def weight_map(population: Any, seed: int = 0) -> WeightMap:
    """The first two principal coordinates of N matrices (a LayerBank, MatrixStack, LoraFactors, or a
    tensor / array [N, d_W, d_H] or [N, D]); see the module docstring for how."""
    stack = _as_map_stack(population)
    n, d_W, d_H = stack.shape
    if stack.factored and n * n * stack.storage.rank ** 2 * (d_W + d_H) <= EXACT_FLOPS:
        return WeightMap(*_from_gram(centred_gram(inner_products(stack.take())).numpy()), "exact")
    if not stack.factored and n * d_W * d_H * 8 <= EXACT_BYTES:
        coordinates, variance = principal_coordinates(stack.merged().reshape(n, -1).numpy().astype(np.float64))
        return WeightMap(coordinates, variance, "exact")
    sketch, method = _sketch(stack, seed)
    coordinates, variance = principal_coordinates(sketch)
    return WeightMap(coordinates, variance, method)


def principal_coordinates(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The first two principal coordinates [N, 2] of rows [N, D] and the variance share of each component."""
    from threadpoolctl import threadpool_limits

    # one BLAS thread: beside torch's threads on a busy 2-core machine, more threads made it 10-100x slower
    with threadpool_limits(1):
        centred = values - values.mean(axis=0, keepdims=True)
        if centred.shape[0] <= centred.shape[1]:
            return _from_gram(centred @ centred.T)
        total = float(np.einsum("ij,ij->", centred, centred))
        eigenvalues, vectors = _leading(centred.T @ centred)  # principal axes
        return _signed(centred @ vectors), _shares(eigenvalues, total)


def _from_gram(gram: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates from a centred Gram matrix (eigenvectors times the root of their eigenvalues), and shares."""
    eigenvalues, vectors = _leading(gram)
    coordinates = _signed(vectors * np.sqrt(eigenvalues))
    return coordinates, _shares(eigenvalues, float(np.trace(gram)))


def _leading(symmetric: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The (up to) two largest eigenvalues of a symmetric PSD matrix, descending, and their vectors."""
    size = symmetric.shape[0]
    count = min(2, size)
    if size > _LANCZOS_ABOVE:
        from scipy.sparse.linalg import eigsh

        eigenvalues, vectors = eigsh(symmetric, k=count, which="LA", v0=np.ones(size))
    else:
        eigenvalues, vectors = np.linalg.eigh(symmetric)
    order = np.argsort(eigenvalues)[::-1][:count]
    return np.clip(eigenvalues[order], 0.0, None), vectors[:, order]


def _signed(coordinates: np.ndarray) -> np.ndarray:
    """Each column flipped so that its entry of largest magnitude is positive; padded to two columns."""
    if coordinates.shape[1]:
        largest = coordinates[np.abs(coordinates).argmax(axis=0), np.arange(coordinates.shape[1])]
        coordinates = coordinates * np.where(largest < 0, -1.0, 1.0)
    if coordinates.shape[1] < 2:  # one weight: a degenerate map
        coordinates = np.pad(coordinates, ((0, 0), (0, 2 - coordinates.shape[1])))
    return coordinates


def _shares(eigenvalues: np.ndarray, total: float) -> np.ndarray:
    return np.pad(eigenvalues / max(total, 1e-30), (0, 2))[:2]


def _sketch(stack: MatrixStack, seed: int) -> tuple[np.ndarray, str]:
    """Every matrix projected to S_W X S_H^T [N, k_W * k_H] (float64), a chunk of models at a time."""
    n, d_W, d_H = stack.shape
    k_W, k_H = min(d_W, SKETCH_SIDE), min(d_H, SKETCH_SIDE)
    generator = torch.Generator().manual_seed(seed)
    left = torch.randn(k_W, d_W, generator=generator) / k_W ** 0.5
    right = torch.randn(k_H, d_H, generator=generator) / k_H ** 0.5
    out = np.empty((n, k_W * k_H))
    step = 4096 if stack.factored else stack.chunk_rows()
    for start in range(0, n, step):
        if stack.factored:
            part = stack.take(slice(start, start + step)).sketch(left, right)
        else:
            part = left @ stack.merged(slice(start, start + step)) @ right.T
        out[start:start + len(part)] = part.reshape(len(part), -1).double().numpy()
    return out, f"random projection to {k_W} x {k_H}"


def _as_map_stack(population: Any) -> MatrixStack:
    from probex.trees.populations import as_model_stack

    return as_model_stack(population)
