"""Synthetic populations of weight matrices for the tests: a Model Tree and a forest.

Tree: every model is the SAME root plus, for each class it was "trained on", that class's
low-rank update (scaled by a per-model strength, like a learning rate), plus noise.
Forest: the same construction, but every model has its OWN random root, and the hidden units
on both sides of the layer are permuted per model (the classical nuisances), so class
signatures do not line up across models.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Population:
    X: torch.Tensor  # [N, d_W, d_H]
    Y: torch.Tensor  # [N, n_classes] 0/1

    def split(self, *sizes: int) -> list["Population"]:
        parts, start = [], 0
        for size in sizes:
            parts.append(Population(self.X[start : start + size], self.Y[start : start + size]))
            start += size
        return parts


def make_population(
    n_models: int,
    kind: str = "tree",
    d_W: int = 32,
    d_H: int = 24,
    n_classes: int = 8,
    rank: int = 2,
    noise: float = 0.5,
    seed: int = 0,
) -> Population:
    generator = torch.Generator().manual_seed(seed)
    # class updates are shared knowledge (like the data), fixed across seeds of populations
    classes = torch.Generator().manual_seed(1234)
    A = torch.randn(n_classes, d_W, rank, generator=classes)
    B = torch.randn(n_classes, rank, d_H, generator=classes)
    updates = A @ B / rank**0.5  # [C, d_W, d_H]
    root = torch.randn(d_W, d_H, generator=torch.Generator().manual_seed(99)) * 2.0
    Y = (torch.rand(n_models, n_classes, generator=generator) < 0.5).float()
    strength = 0.5 + torch.rand(n_models, 1, 1, generator=generator)
    X = torch.einsum("nc,cij->nij", Y, updates) * strength
    X += noise * torch.randn(n_models, d_W, d_H, generator=generator)
    if kind == "tree":
        X += root
    elif kind == "forest":
        X += 2.0 * torch.randn(n_models, d_W, d_H, generator=generator)
        for i in range(n_models):
            rows = torch.randperm(d_W, generator=generator)
            cols = torch.randperm(d_H, generator=generator)
            X[i] = X[i][rows][:, cols]
    else:
        raise ValueError(kind)
    return Population(X, Y)
