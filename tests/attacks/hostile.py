"""Builders of hostile inputs for the attack tests: zoos with hostile names, malformed files, users' folders.

Plain functions (no pytest). Every generator returns a list, so each test can say how many cases it ran.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

import torch

from probex.zoo.manifest import save_model_file, write_manifest
from probex.zoo.records import ModelRecord

#: Tree and zoo names that must never become paths as they are.
HOSTILE_NAMES = (
    "../../../escaped",
    "../x",
    "..",
    ".",
    "/tmp/probex-absolute-victim",
    "runwayml/stable-diffusion-v1-5",
    "a/b/c",
    "name with spaces",
    "\x1b[31mred\x1b[0m",
    "tab\tand\nnewline",
    "~",
    "con",
    "x" * 300,
    "emoji-\U0001F333",
    "back\\slash",
    "semi;colon|pipe&",
    "$(touch pwned)",
    "*?[glob]",
    "-rf",
    ".hidden",
)


def user_folder(path: Path) -> Path:
    """A folder of a user's own files (what a careless ``--out`` points at)."""
    (path / "sub").mkdir(parents=True, exist_ok=True)
    (path / "thesis.tex").write_text("\\chapter{Results}\n")
    (path / "sub" / "data.csv").write_text("x,y\n1,2\n")
    return path


def snapshot(*roots: Path) -> dict[str, tuple]:
    """Every entry under ``roots`` (links not followed): its kind, size and content hash."""
    found: dict[str, tuple] = {}
    for root in roots:
        if not os.path.lexists(root):
            continue
        for parent, dirs, files in os.walk(root, followlinks=False):
            for name in dirs + files:
                path = Path(parent) / name
                if path.is_symlink():
                    found[str(path)] = ("link", os.readlink(path))
                elif path.is_file():
                    found[str(path)] = ("file", hashlib.sha256(path.read_bytes()).hexdigest())
                elif path.is_dir():
                    found[str(path)] = ("dir",)
                else:
                    found[str(path)] = ("special",)
    return found


def changed(before: dict[str, tuple], after: dict[str, tuple]) -> list[str]:
    """Paths added, removed or changed between two snapshots."""
    return sorted(path for path in set(before) | set(after) if before.get(path) != after.get(path))


def tiny_zoo(root: Path, trees: list[str], per_tree: int = 6, name: str = "tiny", seed: int = 0,
             splits: tuple[str, ...] = ("train", "train", "val", "test")) -> Path:
    """A manifest zoo of tiny models (fc1 [4, 3], fc2 [2, 4]), ``per_tree`` per tree, labelled and split."""
    generator = torch.Generator().manual_seed(seed)
    records = []
    root.mkdir(parents=True, exist_ok=True)
    for t, tree in enumerate(trees):
        base = {"fc1.weight": torch.randn(4, 3, generator=generator), "fc2.weight": torch.randn(2, 4, generator=generator)}
        for i in range(per_tree):
            label = ("cat", "dog")[i % 2]
            tensors = {key: value + 0.05 * torch.randn(value.shape, generator=generator) for key, value in base.items()}
            path = root / "models" / f"t{t}-m{i}.safetensors"
            model_id = f"t{t}/m{i}"
            split = splits[i % len(splits)]
            save_model_file(path, tensors, id=model_id, split=split, tree=tree, labels=[label])
            records.append(ModelRecord(id=model_id, path=path, split=split, tree=tree, labels=[label]))
    write_manifest(root, records, name=name)
    return root


def safetensors_bytes(header: dict, data: bytes = b"") -> bytes:
    """A safetensors file from a raw header (any content, valid or not) and data section."""
    encoded = json.dumps(header).encode()
    return struct.pack("<Q", len(encoded)) + encoded + data


def lora_pair_bytes(out_features: int, in_features: int, rank: int = 1) -> bytes:
    """A diffusers LoRA file with one pair up [out, r] @ down [r, in]: tiny on disk, declaring out x in once merged."""
    up, down = out_features * rank * 4, rank * in_features * 4
    header = {
        "unet.block.attn.to_q.lora.up.weight": {"dtype": "F32", "shape": [out_features, rank], "data_offsets": [0, up]},
        "unet.block.attn.to_q.lora.down.weight": {"dtype": "F32", "shape": [rank, in_features], "data_offsets": [up, up + down]},
    }
    return safetensors_bytes(header, b"\0" * (up + down))
