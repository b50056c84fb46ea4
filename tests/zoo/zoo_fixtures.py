"""Builders of miniature model zoos, written into a folder exactly in the layouts probex reads.

Plain functions (no pytest): call them with a ``tmp_path``. Each returns what it wrote (ids,
splits, labels, image paths, tensors) so tests compare what the zoo reads with what is on disk.

- :func:`write_discriminative_zoo`: Model-J Sup.ViT / DINO / MAE / ResNet, the Hugging Face cache
  layout (``models--ProbeX--Model-J__MAE__model_idx_0003/refs/main``, ``blobs/``,
  ``snapshots/<rev>/model.safetensors`` as symlinks into blobs, ``config.json``,
  ``trainer_state.json`` and a real pickle ``training_args.bin``), one folder per split.
- :func:`write_generative_zoo`: Model-J SD LoRA, ``{split}/model_idx_XXXX/pytorch_lora_weights.safetensors``
  with ``training_images/``.
- :func:`write_manifest_zoo`: our ``probex_zoo.json`` layout, written by hand (not with
  probex's writer) so the reader is checked against the documented format.
- :func:`truncate_file`, :func:`write_garbage_header`, :func:`write_wrong_sizes`: corrupt files.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import struct
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file

CIFAR_SAMPLE = ["apple", "aquarium_fish", "bear", "bicycle", "castle", "lawn_mower", "maple_tree", "rocket", "tulip", "worm"]


@dataclass
class WrittenModel:
    """One model a builder wrote: what the zoo should report about it."""

    id: str
    split: str | None
    tree: str | None
    labels: list[str]
    path: Path
    tensors: dict[str, torch.Tensor]
    metadata: dict[str, str]
    images: list[Path] = field(default_factory=list)


def vit_tensors(generator: torch.Generator, width: int = 8, classes: int = 10) -> dict[str, torch.Tensor]:
    """A tiny ViT-like state dict (HF naming) with conv, linear, vector and embedding tensors."""
    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator)

    return {
        "vit.embeddings.cls_token": randn(1, 1, width),
        "vit.embeddings.position_embeddings": randn(1, 5, width),
        "vit.embeddings.patch_embeddings.projection.weight": randn(width, 3, 2, 2),
        "vit.embeddings.patch_embeddings.projection.bias": randn(width),
        "vit.encoder.layer.0.attention.attention.query.weight": randn(width, width),
        "vit.encoder.layer.0.attention.attention.query.bias": randn(width),
        "vit.encoder.layer.0.layernorm_before.weight": randn(width),
        "classifier.weight": randn(classes, width),
        "classifier.bias": randn(classes),
    }


def resnet_tensors(generator: torch.Generator, classes: int = 10) -> dict[str, torch.Tensor]:
    """A tiny ResNet-like state dict, with an integer ``num_batches_tracked`` that is not a layer."""
    return {
        "resnet.embedder.embedder.convolution.weight": torch.randn(4, 3, 3, 3, generator=generator),
        "resnet.embedder.embedder.normalization.weight": torch.randn(4, generator=generator),
        "resnet.embedder.embedder.normalization.num_batches_tracked": torch.tensor(7, dtype=torch.int64),
        "resnet.encoder.stages.0.layers.0.layer.0.convolution.weight": torch.randn(6, 4, 1, 1, generator=generator),
        "classifier.1.weight": torch.randn(classes, 6, generator=generator),
    }


#: File that appears (beside the split folders) if anything ever unpickles a training_args.bin.
UNPICKLED_MARKER = "training_args_was_unpickled"


class _Tripwire:
    """Pickles to a call that creates a marker file: loading it would leave a trace."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _blob(repo: Path, content: bytes) -> Path:
    blob = repo / "blobs" / hashlib.sha256(content).hexdigest()
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(content)
    return blob


def _link_into_snapshot(snapshot: Path, name: str, blob: Path) -> Path:
    link = snapshot / name
    link.symlink_to(os.path.relpath(blob, snapshot))
    return link


