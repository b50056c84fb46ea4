"""Model-J-sized zoos in the exact Model-J layouts, with a learnable signal, for bench_scale.py.

Generative (SD_200 / SD_1k), as ``ProbeX/Model-J__SD_200`` holds it::

    ROOT/Model-J__SD_200/{split}/model_idx_XXXX/pytorch_lora_weights.safetensors
    ROOT/Model-J__SD_200/{split}/model_idx_XXXX/training_images/000.png

Each file holds rank-16 LoRA factors of Stable Diffusion 1.x UNet attention projections under
their diffusers names (``unet.….attn2.to_q.lora.down.weight`` [16, in], ``.lora.up.weight``
[out, 16]), float32 as diffusers' LoRA training scripts save them (the trainable LoRA
parameters are kept in float32 under mixed precision), metadata ``imagenet_class_id`` (an
index 0..999) and the run's hyperparameters. SD 1.x widths: 320 / 640 / 1280 channels in
down_blocks 0 / 1 / 2 (up_blocks 3 / 2 / 1), 1280 in the mid block; cross-attention
``attn2.to_k`` / ``to_v`` read the 768-d CLIP text states. The full UNet has 128 such modules
(12.8 MB a model); to keep 5k and 20k zoos on a shared disk a file holds a subset
(:data:`SD_SUBSETS`), always with the paper's layer
``unet.down_blocks.2.attentions.1.transformer_blocks.0.attn2.to_q`` (1280 x 1280 merged).
Splits: each in-distribution class's models go 70/10/20 to train/val/test; the held-out
classes' models 1/3 to val_holdout and 2/3 to test_holdout (as the demo jungle does).

Signal: model i of class c holds ``B_i = s_i (B_0 + sum_k t_ck B_k) + noise``,
``A_i = A_0 + noise``, both turned by a random r x r rotation (``B_i R_i``, ``R_i^T A_i``: the
product is unchanged, the factors are not, as with LoRA's random initialisation). ``t_c`` is a
32-d random projection of the class prompt's MiniLM embedding, so a class's weights follow
its name: in-distribution and zero-shot accuracies above chance mean something.

Discriminative (ViT-B-shaped, Model-J Sup.ViT) in the Hugging Face cache layout::

    ROOT/{split}/models--ProbeX--Model-J__SupViT__model_idx_XXXX/refs/main
    ROOT/{split}/models--ProbeX--Model-J__SupViT__model_idx_XXXX/snapshots/<rev>/model.safetensors -> ../../blobs/<sha256>
        config.json, trainer_state.json, training_args.bin (a small pickle: never loaded)

``model.safetensors`` holds float16 768 x 768 attention weights of a few encoder layers
(:data:`VIT_LAYERS`, among them the paper's layers 59 and 64), their biases and the
classification head; metadata ``dataset_chosen_targets`` (a Python-literal list of CIFAR-100
names) and hyperparameters. Weights: a shared root plus, for each chosen class, that class's
rank-1 update scaled by the model's strength, plus noise (as tests/synthetic.py builds trees).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

PAPER_LAYER = "unet.down_blocks.2.attentions.1.transformer_blocks.0.attn2.to_q"
TEXT_WIDTH = 768  # CLIP ViT-L/14 text states, read by cross-attention to_k / to_v
RANK = 16
SIGNAL_DIM = 32


def sd15_lora_modules() -> list[tuple[str, int, int]]:
    """(module, in_features, out_features) of every attention projection of the SD 1.x UNet, sorted by name."""
    blocks = [(f"down_blocks.{b}.attentions.{a}", width) for b, width in enumerate((320, 640, 1280)) for a in range(2)]
    blocks.append(("mid_block.attentions.0", 1280))
    blocks += [(f"up_blocks.{b}.attentions.{a}", width) for b, width in zip((1, 2, 3), (1280, 640, 320)) for a in range(3)]
    modules = []
    for block, width in blocks:
        for attention in ("attn1", "attn2"):
            for projection in ("to_q", "to_k", "to_v", "to_out.0"):
                reads_text = attention == "attn2" and projection in ("to_k", "to_v")
                modules.append((f"unet.{block}.transformer_blocks.0.{attention}.{projection}", TEXT_WIDTH if reads_text else width, width))
    return sorted(modules)


_BLOCK = "unet.down_blocks.2.attentions.1.transformer_blocks.0"
_OTHERS = [
    "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q",      # 320 x 320
    "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k",      # 320 x 768 (text)
    "unet.mid_block.attentions.0.transformer_blocks.0.attn2.to_v",          # 1280 x 768 (text)
    "unet.up_blocks.3.attentions.2.transformer_blocks.0.attn1.to_out.0",    # 320 x 320
]
#: Which UNet modules a file holds. ``attn2``: the paper's cross-attention block (to_q, to_k, to_v,
#: to_out.0) and four others (0.87 MB a model); ``minimal``: the paper's layer and two small ones
#: (0.27 MB); ``tiny``: two 320-wide modules only (tests); ``all``: the whole UNet (12.8 MB).
SD_SUBSETS = {
    "attn2": [f"{_BLOCK}.attn2.{p}" for p in ("to_q", "to_k", "to_v", "to_out.0")] + _OTHERS,
    "minimal": [PAPER_LAYER] + _OTHERS[:2],
    "tiny": _OTHERS[:2],
    "all": None,
}

SD_HYPERPARAMETERS = {"pretrained_model_name_or_path": "runwayml/stable-diffusion-v1-5", "rank": str(RANK),
                      "resolution": "512", "train_batch_size": "1", "mixed_precision": "fp16"}


@dataclass
class ZooSummary:
    """What a generator wrote: where, how many models per split, which classes, and its size on disk."""

    root: Path
    splits: dict[str, int]
    classes: list[str]
    held_out: list[str]
    layers: list[str]
    bytes: int
    seconds: float = 0.0

    def to_json(self) -> dict:
        return {"root": str(self.root), "splits": self.splits, "classes": len(self.classes), "held_out": len(self.held_out),
                "layers": self.layers, "gigabytes": round(self.bytes / 1e9, 3), "seconds": round(self.seconds, 1)}


def _unique_imagenet_classes(count: int) -> list[tuple[int, str]]:
    """``count`` ImageNet-1k classes spread over the table, skipping names two classes share."""
    from probex.zoo.classnames import imagenet_classes

    table = imagenet_classes()
    names = [item.name for item in table]
    unique = [item for item in table if names.count(item.name) == 1]
    if count > len(unique):
        raise ValueError(f"at most {len(unique)} ImageNet classes with unique names; asked for {count}")
    picks = np.linspace(0, len(unique) - 1, count).round().astype(int)
    return [(unique[i].index, unique[i].name) for i in picks]


def _class_signals(names: list[str], seed: int) -> np.ndarray:
    """[C, SIGNAL_DIM] unit vectors: a random projection of each class prompt's (centred) MiniLM embedding."""
    from probex.language.text import class_prompts, load_text_encoder

    embeddings = load_text_encoder("minilm", device="cpu").encode(class_prompts(names)).numpy().astype(np.float64)
    embeddings -= embeddings.mean(axis=0)
    projection = np.random.default_rng([seed, 7]).standard_normal((embeddings.shape[1], SIGNAL_DIM))
    signals = embeddings @ projection
    return (signals / np.linalg.norm(signals, axis=1, keepdims=True)).astype(np.float32)


