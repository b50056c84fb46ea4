"""LoRA banks at a realistic size: bank build, bank size on disk, peak memory of building and of training.

Writes a zoo of rank-16 LoRA models on SD 1.x attention modules (the paper's layer,
``unet.down_blocks.2.attentions.1.transformer_blocks.0.attn2.to_q``, merges to 1280 x 1280)
with probex's own writers, then measures each step in a fresh process (so each peak RSS is
its own)::

    python benchmarks/bench_lora_bank.py write /tmp/lora-zoo --models 1000
    python benchmarks/bench_lora_bank.py bank /tmp/lora-zoo        # build time, size on disk, peak RSS
    python benchmarks/bench_lora_bank.py classify /tmp/lora-zoo    # ProbeXClassifier, 3 epochs
    python benchmarks/bench_lora_bank.py align /tmp/lora-zoo       # ProbeXAligner (MiniLM), 3 epochs

Every step prints one line: what it did, wall seconds, peak RSS (``resource.getrusage``) and,
for ``bank``, the bytes the bank's cache entry holds. Only public probex calls are used, so the
same script measures an older checkout (set PYTHONPATH to it) beside this one.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

import torch

LAYER = "unet.down_blocks.2.attentions.1.transformer_blocks.0.attn2.to_q"
MODULES = {  # module -> (out, in) of the merged update, as in SD 1.x down_blocks.2
    LAYER: (1280, 1280),
    "unet.down_blocks.2.attentions.1.transformer_blocks.0.attn2.to_k": (1280, 768),
    "unet.down_blocks.2.attentions.1.transformer_blocks.0.attn2.to_v": (1280, 768),
    "unet.down_blocks.2.attentions.1.transformer_blocks.0.attn2.to_out.0": (1280, 1280),
}
SPLITS = ["train"] * 7 + ["val"] + ["test"] * 2
CONCEPTS = [f"concept {i:03d}" for i in range(100)]


def write(root: Path, models: int, rank: int) -> None:
    from probex.zoo.manifest import save_model_file, write_manifest
    from probex.zoo.records import ModelRecord

    generator = torch.Generator().manual_seed(0)
    directions = torch.randn(len(CONCEPTS), 1280, generator=generator)
    records = []
    for index in range(models):
        concept = (index // len(SPLITS)) % len(CONCEPTS)  # each concept in every split
        tensors = {}
        for module, (out, inner) in MODULES.items():
            up = torch.randn(out, rank, generator=generator) * 0.01
            up[:, 0] += 0.02 * directions[concept, :out]
            tensors[f"{module}.lora.up.weight"] = up
            tensors[f"{module}.lora.down.weight"] = torch.randn(rank, inner, generator=generator) * 0.05
        model_id = f"model_idx_{index:04d}"
        path = root / "models" / f"{model_id}.safetensors"
        split = SPLITS[index % len(SPLITS)]
        save_model_file(path, tensors, id=model_id, split=split, tree="sd", labels=[CONCEPTS[concept]],
                        metadata={"lora_alpha": str(rank), "rank": str(rank)})
        records.append(ModelRecord(id=model_id, path=path, split=split, tree="sd", labels=[CONCEPTS[concept]]))
    write_manifest(root, records, name=f"{models} rank-{rank} LoRA models")


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kB on Linux


def _report(what: str, started: float, extra: str = "") -> None:
    print(f"{what}: {time.perf_counter() - started:.1f} s, peak RSS {_peak_rss_gb():.2f} GB{extra}", flush=True)


def bank(root: Path, cache: Path) -> None:
    from probex.zoo import ModelZoo

    started = time.perf_counter()
    built = ModelZoo.open(root).bank(LAYER, cache=cache)
    entry = sum(path.stat().st_size for path in cache.iterdir() if not path.name.startswith("."))
    _report(f"bank of {len(built)} models", started, f", cache entry {entry / 1e9:.3f} GB")
    started = time.perf_counter()
    ModelZoo.open(root).bank(LAYER, cache=cache)
    _report("bank again (from the cache, verified)", started)


def train(root: Path, cache: Path, kind: str, epochs: int) -> None:
    from probex.zoo import ModelZoo

    started = time.perf_counter()
    zoo = ModelZoo.open(root)
    splits = {split: zoo.bank(LAYER, split=split, cache=cache) for split in ("train", "val", "test")}
    if kind == "classify":
        from probex.experts.classifier import ProbeXClassifier

        expert = ProbeXClassifier(epochs=epochs, device="cpu").fit(splits["train"], val=(splits["val"], None))
        score = expert.score(splits["test"])
    else:
        from probex.experts.aligner import ProbeXAligner

        expert = ProbeXAligner(epochs=epochs, device="cpu").fit(splits["train"], val=(splits["val"], None))
        score = expert.score(splits["test"])
    _report(f"{kind} {len(splits['train'])} models, {epochs} epochs (test score {score:.3f})", started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=("write", "bank", "classify", "align"))
    parser.add_argument("root", type=Path)
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--cache", type=Path, default=None, help="bank cache folder (default: <root>/../<root>-cache)")
    args = parser.parse_args()
    cache = args.cache or args.root.with_name(args.root.name + "-cache")
    torch.set_num_threads(int(os.environ.get("PROBEX_THREADS", "1")))
    if args.step == "write":
        write(args.root, args.models, args.rank)
    elif args.step == "bank":
        bank(args.root, cache)
    else:
        train(args.root, cache, args.step, args.epochs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