def write_discriminative_zoo(
    root: Path,
    splits: dict[str, int] | None = None,
    subset: str = "MAE",
    first_index: int = 0,
    seed: int = 0,
) -> list[WrittenModel]:
    """Model-J discriminative repos in the Hugging Face cache layout: ``root/{split}/models--ProbeX--Model-J__{subset}__model_idx_XXXX``."""
    splits = splits or {"train": 3, "val": 1, "test": 2}
    generator = torch.Generator().manual_seed(seed)
    written = []
    index = first_index
    for split, count in splits.items():
        for _ in range(count):
            model_id = f"model_idx_{index:04d}"
            repo = root / split / f"models--ProbeX--Model-J__{subset}__{model_id}"
            revision = hashlib.sha1(f"{subset}{model_id}".encode()).hexdigest()
            snapshot = repo / "snapshots" / revision
            snapshot.mkdir(parents=True)
            (repo / "refs").mkdir()
            (repo / "refs" / "main").write_text(revision)  # the Hub writes the hash with no newline
            tensors = resnet_tensors(generator) if subset == "ResNet" else vit_tensors(generator)
            labels = [CIFAR_SAMPLE[(index + k) % len(CIFAR_SAMPLE)] for k in range(3)]
            metadata = {
                "dataset_chosen_targets": repr(labels),
                "lr": "0.0001",
                "epochs": "10",
                "seed": str(index),
                "model_name": subset,
            }
            staging = root / f".staging-{model_id}.safetensors"
            save_file(tensors, str(staging), metadata=metadata)
            blob = _blob(repo, staging.read_bytes())
            staging.unlink()
            path = _link_into_snapshot(snapshot, "model.safetensors", blob)
            config = {"architectures": ["ViTForImageClassification"], "id2label": {str(i): f"LABEL_{i}" for i in range(10)}}
            _link_into_snapshot(snapshot, "config.json", _blob(repo, json.dumps(config).encode()))
            _link_into_snapshot(snapshot, "trainer_state.json", _blob(repo, json.dumps({"epoch": 10.0, "log_history": []}).encode()))
            # a real pickle, as the Hub repos ship; this one leaves a marker if anything loads it
            tripwire = pickle.dumps({"learning_rate": 1e-4, "output_dir": _Tripwire(root / UNPICKLED_MARKER)})
            _link_into_snapshot(snapshot, "training_args.bin", _blob(repo, tripwire))
            written.append(WrittenModel(model_id, split, subset, labels, path, tensors, metadata))
            index += 1
    return written


# newer diffusers style (as Model-J ships) and the older attention-processor style
GENERATIVE_MODULES = [
    ("unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1", "to_q", 8),
    ("unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1", "to_out", 8),
    ("unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2", "to_q", 8),
    ("unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2", "to_k", 6),  # cross-attention: text width 6
    ("unet.mid_block.attentions.0.transformer_blocks.0.attn2", "to_v", 6),
]


def lora_keys(module: str, projection: str, style: str) -> tuple[str, str, str]:
    """(normalised module name, down key, up key) of one LoRA pair in a diffusers style."""
    target = f"{module}.{'to_out.0' if projection == 'to_out' else projection}"
    if style == "processor":
        prefix = f"{module}.processor.{projection}_lora"
        return target, f"{prefix}.down.weight", f"{prefix}.up.weight"
    return target, f"{target}.lora.down.weight", f"{target}.lora.up.weight"


def write_generative_zoo(
    root: Path,
    splits: dict[str, int] | None = None,
    style: str = "diffusers",
    images_per_model: int = 2,
    rank: int = 2,
    seed: int = 0,
) -> list[WrittenModel]:
    """Model-J generative LoRA models: ``root/{split}/model_idx_XXXX/pytorch_lora_weights.safetensors`` + ``training_images/``.

    Class ids alternate between an index (``"207"``) and a synset id (``"n01440764"``).
    """
    from PIL import Image

    splits = splits or {"train": 3, "val": 1, "test": 1, "val_holdout": 1, "test_holdout": 1}
    generator = torch.Generator().manual_seed(seed)
    class_ids = [("207", "golden retriever"), ("n01440764", "tench"), ("963", "pizza"), ("n02504458", "African elephant")]
    written = []
    index = 0
    for split, count in splits.items():
        for _ in range(count):
            model_id = f"model_idx_{index:04d}"
            folder = root / split / model_id
            (folder / "training_images").mkdir(parents=True)
            tensors = {}
            for module, projection, width in GENERATIVE_MODULES:
                _, down, up = lora_keys(module, projection, style)
                tensors[down] = torch.randn(rank, width, generator=generator)
                tensors[up] = torch.randn(8, rank, generator=generator)
            class_id, name = class_ids[index % len(class_ids)]
            metadata = {"imagenet_class_id": class_id, "rank": str(rank), "learning_rate": "0.0001", "seed": str(index)}
            path = folder / "pytorch_lora_weights.safetensors"
            save_file(tensors, str(path), metadata=metadata)
            images = []
            for k in range(images_per_model):
                image = folder / "training_images" / f"{k:03d}.png"
                Image.new("RGB", (4, 4), (index * 10 % 256, k * 40, 0)).save(image)
                images.append(image)
            (folder / "training_images" / "notes.txt").write_text("not an image")
            written.append(WrittenModel(model_id, split, None, [name], path, tensors, metadata, images))
            index += 1
    return written