def _assign_splits(n_models: int, n_classes: int, n_held_out: int, seed: int) -> list[tuple[int, str]]:
    """(class position, split) of each model: classes round-robin, each class's models split as the module says."""
    rng = np.random.default_rng([seed, 1])
    held_out = set(rng.choice(n_classes, n_held_out, replace=False).tolist())
    per_class: dict[int, int] = {}
    assigned = []
    counts = np.bincount(np.arange(n_models) % n_classes, minlength=n_classes)
    for model in range(n_models):
        c = model % n_classes
        k, total = per_class.get(c, 0), int(counts[c])
        per_class[c] = k + 1
        if c in held_out:
            split = "val_holdout" if k < max(1, round(total / 3)) else "test_holdout"
        else:
            n_val, n_test = max(1, round(total * 0.1)), max(1, round(total * 0.2))
            split = "test" if k < n_test else "val" if k < n_test + n_val else "train"
        assigned.append((c, split))
    return assigned


def _orthogonal(rng: np.random.Generator, m: int, r: int) -> np.ndarray:
    q, upper = np.linalg.qr(rng.standard_normal((m, r, r)))
    return q * np.sign(np.diagonal(upper, axis1=1, axis2=2))[:, None, :]


def _tiny_png(colour: tuple[int, int, int]) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def write_sd_zoo(out: Path, n_models: int, n_classes: int = 200, n_held_out: int = 30, modules: str = "attn2",
                 images_per_model: int = 1, seed: int = 0, chunk: int = 128, noise: float = 0.6,
                 subset: str = "SD_200", progress=None) -> ZooSummary:
    """Write a generative Model-J zoo of ``n_models`` LoRA files at ``out/Model-J__{subset}`` (see the module docstring)."""
    import time

    started = time.perf_counter()
    root = Path(out) / f"Model-J__{subset}"
    if root.exists():
        raise FileExistsError(f"{root} exists; remove it or choose another folder")
    every = sd15_lora_modules()
    wanted = SD_SUBSETS[modules]
    chosen = every if wanted is None else [item for item in every if item[0] in set(wanted)]
    classes = _unique_imagenet_classes(n_classes)
    names = [name for _, name in classes]
    signals = _class_signals(names, seed)
    assigned = _assign_splits(n_models, n_classes, n_held_out, seed)
    held_out = sorted({names[c] for c, split in assigned if split.endswith("holdout")})
    bases = {}  # per module: the shared B_0, A_0 and the class directions B_k
    for number, (module, d_in, d_out) in enumerate(chosen):
        rng = np.random.default_rng([seed, 11, number])
        bases[module] = (rng.standard_normal((d_out, RANK)).astype(np.float32) * 1e-3,
                         rng.standard_normal((SIGNAL_DIM, d_out, RANK)).astype(np.float32) * 1e-3,
                         (rng.standard_normal((RANK, d_in)) / np.sqrt(d_in)).astype(np.float32))
    counts: dict[str, int] = {}
    written = 0
    for start in range(0, n_models, chunk):
        stop = min(start + chunk, n_models)
        rng = np.random.default_rng([seed, 23, start])
        cls = np.array([assigned[i][0] for i in range(start, stop)])
        strength = rng.uniform(0.5, 1.5, stop - start).astype(np.float32)
        tensors: list[dict[str, np.ndarray]] = [{} for _ in range(stop - start)]
        for module, d_in, d_out in chosen:
            B0, Bk, A0 = bases[module]
            B = np.einsum("mk,kor->mor", signals[cls], Bk) + B0
            B = B * strength[:, None, None] + np.float32(noise * 1e-3) * rng.standard_normal(B.shape, dtype=np.float32)
            A = A0 + np.float32(0.3 / np.sqrt(d_in)) * rng.standard_normal((stop - start, RANK, d_in), dtype=np.float32)
            R = _orthogonal(rng, stop - start, RANK).astype(np.float32)
            B, A = (B @ R).astype(np.float32), (np.transpose(R, (0, 2, 1)) @ A).astype(np.float32)
            for row in range(stop - start):
                tensors[row][f"{module}.lora.down.weight"] = np.ascontiguousarray(A[row])
                tensors[row][f"{module}.lora.up.weight"] = np.ascontiguousarray(B[row])
        for row, index in enumerate(range(start, stop)):
            c, split = assigned[index]
            folder = root / split / f"model_idx_{index:04d}"
            folder.mkdir(parents=True)
            metadata = {"imagenet_class_id": str(classes[c][0]), "seed": str(seed * 100003 + index),
                        "learning_rate": f"{float(rng.choice([5e-5, 1e-4, 2e-4])):g}",
                        "max_train_steps": str(int(rng.choice([400, 600, 800]))), **SD_HYPERPARAMETERS}
            path = folder / "pytorch_lora_weights.safetensors"
            save_file(tensors[row], str(path), metadata=metadata)
            written += path.stat().st_size
            if images_per_model:
                (folder / "training_images").mkdir()
                image = _tiny_png(((c * 37) % 256, (c * 91) % 256, (index * 13) % 256))
                for k in range(images_per_model):
                    (folder / "training_images" / f"{k:03d}.png").write_bytes(image)
                    written += len(image)
            counts[split] = counts.get(split, 0) + 1
        if progress is not None:
            progress(stop, n_models)
    return ZooSummary(root, counts, names, held_out, [module for module, _, _ in chosen], written, time.perf_counter() - started)


