"""The router's reads of a LoRA population straight from its factors: sums and distances, no merged rows.

A population of LoRA updates X_i = s_i B_i A_i (a factored MatrixStack) gives what the router
needs through matrix products over its factors, in chunks of models of bounded size:

- weighted sums (tree means, cell sums): sum_i w_i X_i = [w_i s_i B_i]_i [d_W, n r] @ [A_i]_i
  [n r, d_H], one product per tree or cell;
- l2 distances to other LoRA updates Y_k (an upload): ||X_i||^2 - 2 <X_i, Y_k> + ||Y_k||^2, all
  from r x r products (:func:`probex.zoo.factored.inner_products`), r^2 (d_W + d_H) per pair;
- l2 distances to dense centres: ||X_i - C||^2 = ||X_i||^2 - 2 <X_i, C> + ||C||^2, the norm from
  r x r products and <X_i, C> = s_i sum(B_i * (C A_i^T)) from one product [d_W, d_H] @
  [d_H, n r] per centre. A distance whose float32 cancellation could pass 1e-4 (a model very
  near a centre, both far from the origin) is measured again from the merged difference.

Both cost N r d_W d_H per tree or centre, as merging would, but as large matrix products rather
than a write and three reads of every merged matrix (about 2.6 times less CPU time measured
for two centres at 1280 x 1280, rank 16).
"""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np
import torch

from probex.zoo.factored import LoraFactors, inner_products
from probex.zoo.stack import CHUNK_BYTES, MatrixStack

# float32 products err by <~1e-6 of the norms; redo a distance whose cancellation could exceed 1e-4
_CANCELLATION_GUARD = 1e-4 / 1e-6
_CANCELLATION_GUARD_FLOAT64 = 1e-4 / 1e-12  # the same for float64 products (inner_products, squared_norms)


def factor_chunks(stack: MatrixStack, rows: np.ndarray) -> Iterator[tuple[int, LoraFactors]]:
    """(offset into ``rows``, float32 factors of those models) for the models ``rows`` of a factored stack,
    in chunks whose products [d_W, n r] hold at most ``CHUNK_BYTES``."""
    _, d_W, d_H = stack.shape
    step = max(1, CHUNK_BYTES // (4 * max(d_W, d_H) * stack.storage.rank * 2))
    absolute = stack.rows(rows)
    for start in range(0, len(rows), step):
        index = torch.from_numpy(np.ascontiguousarray(absolute[start:start + step]))
        yield start, stack.storage[index].float()


def factored_sums(stack: MatrixStack, rows: np.ndarray, weights: torch.Tensor) -> torch.Tensor:
    """sum_i weights[t, i] X_{rows[i]} for each row t of ``weights`` [T, len(rows)]: float64 [T, D]."""
    _, d_W, d_H = stack.shape
    sums = torch.zeros(weights.shape[0], d_W * d_H, dtype=torch.float64)
    for start, part in factor_chunks(stack, rows):
        chunk_weights = weights[:, start:start + len(part)]
        used = torch.nonzero(chunk_weights.abs().sum(1)).flatten()
        if len(used):
            sums[used] += part.weighted_sum(chunk_weights[used]).reshape(len(used), -1).double()
    return sums


def factored_l2(stack: MatrixStack, centres: torch.Tensor, rows: np.ndarray) -> np.ndarray:
    """Exact l2 distances [len(rows), K] from the models ``rows`` of a factored stack to ``centres`` [K, D]."""
    _, d_W, d_H = stack.shape
    matrices = centres.reshape(len(centres), d_W, d_H)
    return _l2_by_products(stack, rows, centres.double().pow(2).sum(1), lambda part: part.inner_with(matrices),
                           centres.float, _CANCELLATION_GUARD)


def factored_l2_to_factors(stack: MatrixStack, others: LoraFactors, rows: np.ndarray) -> np.ndarray:
    """Exact l2 distances [len(rows), M] from the models ``rows`` of a factored stack to M other LoRA updates
    of the same shape, through r x r products in float64 (merged only where even float64 could lose the
    distance: a model all but identical to another)."""
    others = others.float()
    return _l2_by_products(stack, rows, others.squared_norms(), lambda part: inner_products(part, others),
                           lambda: others.merge().reshape(len(others), -1), _CANCELLATION_GUARD_FLOAT64)


def _l2_by_products(stack: MatrixStack, rows: np.ndarray, other_norms: torch.Tensor,
                    inner: Callable[[LoraFactors], torch.Tensor], others_merged: Callable[[], torch.Tensor],
                    guard: float) -> np.ndarray:
    """||X_i - Y_k|| [len(rows), K] as sqrt(||X_i||^2 - 2 <X_i, Y_k> + ||Y_k||^2), ``inner`` giving <X_i, Y_k> of a
    chunk of factors; a distance whose cancellation could pass 1e-4 (by ``guard``) is measured again from the
    merged matrices (``others_merged()``: the Y_k flattened, float32 [K, D])."""
    out = np.empty((len(rows), len(other_norms)))
    for start, part in factor_chunks(stack, rows):
        norms = part.squared_norms()
        squared = norms[:, None] + other_norms[None, :] - 2.0 * inner(part)
        risky = (norms[:, None] + other_norms[None, :]) > guard * squared
        if risky.any():
            redo = torch.nonzero(risky.any(1)).flatten()
            merged = part[redo].merge().reshape(len(redo), -1)
            exact = torch.cdist(merged, others_merged(), compute_mode="donot_use_mm_for_euclid_dist")
            squared[redo] = exact.double().pow(2)
        out[start:start + len(part)] = squared.clamp(min=0.0).sqrt().numpy()
    return out
