"""A small zoo of LoRA models written with probex's own writers, for the factored-bank tests.

Each model holds diffusers-style LoRA pairs (``<module>.lora.down.weight`` [r, d_H] and
``.lora.up.weight`` [d_W, r]) of mixed ranks and a ``lora_alpha`` in its metadata (so each
model has its own scale alpha / r). Trees differ by a shared low-rank update; a model's concept
adds its own direction, so experts have something to learn.
"""

from __future__ import annotations

from pathlib import Path

import torch

from probex.zoo.manifest import save_model_file, write_manifest
from probex.zoo.records import ModelRecord

CONCEPTS = ["red circle", "blue square", "green star", "yellow moon", "pink heart", "grey cloud"]
# larger than probex.experts.nn.MERGE_MAX_VALUES, so that ProbeX reads them as factors
LAYERS = {"unet.down.attn.to_q": (48, 96), "unet.mid.attn.to_k": (40, 120)}


def write_lora_zoo(root: Path, n_models: int = 48, ranks: tuple[int, ...] = (2, 4, 3), trees: tuple[str, ...] = ("sd-a", "sd-b"),
                   splits: tuple[str, ...] = ("train", "train", "train", "val", "test"), dtype: torch.dtype = torch.float32,
                   layers: dict[str, tuple[int, int]] | None = None, seed: int = 0) -> list[ModelRecord]:
    """Write ``n_models`` LoRA models and a manifest under ``root``; returns their records (as written)."""
    layers = LAYERS if layers is None else layers
    generator = torch.Generator().manual_seed(seed)
    roots = {tree: {name: (torch.randn(d_W, 2, generator=generator) * 2, torch.randn(2, d_H, generator=generator))
                    for name, (d_W, d_H) in layers.items()} for tree in trees}
    directions = {concept: {name: torch.randn(d_W, generator=generator) for name, (d_W, _) in layers.items()}
                  for concept in CONCEPTS}
    records = []
    for index in range(n_models):
        tree, split = trees[index % len(trees)], splits[index % len(splits)]
        concept = CONCEPTS[(index // len(trees)) % len(CONCEPTS)]
        rank = ranks[index % len(ranks)]
        tensors = {}
        for name, (d_W, d_H) in layers.items():
            B0, A0 = roots[tree][name]
            up = torch.randn(d_W, rank, generator=generator) * 0.3
            down = torch.randn(rank, d_H, generator=generator) * 0.3
            up[:, :2 if rank >= 2 else 1] += B0[:, :2 if rank >= 2 else 1]
            down[:2 if rank >= 2 else 1] += A0[:2 if rank >= 2 else 1]
            up[:, 0] += directions[concept][name]
            tensors[f"{name}.lora.down.weight"] = down.to(dtype)
            tensors[f"{name}.lora.up.weight"] = up.to(dtype)
        model_id = f"{tree}/model_{index:04d}"
        path = root / "models" / f"{tree}-{index:04d}.safetensors"
        metadata = {"lora_alpha": str(float(rank + index % 3)), "rank": str(rank)}
        save_model_file(path, tensors, id=model_id, split=split, tree=tree, labels=[concept], metadata=metadata)
        records.append(ModelRecord(id=model_id, path=path, split=split, tree=tree, labels=[concept], metadata=metadata))
    write_manifest(root, records, name="lora test zoo")
    return records


def split_banks(tmp_path_factory, layers: list[str], n_models: int = 60) -> dict[str, list]:
    """A LoRA zoo of ``n_models`` written to a fresh folder: split -> its banks of ``layers`` (train, val, test)."""
    from probex.zoo import ModelZoo

    root = tmp_path_factory.mktemp("lora")
    write_lora_zoo(root, n_models=n_models)
    zoo = ModelZoo.open(root)
    cache = tmp_path_factory.mktemp("cache")
    return {split: [zoo.bank(layer, split=split, cache=cache) for layer in layers] for split in ("train", "val", "test")}


def merged_update(path: Path, layer: str, alpha: float) -> torch.Tensor:
    """The merged update alpha / r * up @ down of one layer, read straight from the file (float64)."""
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    up, down = tensors[f"{layer}.lora.up.weight"].double(), tensors[f"{layer}.lora.down.weight"].double()
    return (alpha / down.shape[0]) * up @ down
