"""LoRA updates kept as their factors: X_i = s_i B_i A_i, never merged unless asked.

A LoRA layer's update is a rank-r product. ProbeX, the router and the weight map only need
what the factors give cheaply (the paper's notation, DESIGN.md "LoRA-native"):

- a probe response X U = s B (A U): r (d_W + d_H) per probe instead of d_W d_H;
- an inner product <X_1, X_2> = s_1 s_2 tr((B_1^T B_2)(A_2 A_1^T)) and a squared norm
  ||X||^2 = s^2 tr((B^T B)(A A^T)): r x r products;
- a sketch S_W X S_H^T = s (S_W B)(A S_H^T) of a random projection.

Mixed ranks are padded with zeros up to the largest (exact: a zero column of B meets a zero
row of A). At 1280 x 1280, rank 16, a model is 160 KB instead of 6.5 MB.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from probex.errors import ProbeXError

#: float32 bytes of the r x r products one block of ``inner_products`` may hold at once.
BLOCK_BYTES = 64 * 2**20


class LoraFactors:
    """N LoRA updates as factors: B [N, d_W, r], A [N, r, d_H], scale [N] (X_i = scale_i B_i A_i).

    B and A keep the dtype they were stored in (float16 files stay float16); ``merge`` and every
    computation here work in float32 or float64. Index it like a tensor (``factors[3:7]``,
    ``factors[mask]``) to get the factors of fewer models.

    Args:
        B: [N, d_W, r], the up factors.
        A: [N, r, d_H], the down factors.
        scale: [N] float32 (alpha / r per model; default ones).
    """

    def __init__(self, B: torch.Tensor, A: torch.Tensor, scale: torch.Tensor | None = None) -> None:
        if B.ndim != 3 or A.ndim != 3 or B.shape[0] != A.shape[0] or B.shape[2] != A.shape[1]:
            raise ProbeXError(f"LoraFactors: expected B [N, d_W, r] and A [N, r, d_H]; got {tuple(B.shape)} and {tuple(A.shape)}")
        if scale is None:
            scale = torch.ones(B.shape[0], dtype=torch.float32, device=B.device)
        if scale.shape != (B.shape[0],):
            raise ProbeXError(f"LoraFactors: expected one scale per model ({B.shape[0]}); got shape {tuple(scale.shape)}")
        self.B, self.A, self.scale = B, A, scale

    @property
    def shape(self) -> tuple[int, int, int]:
        """(N, d_W, d_H): the shape of the merged stack."""
        return int(self.B.shape[0]), int(self.B.shape[1]), int(self.A.shape[2])

    @property
    def rank(self) -> int:
        """r, the (padded) rank."""
        return int(self.B.shape[2])

    @property
    def dtype(self) -> torch.dtype:
        return self.B.dtype

    @property
    def device(self) -> torch.device:
        return self.B.device

    @property
    def nbytes(self) -> int:
        return sum(t.element_size() * t.numel() for t in (self.B, self.A, self.scale))

    def __len__(self) -> int:
        return int(self.B.shape[0])

    def __repr__(self) -> str:
        n, d_W, d_H = self.shape
        return f"LoraFactors(models={n}, shape=({d_W}, {d_H}), rank={self.rank}, dtype={self.dtype})"

    def __getitem__(self, index: Any) -> "LoraFactors":
        if isinstance(index, (int, np.integer)) and not isinstance(index, bool):
            index = slice(int(index), int(index) + 1 if index != -1 else None)
        if isinstance(index, np.ndarray):
            index = torch.from_numpy(index)
        return LoraFactors(self.B[index], self.A[index], self.scale[index])

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "LoraFactors":
        """The factors on ``device`` in ``dtype`` (the scale stays float32, or float64 if asked)."""
        scale_dtype = torch.float64 if dtype == torch.float64 else torch.float32
        return LoraFactors(self.B.to(device=device, dtype=dtype), self.A.to(device=device, dtype=dtype),
                           self.scale.to(device=device, dtype=scale_dtype))

    def float(self) -> "LoraFactors":
        return self.to(dtype=torch.float32)

    def merge(self, out: torch.Tensor | None = None) -> torch.Tensor:
        """The merged updates X [N, d_W, d_H] in float32. This materialises N d_W d_H values: ask for few."""
        B = self.B.float()
        if not bool((self.scale == 1).all()):  # scale the small factor, not the merged matrices
            B = B * self.scale.to(B.dtype)[:, None, None]
        return torch.bmm(B, self.A.float(), out=out)

    def squared_norms(self) -> torch.Tensor:
        """||X_i||_F^2 [N] in float64, from r x r products: s^2 tr((B^T B)(A A^T))."""
        B, A = self.B.double(), self.A.double()
        small = (B.transpose(1, 2) @ B) * (A @ A.transpose(1, 2))
        return small.sum(dim=(1, 2)) * self.scale.double() ** 2

    def weighted_sum(self, weights: torch.Tensor) -> torch.Tensor:
        """sum_i weights[t, i] X_i for each row t of ``weights`` [T, N]: [T, d_W, d_H] float32, one
        product [d_W, n r] @ [n r, d_H] per row over the models it weighs (n of them)."""
        n, d_W, d_H = self.shape
        out = torch.zeros(weights.shape[0], d_W, d_H)
        factors = self.float()
        for t, row in enumerate(weights.float()):
            used = torch.nonzero(row).flatten()
            if len(used) == 0:
                continue
            B = factors.B[used] * (row[used] * factors.scale[used])[:, None, None]  # [n, d_W, r]
            out[t] = B.transpose(0, 1).reshape(d_W, -1) @ factors.A[used].reshape(-1, d_H)
        return out

    def inner_with(self, matrices: torch.Tensor) -> torch.Tensor:
        """<X_i, M_k> [N, K] in float64 for dense matrices M [K, d_W, d_H]: s_i sum(B_i * (M_k A_i^T)),
        one product [d_W, d_H] @ [d_H, N r] per matrix (float32, summed in float64)."""
        n, d_W, d_H = self.shape
        factors = self.float()
        A = factors.A.reshape(-1, d_H)  # [N r, d_H]
        B = (factors.B * factors.scale[:, None, None]).transpose(0, 1).reshape(d_W, -1)  # [d_W, N r]
        out = torch.empty(n, len(matrices), dtype=torch.float64)
        for k, matrix in enumerate(matrices.float()):
            out[:, k] = ((matrix @ A.T) * B).double().sum(0).reshape(n, -1).sum(1)
        return out

    def response(self, U: torch.Tensor) -> torch.Tensor:
        """X U for every model [N, d_W, k], as s B (A U) (float32; differentiable in U)."""
        factors = self.float()
        return (factors.B @ (factors.A @ U)) * factors.scale[:, None, None]

    def sketch(self, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        """left X right^T for every model [N, k_W, k_H], as s (left B)(A right^T); left [k_W, d_W], right [k_H, d_H]."""
        factors = self.float()
        return (left @ factors.B) @ (factors.A @ right.T) * factors.scale[:, None, None]


def inner_products(first: LoraFactors, second: LoraFactors | None = None) -> torch.Tensor:
    """Exact <X_i, Y_j> [N1, N2] in float64 between two sets of factored updates (``second`` defaults to ``first``).

    <s B_1 A_1, t B_2 A_2> = s t sum((B_1^T B_2) * (A_1 A_2^T)): r^2 (d_W + d_H) per pair instead
    of d_W d_H, computed in blocks of models that hold at most ``BLOCK_BYTES``.
    """
    second = first if second is None else second
    if first.shape[1:] != second.shape[1:]:
        raise ProbeXError(f"inner_products: updates of shapes {first.shape[1:]} and {second.shape[1:]} do not match")
    n1, n2 = len(first), len(second)
    r1, r2 = first.rank, second.rank
    out = torch.empty(n1, n2, dtype=torch.float64)
    per_pair = 2 * r1 * r2 * 8
    step = max(1, int((BLOCK_BYTES / per_pair) ** 0.5))
    for i in range(0, n1, step):
        left = first[i:i + step].to(dtype=torch.float64)
        B1 = left.B.transpose(1, 2).reshape(-1, left.B.shape[1])  # [n r1, d_W]
        A1 = left.A.reshape(-1, left.A.shape[2])  # [n r1, d_H]
        for j in range(0, n2, step):
            right = second[j:j + step].to(dtype=torch.float64)
            B2 = right.B.transpose(1, 2).reshape(-1, right.B.shape[1])
            A2 = right.A.reshape(-1, right.A.shape[2])
            products = (B1 @ B2.T) * (A1 @ A2.T)  # [n r1, m r2]: (B_1^T B_2)_ab (A_1 A_2^T)_ab
            block = products.reshape(len(left), r1, len(right), r2).sum(dim=(1, 3))
            out[i:i + len(left), j:j + len(right)] = block * left.scale[:, None] * right.scale[None, :]
    return out


def centred_gram(gram: torch.Tensor) -> torch.Tensor:
    """H G H with H = I - 11^T / n: the Gram matrix of the rows after subtracting their mean."""
    row = gram.mean(dim=1, keepdim=True)
    return gram - row - row.T + gram.mean()