def manifest_tensors(generator: torch.Generator, width: int = 4) -> dict[str, torch.Tensor]:
    """A very small model: one linear layer, its bias, one conv kernel."""
    return {
        "stem.weight": torch.randn(width, 2, 3, 3, generator=generator),
        "block.fc.weight": torch.randn(width, width, generator=generator),
        "block.fc.bias": torch.randn(width, generator=generator),
    }


def write_manifest_zoo(
    root: Path,
    n_models: int = 6,
    trees: tuple[str, ...] = ("vit-a", "vit-b"),
    splits: tuple[str, ...] = ("train", "train", "val", "test"),
    images_per_model: int = 1,
    seed: int = 0,
    width: int = 4,
) -> list[WrittenModel]:
    """Our manifest layout: ``probex_zoo.json`` plus ``models/<name>/model.safetensors`` (+ ``training_images/``)."""
    generator = torch.Generator().manual_seed(seed)
    concepts = ["red circle", "blue square", "green star", "yellow moon", "pink heart"]
    written, entries = [], []
    for index in range(n_models):
        tree = trees[index % len(trees)]
        split = splits[index % len(splits)]
        model_id = f"{tree}/ft-{index:04d}"
        folder = root / "models" / f"{tree}-ft-{index:04d}"
        folder.mkdir(parents=True)
        labels = [concepts[index % len(concepts)], concepts[(index + 2) % len(concepts)]]
        metadata = {"lr": "0.001", "epochs": "5"}
        tensors = manifest_tensors(generator, width)
        file_metadata = {"id": model_id, "split": split, "tree": tree, "labels": json.dumps(labels), **metadata}
        path = folder / "model.safetensors"
        save_file(tensors, str(path), metadata=file_metadata)
        images = []
        if images_per_model:
            (folder / "training_images").mkdir()
            for k in range(images_per_model):
                image = folder / "training_images" / f"{k}.jpg"
                image.write_bytes(b"\xff\xd8\xff\xe0 tiny jpeg stand-in")
                images.append(image)
        entries.append(
            {
                "id": model_id,
                "path": f"models/{folder.name}/model.safetensors",
                "split": split,
                "tree": tree,
                "labels": labels,
                "metadata": metadata,
                "images": f"models/{folder.name}/training_images" if images_per_model else None,
            }
        )
        written.append(WrittenModel(model_id, split, tree, labels, path, tensors, metadata, images))
    manifest = {"format": "probex-zoo", "version": 1, "name": "mini", "description": "a test zoo", "models": entries}
    (root / "probex_zoo.json").write_text(json.dumps(manifest, indent=1))
    return written


# ------------------------------------------------------------------------------------------
# corrupt files


def truncate_file(path: Path, cut: int = 16) -> None:
    """Cut the last ``cut`` bytes off a file: the header is intact, the last tensor runs past the end."""
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[:-cut])


def write_garbage_header(path: Path) -> None:
    """A plausible header length followed by bytes that are not JSON."""
    Path(path).write_bytes(struct.pack("<Q", 64) + bytes(range(200, 256)) * 2 + b"\x00" * 64)


def write_wrong_sizes(path: Path) -> None:
    """A well-formed header whose tensor shape does not match its byte range (12 floats in 40 bytes)."""
    header = json.dumps({"block.fc.weight": {"dtype": "F32", "shape": [4, 3], "data_offsets": [0, 40]}}).encode()
    Path(path).write_bytes(struct.pack("<Q", len(header)) + header + b"\x00" * 40)
