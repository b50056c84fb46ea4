"""Synthetic populations of weight matrices for the tests: a Model Tree and a forest.

Tree: every model is the SAME root plus, for each class it was "trained on", that class's
low-rank update (scaled by a per-model strength, like a learning rate), plus noise.
Forest: the same construction, but every model has its OWN random root, and the hidden units
on both sides of the layer are permuted per model (the classical nuisances), so class
signatures do not line up across models.

``write_layer_bank`` turns any such tensor into a real LayerBank, read by a ModelZoo from
safetensors files written for the test.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from probex.zoo import LayerBank


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


def write_layer_bank(
    X: torch.Tensor,
    layer: str = "fc.weight",
    *,
    ids: list[str] | None = None,
    labels: list[list[str]] | None = None,
    trees: list[str | None] | None = None,
    root: Path | None = None,
) -> "LayerBank":
    """A real LayerBank of X [N, d_W, d_H]: one safetensors file per model and a manifest are
    written under ``root`` (default: a fresh temporary folder, removed when the tests end), and a
    ModelZoo reads the layer back."""
    from probex.zoo import ModelZoo
    from probex.zoo.manifest import save_model_file, write_manifest
    from probex.zoo.records import ModelRecord

    if root is None:
        root = Path(tempfile.mkdtemp(prefix="probex-test-bank-"))
        atexit.register(shutil.rmtree, root, ignore_errors=True)
    ids = ids if ids is not None else [f"model_{i:04d}" for i in range(X.shape[0])]
    records = []
    for i, model_id in enumerate(ids):
        model_labels = labels[i] if labels is not None else []
        tree = trees[i] if trees is not None else None
        path = save_model_file(root / "models" / f"{model_id}.safetensors", {layer: X[i].contiguous().clone()},
                               id=model_id, tree=tree, labels=model_labels)
        records.append(ModelRecord(id=model_id, path=path, tree=tree, labels=list(model_labels)))
    write_manifest(root, records, name=root.name)
    return ModelZoo.open(root).bank(layer)
