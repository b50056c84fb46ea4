"""Model-J checkpoints with the real architectures' tensor names, written in the exact Hub layouts.

The names and the kernel sizes are those of the real models (Transformers ``ViTForImageClassification``
ViT-B/16 and ``ResNetForImageClassification`` ResNet-101 as Model-J stores them, and the 128
diffusers LoRA pairs of a Stable Diffusion 1.x UNet); only the channel counts are small, so the
files stay tiny. Plain functions: call them with a ``tmp_path``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from safetensors.torch import save_file
from zoo_fixtures import _blob, _link_into_snapshot

RESNET101_DEPTHS = (3, 4, 23, 3)


def vit_b16_tensors(generator: torch.Generator, width: int = 8, mlp: int = 16, tokens: int = 5, classes: int = 10) -> dict[str, torch.Tensor]:
    """Every tensor of a Transformers ViT-B/16 classifier (12 layers), with ``width`` channels."""
    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator)

    tensors = {
        "vit.embeddings.cls_token": randn(1, 1, width),
        "vit.embeddings.position_embeddings": randn(1, tokens, width),
        "vit.embeddings.patch_embeddings.projection.weight": randn(width, 3, 16, 16),
        "vit.embeddings.patch_embeddings.projection.bias": randn(width),
    }
    for layer in range(12):
        prefix = f"vit.encoder.layer.{layer}"
        for projection in ("query", "key", "value"):
            tensors[f"{prefix}.attention.attention.{projection}.weight"] = randn(width, width)
            tensors[f"{prefix}.attention.attention.{projection}.bias"] = randn(width)
        tensors[f"{prefix}.attention.output.dense.weight"] = randn(width, width)
        tensors[f"{prefix}.attention.output.dense.bias"] = randn(width)
        tensors[f"{prefix}.intermediate.dense.weight"] = randn(mlp, width)
        tensors[f"{prefix}.intermediate.dense.bias"] = randn(mlp)
        tensors[f"{prefix}.output.dense.weight"] = randn(width, mlp)
        tensors[f"{prefix}.output.dense.bias"] = randn(width)
        for norm in ("layernorm_before", "layernorm_after"):
            tensors[f"{prefix}.{norm}.weight"] = randn(width)
            tensors[f"{prefix}.{norm}.bias"] = randn(width)
    tensors["vit.layernorm.weight"] = randn(width)
    tensors["vit.layernorm.bias"] = randn(width)
    tensors["classifier.weight"] = randn(classes, width)
    tensors["classifier.bias"] = randn(classes)
    return tensors


def resnet101_tensors(generator: torch.Generator, stem: int = 4, classes: int = 10) -> dict[str, torch.Tensor]:
    """Every tensor of a Transformers ResNet-101 classifier: 7x7 stem, bottlenecks (1x1, 3x3, 1x1), shortcuts, BN."""
    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator)

    def conv_bn(prefix: str, out: int, inp: int, kernel: int) -> None:
        tensors[f"{prefix}.convolution.weight"] = randn(out, inp, kernel, kernel)
        tensors[f"{prefix}.normalization.weight"] = randn(out)
        tensors[f"{prefix}.normalization.bias"] = randn(out)
        tensors[f"{prefix}.normalization.running_mean"] = randn(out)
        tensors[f"{prefix}.normalization.running_var"] = randn(out).abs()
        tensors[f"{prefix}.normalization.num_batches_tracked"] = torch.tensor(100, dtype=torch.int64)

    tensors: dict[str, torch.Tensor] = {}
    conv_bn("resnet.embedder.embedder", stem, 3, 7)
    channels = stem
    for stage, depth in enumerate(RESNET101_DEPTHS):
        reduced, out = stem * 2**stage, stem * 4 * 2**stage
        for block in range(depth):
            prefix = f"resnet.encoder.stages.{stage}.layers.{block}"
            if block == 0:
                conv_bn(f"{prefix}.shortcut", out, channels, 1)
            conv_bn(f"{prefix}.layer.0", reduced, channels, 1)
            conv_bn(f"{prefix}.layer.1", reduced, reduced, 3)
            conv_bn(f"{prefix}.layer.2", out, reduced, 1)
            channels = out
    tensors["classifier.1.weight"] = randn(classes, channels)
    tensors["classifier.1.bias"] = randn(classes)
    return tensors


def sd_unet_lora_tensors(generator: torch.Generator, rank: int = 2) -> dict[str, torch.Tensor]:
    """The 128 LoRA pairs (``….lora.down.weight`` / ``.lora.up.weight``) of a Stable Diffusion 1.x UNet."""
    blocks = [(f"unet.down_blocks.{b}.attentions.{a}", 4 * 2**b) for b in range(3) for a in range(2)]
    blocks.append(("unet.mid_block.attentions.0", 16))
    blocks += [(f"unet.up_blocks.{b}.attentions.{a}", 16 // 2 ** (b - 1)) for b in (1, 2, 3) for a in range(3)]
    tensors = {}
    for block, width in blocks:
        for attention in ("attn1", "attn2"):
            for projection in ("to_q", "to_k", "to_v", "to_out.0"):
                module = f"{block}.transformer_blocks.0.{attention}.{projection}"
                inputs = 6 if attention == "attn2" and projection in ("to_k", "to_v") else width  # text width
                tensors[f"{module}.lora.down.weight"] = torch.randn(rank, inputs, generator=generator)
                tensors[f"{module}.lora.up.weight"] = torch.randn(width, rank, generator=generator)
    return tensors


def write_modelj_repo(root: Path, split: str, subset: str, index: int, tensors: dict[str, torch.Tensor]) -> Path:
    """One Model-J discriminative model in the Hugging Face cache layout; returns its model.safetensors."""
    model_id = f"model_idx_{index:04d}"
    repo = root / split / f"models--ProbeX--Model-J__{subset}__{model_id}"
    revision = hashlib.sha1(f"{subset}{model_id}".encode()).hexdigest()
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    staging = root / f".staging-{subset}-{model_id}.safetensors"
    save_file(tensors, str(staging), metadata={"dataset_chosen_targets": "['apple', 'bee']", "model_name": subset})
    blob = _blob(repo, staging.read_bytes())
    staging.unlink()
    return _link_into_snapshot(snapshot, "model.safetensors", blob)


def write_sd_model(root: Path, split: str, index: int, tensors: dict[str, torch.Tensor], class_id: str = "n01440764") -> Path:
    """One Model-J generative model: ``root/{split}/model_idx_XXXX/pytorch_lora_weights.safetensors``."""
    folder = root / split / f"model_idx_{index:04d}"
    folder.mkdir(parents=True)
    path = folder / "pytorch_lora_weights.safetensors"
    save_file(tensors, str(path), metadata={"imagenet_class_id": class_id, "rank": "2"})
    return path
