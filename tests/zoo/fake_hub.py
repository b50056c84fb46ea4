"""A fake Hugging Face Hub on loopback, and Model-J repos to put in it (for the Hub, notebook and floors tests).

The fake Hub answers the endpoints huggingface_hub calls: repo info
(``/api/{type}s/{repo}/revision/{rev}``), the file tree (``/api/{type}s/{repo}/tree/{rev}``),
and file downloads (``/{repo}/resolve/{rev}/{file}``, HEAD and GET with Range) with the
``X-Repo-Commit``, ``ETag`` and ``Content-Length`` headers. It serves no Xet headers, so
huggingface_hub downloads over plain HTTP. It can also limit the rate (429 on every N-th
request), lose files, and hang weight reads until released (to kill a client mid-download).
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
import urllib.parse

import torch
from safetensors.torch import save

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class FakeHub:
    """Repos in memory, served the way the Hugging Face Hub serves them."""

    def __init__(self, loopback):
        self.repos: dict[tuple[str, str], dict[str, bytes]] = {}
        self.fail_next: dict[str, int] = {}  # path -> how many GETs answer 503 first
        self.served_503 = 0
        self.limit_every: int | None = None  # answer every N-th request with 429 (Retry-After: 0)
        self.retry_after = "0"
        self.unavailable: set[str] = set()  # files listed in the tree that answer 404 when fetched
        self.hang_after: int | None = None  # weight reads answered before the next ones hang until released
        self.hanging = threading.Event()
        self.release = threading.Event()
        self.answered: list[tuple[str, str, str]] = []  # (method, path, range) of every request answered < 400
        self._count = 0
        self._weights_answered = 0
        self._lock = threading.Lock()
        self.server = loopback.serve(self.route)
        self.reply = loopback.Reply
        self.file_reply = loopback.file_reply

    @property
    def url(self) -> str:
        return self.server.url

    def add(self, repo_id: str, files: dict[str, bytes], repo_type: str = "model") -> None:
        self.repos[(repo_type, repo_id)] = files

    def downloads(self, suffix: str = "") -> list[str]:
        """Paths of the GET requests for files (resolve URLs) ending in ``suffix``."""
        return [r.path for r in self.server.requests if r.method == "GET" and "/resolve/" in r.path and r.path.endswith(suffix)]

    def route(self, method: str, raw_path: str, headers: dict):
        with self._lock:
            self._count += 1
            limited = self.limit_every is not None and self._count % self.limit_every == 0
        if limited:
            return self.reply(429, b"rate limited", {"Retry-After": self.retry_after})
        weights = method == "GET" and raw_path.endswith(".safetensors") and "/resolve/" in raw_path
        if weights and self.hang_after is not None:
            with self._lock:
                hang = self._weights_answered >= self.hang_after
            if hang:
                self.hanging.set()
                self.release.wait(60)
                return self.reply(503, b"gone")
        reply = self._route(method, raw_path, headers)
        if reply.status < 400:
            with self._lock:
                self.answered.append((method, raw_path, headers.get("range", "")))
                self._weights_answered += weights
        return reply

    def _route(self, method: str, raw_path: str, headers: dict):
        path = urllib.parse.unquote(raw_path.split("?")[0])
        parts = path.strip("/").split("/")
        if parts[:1] == ["api"] and len(parts) in (4, 6, 7) and parts[1] in ("models", "datasets"):
            # /api/models/{owner}/{name}[/revision|tree/{rev}]; without a revision: repo info at main
            repo_type, repo_id = parts[1][:-1], "/".join(parts[2:4])
            action, revision = (parts[4], parts[5]) if len(parts) > 4 else ("revision", "main")
            files = self._files(repo_type, repo_id, revision)
            if isinstance(files, tuple):
                return self.reply(*files)
            if action == "revision":
                body = {"id": repo_id, "sha": COMMIT, "siblings": [{"rfilename": name} for name in files]}
                return self._json(body)
            if action == "tree":
                entries = [
                    {"type": "file", "path": name, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}
                    for name, data in sorted(files.items())
                ]
                return self._json(entries)
        if parts == ["api", "models"]:
            return self._json([])  # the reachability probe asks /api/models?limit=1
        if parts[:1] == ["api"]:
            return self.reply(404, b"unknown api endpoint")
        repo_type = "model"
        if parts[0] == "datasets":
            repo_type, parts = "dataset", parts[1:]
        if len(parts) >= 5 and parts[2] == "resolve":
            repo_id, revision, filename = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
            files = self._files(repo_type, repo_id, revision)
            if isinstance(files, tuple):
                return self.reply(*files)
            if filename not in files or filename in self.unavailable:
                return self.reply(404, b"entry not found", {"X-Error-Code": "EntryNotFound"})
            if method == "GET" and self.fail_next.get(filename, 0) > 0:
                self.fail_next[filename] -= 1
                self.served_503 += 1
                return self.reply(503, b"try again")
            data = files[filename]
            extra = {"X-Repo-Commit": COMMIT, "ETag": f'"{hashlib.sha1(data).hexdigest()}"'}
            return self.file_reply(method, data, headers, True, extra)
        return self.reply(404, b"not found")

    def _files(self, repo_type: str, repo_id: str, revision: str):
        files = self.repos.get((repo_type, repo_id))
        if files is None:
            return (404, b"repo not found", {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"})
        if revision not in ("main", COMMIT):
            return (404, b"revision not found", {"X-Error-Code": "RevisionNotFound", "X-Error-Message": "Invalid rev id"})
        return files

    def _json(self, body: object):
        data = json.dumps(body).encode()
        return self.reply(200, data, {"Content-Type": "application/json"})


def model_safetensors(seed: int, targets: list[str]) -> bytes:
    generator = torch.Generator().manual_seed(seed)
    tensors = {f"vit.encoder.layer.{i}.attention.query.weight": torch.randn(32, 32, generator=generator) for i in range(8)}
    tensors["vit.encoder.layer.3.attention.query.bias"] = torch.randn(32, generator=generator)
    return save(tensors, metadata={"dataset_chosen_targets": repr(targets), "lr": "0.001"})


def discriminative_repo(seed: int) -> dict[str, bytes]:
    return {
        "model.safetensors": model_safetensors(seed, ["apple", "bee"]),
        "config.json": b'{"architectures": ["ViTForImageClassification"]}',
        "trainer_state.json": b"{}",
        "training_args.bin": b"\x80\x04pickle that must never be fetched",
    }


def parquet_table(model_ids: list[str]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"hf_model_id": model_ids, "hf_model_url": [f"https://huggingface.co/{m}" for m in model_ids]})
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def add_modelj_mae(fake_hub: FakeHub, per_split: dict[str, list[int]]) -> None:
    tables = {}
    for split, indices in per_split.items():
        ids = [f"ProbeX/Model-J__MAE__model_idx_{index:04d}" for index in indices]
        tables[f"MAE/{split}-00000-of-00001.parquet"] = parquet_table(ids)
        for index, repo_id in zip(indices, ids):
            fake_hub.add(repo_id, discriminative_repo(index))
    tables["DINO/train-00000-of-00001.parquet"] = parquet_table(["ProbeX/Model-J__DINO__model_idx_0000"])
    tables["README.md"] = b"# Model-J"
    fake_hub.add("ProbeX/Model-J", tables, repo_type="dataset")


def lora_safetensors(seed: int) -> bytes:
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for block in range(3):
        module = f"unet.down_blocks.{block}.attentions.0.transformer_blocks.0.attn2.to_q"
        tensors[f"{module}.lora.down.weight"] = torch.randn(4, 64, generator=generator).half()
        tensors[f"{module}.lora.up.weight"] = torch.randn(64, 4, generator=generator).half()
    return save(tensors, metadata={"imagenet_class_id": "n01440764"})


def add_sd_200(fake_hub: FakeHub) -> None:
    files = {}
    for split, indices in {"train": [0, 1], "val": [2], "test": [3], "val_holdout": [4], "test_holdout": [5]}.items():
        for index in indices:
            folder = f"{split}/model_idx_{index:04d}"
            files[f"{folder}/pytorch_lora_weights.safetensors"] = lora_safetensors(index)
            files[f"{folder}/training_images/0.png"] = b"\x89PNG fake image"
            files[f"{folder}/training_args.bin"] = b"\x80\x04pickle"
    fake_hub.add("ProbeX/Model-J__SD_200", files)


SD_LAYER_46 = "unet.down_blocks.2.attentions.1.transformer_blocks.0.attn2.to_q"
SD_SPLITS = {"train": 6, "val": 2, "test": 2, "val_holdout": 2, "test_holdout": 2}


def add_sd_unet_repo(fake_hub: FakeHub, per_split: dict[str, int] = SD_SPLITS) -> list[str]:
    """ProbeX/Model-J__SD_200 with the 128 LoRA pairs of a real SD UNet per model; returns the weight files."""
    from modelj_architectures import sd_unet_lora_tensors

    files, index = {}, 0
    for split, count in per_split.items():
        for _ in range(count):
            tensors = sd_unet_lora_tensors(torch.Generator().manual_seed(index), rank=16)  # ~160 kB: more than the first request
            folder = f"{split}/model_idx_{index:04d}"
            files[f"{folder}/pytorch_lora_weights.safetensors"] = save(tensors, metadata={"imagenet_class_id": str(index), "rank": "2"})
            files[f"{folder}/training_images/0.png"] = b"\x89PNG fake image"
            index += 1
    fake_hub.add("ProbeX/Model-J__SD_200", files)
    return sorted(name for name in files if name.endswith(".safetensors"))


def loopback_factory():
    """A LoopbackFactory (tests/zoo/conftest.py) for tests outside tests/zoo, where that conftest's fixtures do not reach.

    Call ``stop_all()`` on it when done.
    """
    import importlib.util
    import sys
    from pathlib import Path

    module = sys.modules.get("zoo_loopback")
    if module is None:
        spec = importlib.util.spec_from_file_location("zoo_loopback", Path(__file__).with_name("conftest.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules["zoo_loopback"] = module  # dataclasses look their module up while it loads
        spec.loader.exec_module(module)
    return module.LoopbackFactory()
