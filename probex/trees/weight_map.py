"""The weight map: models as points on the first two principal components of one layer's raw weights,
and new models placed on it.

Computed in bounded memory, exactly where that is affordable:

- LoRA factors: PCA through the exact Gram matrix of the models, <X_i, X_j> from r x r
  products (:func:`probex.zoo.factored.inner_products`), when it costs at most
  ``EXACT_FLOPS`` and the merged values would hold at most ``EXACT_BYTES``;
- dense matrices: PCA of the float64 values when they hold at most ``EXACT_BYTES``;
- otherwise on a random projection of every matrix, X -> S_W X S_H^T with Gaussian S_W
  [k, d_W] and S_H [k, d_H] (``SKETCH_SIDE`` = k; for LoRA factors s (S_W B)(A S_H^T), never
  merged), read a chunk at a time. Squared distances between projected matrices are unbiased
  estimates of the true ones; the map says when it was drawn this way.

The two leading components come from a symmetric eigensolver on the smaller Gram matrix, or
from Lanczos iterations (scipy ``eigsh``) when that matrix is large. Each component's sign is
fixed so that its largest coordinate is positive: the same models give the same picture.

Placing (``WeightMap.place``): a map keeps the mean and the two principal axes in the space it
was computed in (all coordinates, or the projection), so a new model of the same layer (an
upload) lands where it would have been had it been mapped with the others. For LoRA factors
mapped exactly, the axes sum_i c_ik X_i / lambda_k are formed once through the factors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from probex.errors import ProbeXError
from probex.zoo.factored import centred_gram, inner_products
from probex.zoo.stack import MatrixStack

EXACT_FLOPS = 2e10  # Gram matrix of LoRA factors: N^2 r^2 (d_W + d_H) multiply-adds at most
EXACT_BYTES = 256 * 2**20  # float64 values of a dense population read whole at most
SKETCH_SIDE = 64  # k: each matrix is projected to k x k values (fewer when the layer is smaller)
_LANCZOS_ABOVE = 600  # Gram matrices larger than this: two leading eigenpairs by Lanczos


@dataclass
class WeightMap:
    """``coordinates`` [N, 2], ``variance`` [2] (each component's share of the total variance) and
    ``method``: "exact" or "random projection to k_W x k_H". ``mean`` [F] and ``axes`` [F, 2] live in
    the space the map was computed in (F = d_W d_H, or k_W k_H with the projection ``sketch_sides``
    S_W, S_H), which is what :meth:`place` needs."""

    coordinates: np.ndarray
    variance: np.ndarray
    method: str
    mean: np.ndarray
    axes: np.ndarray
    sketch_sides: tuple[torch.Tensor, torch.Tensor] | None = None

    def place(self, population: Any) -> np.ndarray:
        """Map coordinates [M, 2] of M new models of the same layer (anything :func:`weight_map` reads)."""
        return self.centred(population) @ self.axes

    def centred(self, population: Any) -> np.ndarray:
        """M models of the same layer in the space the map was computed in, centred like the mapped models:
        float64 [M, F] (e.g. to rank models by their cosine with a selection's mean direction)."""
        stack = _as_map_stack(population)
        d_W, d_H = (int(np.prod(self.mean.shape)), 1) if self.sketch_sides is None else \
            (self.sketch_sides[0].shape[1], self.sketch_sides[1].shape[1])
        if stack.shape[1] * stack.shape[2] != d_W * d_H:
            raise ProbeXError(f"WeightMap: models of shape {tuple(stack.shape[1:])} are not of the mapped layer")
        features = _features(stack) if self.sketch_sides is None else _sketch(stack, self.sketch_sides)
        return features - self.mean

    def __len__(self) -> int:
        return len(self.coordinates)


def weight_map(population: Any, seed: int = 0) -> WeightMap:
    """The first two principal coordinates of N matrices (a LayerBank, MatrixStack, LoraFactors, or a
    tensor / array [N, d_W, d_H] or [N, D]); see the module docstring for how."""
    stack = _as_map_stack(population)
    n, d_W, d_H = stack.shape
    affordable = n * d_W * d_H * 8 <= EXACT_BYTES  # the float64 values, read whole (to map, or to rank by the map)
    if stack.factored and affordable and n * stack.storage.rank * max(n * stack.storage.rank * (d_W + d_H), 3 * d_W * d_H) <= EXACT_FLOPS:
        factors = stack.take()
        coordinates, variance = _from_gram(centred_gram(inner_products(factors)).numpy())
        strength = np.maximum((coordinates ** 2).sum(axis=0), 1e-30)  # the two eigenvalues
        weights = torch.from_numpy(np.vstack([np.full(n, 1.0 / n), (coordinates / strength).T]))
        mean, *axes = (part.reshape(-1).double().numpy() for part in factors.weighted_sum(weights))
        # the coordinates are centred, so sum_i c_ik (X_i - mean) / lambda_k = sum_i c_ik X_i / lambda_k
        return WeightMap(coordinates, variance, "exact", mean, np.stack(axes, axis=1))
    sides = None
    if stack.factored or not affordable:
        sides = _sketch_sides(d_W, d_H, seed)
    values = _features(stack) if sides is None else _sketch(stack, sides)
    coordinates, variance = principal_coordinates(values)
    mean = values.mean(axis=0)
    strength = np.maximum((coordinates ** 2).sum(axis=0), 1e-30)
    axes = ((values - mean).T @ coordinates) / strength
    method = "exact" if sides is None else f"random projection to {sides[0].shape[0]} x {sides[1].shape[0]}"
    return WeightMap(coordinates, variance, method, mean, axes, sides)


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


def _sketch_sides(d_W: int, d_H: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The Gaussian projections S_W [k_W, d_W] and S_H [k_H, d_H] of the random-projection map."""
    k_W, k_H = min(d_W, SKETCH_SIDE), min(d_H, SKETCH_SIDE)
    generator = torch.Generator().manual_seed(seed)
    left = torch.randn(k_W, d_W, generator=generator) / k_W ** 0.5
    right = torch.randn(k_H, d_H, generator=generator) / k_H ** 0.5
    return left, right


def _features(stack: MatrixStack) -> np.ndarray:
    """Every matrix flattened, float64 [N, d_W * d_H] (only for populations within ``EXACT_BYTES``, or a few models)."""
    n, d_W, d_H = stack.shape
    out = np.empty((n, d_W * d_H))
    for start, stop in stack.chunks():
        out[start:stop] = stack.merged(slice(start, stop)).reshape(stop - start, -1).double().numpy()
    return out


def _sketch(stack: MatrixStack, sides: tuple[torch.Tensor, torch.Tensor]) -> np.ndarray:
    """Every matrix projected to S_W X S_H^T [N, k_W * k_H] (float64), a chunk of models at a time."""
    n, d_W, d_H = stack.shape
    left, right = sides
    k_W, k_H = len(left), len(right)
    out = np.empty((n, k_W * k_H))
    step = 4096 if stack.factored else stack.chunk_rows()
    for start in range(0, n, step):
        if stack.factored:
            part = stack.take(slice(start, start + step)).sketch(left, right)
        else:
            part = left @ stack.merged(slice(start, start + step)) @ right.T
        out[start:start + len(part)] = part.reshape(len(part), -1).double().numpy()
    return out


def _as_map_stack(population: Any) -> MatrixStack:
    from probex.trees.populations import as_model_stack

    return as_model_stack(population)