# ---------------------------------------------------------------------------------------------
# discriminative: ViT-B-shaped, Hugging Face cache layout

VIT_WIDTH = 768
#: The 768 x 768 weights each file holds: the paper's layer 59 (layer 7's attention output) and
#: 64 (layer 8's attention value), with layer 8's query and layer 11's attention output.
VIT_LAYERS = [
    "vit.encoder.layer.7.attention.output.dense.weight",
    "vit.encoder.layer.8.attention.attention.query.weight",
    "vit.encoder.layer.8.attention.attention.value.weight",
    "vit.encoder.layer.11.attention.output.dense.weight",
]
CHOSEN_CLASSES = 50  # CIFAR-100 classes per model


def _blob(repo: Path, content: bytes) -> Path:
    blob = repo / "blobs" / hashlib.sha256(content).hexdigest()
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(content)
    return blob


def _link(snapshot: Path, name: str, blob: Path) -> None:
    (snapshot / name).symlink_to(os.path.relpath(blob, snapshot))


def write_vit_zoo(out: Path, n_models: int = 1000, subset: str = "SupViT", seed: int = 0, chunk: int = 32,
                  class_rank: int = 1, progress=None) -> ZooSummary:
    """Write ``n_models`` ViT-B-shaped float16 models at ``out`` in the Model-J HF-cache layout (module docstring)."""
    import time

    from safetensors.numpy import save

    from probex.zoo.classnames import cifar100_names

    started = time.perf_counter()
    root = Path(out)
    if root.exists():
        raise FileExistsError(f"{root} exists; remove it or choose another folder")
    names = cifar100_names()
    n_classes = len(names)
    base = np.random.default_rng([seed, 31])
    roots = {layer: base.standard_normal((VIT_WIDTH, VIT_WIDTH)).astype(np.float32) * 0.04 for layer in VIT_LAYERS}
    left = {layer: base.standard_normal((n_classes * class_rank, VIT_WIDTH)).astype(np.float32) for layer in VIT_LAYERS}
    right = {layer: base.standard_normal((n_classes * class_rank, VIT_WIDTH)).astype(np.float32) * 3e-4 for layer in VIT_LAYERS}
    order = np.random.default_rng([seed, 2]).permutation(n_models)
    split_of = {int(i): "train" if k < 0.7 * n_models else "val" if k < 0.8 * n_models else "test" for k, i in enumerate(order)}
    counts: dict[str, int] = {}
    written = 0
    for start in range(0, n_models, chunk):
        stop = min(start + chunk, n_models)
        m = stop - start
        rng = np.random.default_rng([seed, 41, start])
        chosen = np.stack([np.sort(rng.choice(n_classes, CHOSEN_CLASSES, replace=False)) for _ in range(m)])
        weights = np.zeros((m, n_classes), np.float32)
        np.put_along_axis(weights, chosen, 1.0, axis=1)
        weights *= rng.uniform(0.5, 1.5, (m, 1)).astype(np.float32)
        per_direction = np.repeat(weights, class_rank, axis=1)  # [m, C * class_rank]
        tensors: list[dict[str, np.ndarray]] = [{} for _ in range(m)]
        for layer in VIT_LAYERS:
            X = np.einsum("mk,ki,kj->mij", per_direction, left[layer], right[layer], optimize=True) + roots[layer]
            X += 2e-3 * rng.standard_normal(X.shape, dtype=np.float32)
            bias = 0.01 * rng.standard_normal((m, VIT_WIDTH), dtype=np.float32)
            for row in range(m):
                tensors[row][layer] = X[row].astype(np.float16)
                tensors[row][layer.replace(".weight", ".bias")] = bias[row].astype(np.float16)
        head = 0.02 * rng.standard_normal((m, CHOSEN_CLASSES, VIT_WIDTH), dtype=np.float32)
        for row, index in enumerate(range(start, stop)):
            split = split_of[index]
            labels = [names[c] for c in chosen[row]]
            tensors[row]["classifier.weight"] = head[row].astype(np.float16)
            tensors[row]["classifier.bias"] = np.zeros(CHOSEN_CLASSES, np.float16)
            tensors[row]["vit.layernorm.weight"] = np.ones(VIT_WIDTH, np.float16)
            metadata = {"dataset_chosen_targets": repr(labels), "lr": f"{float(rng.choice([1e-5, 3e-5, 1e-4])):g}",
                        "epochs": str(int(rng.choice([5, 10, 15]))), "seed": str(index), "model_name": subset,
                        "format": "pt"}
            model_id = f"model_idx_{index:04d}"
            repo = root / split / f"models--ProbeX--Model-J__{subset}__{model_id}"
            revision = hashlib.sha1(f"{subset}{model_id}{seed}".encode()).hexdigest()
            snapshot = repo / "snapshots" / revision
            snapshot.mkdir(parents=True)
            (repo / "refs").mkdir()
            (repo / "refs" / "main").write_text(revision)
            content = save(tensors[row], metadata=metadata)
            _link(snapshot, "model.safetensors", _blob(repo, content))
            config = {"architectures": ["ViTForImageClassification"], "hidden_size": VIT_WIDTH, "num_hidden_layers": 12,
                      "num_attention_heads": 12, "torch_dtype": "float16",
                      "id2label": {str(i): f"LABEL_{i}" for i in range(CHOSEN_CLASSES)}}
            _link(snapshot, "config.json", _blob(repo, json.dumps(config).encode()))
            _link(snapshot, "trainer_state.json", _blob(repo, json.dumps({"epoch": float(metadata["epochs"]), "log_history": []}).encode()))
            _link(snapshot, "training_args.bin", _blob(repo, pickle.dumps({"learning_rate": float(metadata["lr"])})))
            written += len(content)
            counts[split] = counts.get(split, 0) + 1
        if progress is not None:
            progress(stop, n_models)
    return ZooSummary(root, counts, names, [], list(VIT_LAYERS), written, time.perf_counter() - started)
