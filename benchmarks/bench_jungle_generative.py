"""The generative half of the demo jungle: build time, disk, the root's samples, and the signal in the LoRA weights.

    python benchmarks/bench_jungle_generative.py --out /tmp/jungle/generative            # build (full) and measure
    python benchmarks/bench_jungle_generative.py --out /tmp/jungle/generative --existing # measure a built tree
    python benchmarks/bench_jungle_generative.py --out DIR --root OLD/root --models-per-concept 8

What it prints and writes to ``bench_jungle_generative.json`` beside this script:

- timings of the build: the root's pre-training, the LoRA zoo (seconds per model), from the
  build's own progress callback (CPU threads: 1, as the build sets them);
- disk: bytes per LoRA file, per model's training images, for the whole tree;
- concept prediction: for each asked layer, the merged LoRA update X = up @ down of every model
  ([out, in], float32) and a ProbeXClassifier with one class per model (the concept, 48
  in-distribution concepts, chance 1/48) trained on train, its epoch chosen on val, scored on
  test; a DenseExpert on the same layer for comparison, with both parameter counts;
- retrieval on raw weights: for each held-out model (val_holdout + test_holdout, 16 concepts),
  does its nearest neighbour (cosine of the centred, flattened update) share its concept? The
  baseline a learned text-aligned representation has to beat (issue 4, acceptance 4);
- a grid of the root's generations (rows: concepts, columns: seeds), upscaled, as a PNG.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time
from dataclasses import replace
from pathlib import Path

import torch

from probex.experts.classifier import DenseExpert, ProbeXClassifier
from probex.jungle.generative import LORA_WEIGHTS, RECIPES, ROOT_FOLDER, build_generative, generate_images
from probex.jungle.unet import load_root
from probex.zoo.safefile import read_header, read_tensors

DEFAULT_LAYERS = ("down.attn.to_q", "mid.attn.to_q", "up.attn.to_q", "mid.attn.to_k")
GRID_CONCEPTS = ("red star", "blue circle", "green triangle", "yellow heart", "purple cross", "cyan ring", "orange square", "pink diamond")


def build(out: Path, size: str, seed: int, root: Path | None, models_per_concept: int | None) -> dict:
    recipe = RECIPES[size] if models_per_concept is None else replace(RECIPES[size], models_per_concept=models_per_concept)
    marks: dict[str, float] = {}
    started = time.perf_counter()

    def progress(done: int, total: int, message: str) -> None:
        if message.startswith("pre-training"):
            marks["root_done"] = time.perf_counter()
        elif "lora_first" not in marks:
            marks["lora_first"] = time.perf_counter()

    entries = build_generative(out, size=size, seed=seed, progress=progress, root_path=root, recipe=recipe)
    ended = time.perf_counter()
    root_end = marks.get("root_done", started)
    return {
        "size": size,
        "models": len(entries),
        "models_per_concept": recipe.models_per_concept,
        "root_pretraining_s": None if root else round(root_end - started, 1),
        "root_pretrain_steps": None if root else recipe.pretrain_steps,
        "lora_total_s": round(ended - root_end, 1),
        "lora_s_per_model": round((ended - root_end) / len(entries), 3),
        "models_at_once": recipe.models_at_once,
    }


def disk(out: Path) -> dict:
    weights = sorted(out.glob(f"*/model_idx_*/{LORA_WEIGHTS}"))
    image_bytes = [sum(path.stat().st_size for path in (file.parent / "training_images").glob("*.png")) for file in weights]
    total = sum(path.stat().st_size for path in out.rglob("*") if path.is_file())
    return {
        "lora_file_bytes": weights[0].stat().st_size,
        "images_bytes_per_model_mean": round(sum(image_bytes) / len(image_bytes)),
        "files": sum(1 for path in out.rglob("*") if path.is_file()),
        "tree_total_mb": round(total / 1e6, 1),
    }


def load_layer(out: Path, layer: str) -> dict[str, tuple[torch.Tensor, list[str]]]:
    """Per split: merged updates [N, out, in] of one layer and the concept names."""
    by_split: dict[str, tuple[list, list]] = {}
    for path in sorted(out.glob(f"*/model_idx_*/{LORA_WEIGHTS}")):
        header = read_header(path)
        names = [f"unet.{layer}.lora.up.weight", f"unet.{layer}.lora.down.weight"]
        up, down = read_tensors(path, names, header=header).values()
        matrices, labels = by_split.setdefault(header.metadata["split"], ([], []))
        matrices.append(up.float() @ down.float())
        labels.append(header.metadata["concept"])
    return {split: (torch.stack(matrices), labels) for split, (matrices, labels) in by_split.items()}


def concept_prediction(out: Path, layers: list[str], epochs: int) -> list[dict]:
    """One row per layer, and one for the first two layers together (a list of layers per model)."""
    loaded = {layer: load_layer(out, layer) for layer in layers}
    groups = [[layer] for layer in layers] + ([layers[:2]] if len(layers) > 1 else [])
    results = []
    for group in groups:
        def split(name: str):
            matrices = [loaded[layer][name][0] for layer in group]
            return (matrices[0] if len(group) == 1 else matrices), loaded[group[0]][name][1]

        (X_train, y_train), (X_val, y_val), (X_test, y_test) = split("train"), split("val"), split("test")
        row = {"layer": " + ".join(group), "n_train": len(y_train), "n_test": len(y_test),
               "n_concepts": len(set(y_train)), "chance": round(1 / len(set(y_train)), 4)}
        for name, expert in (("probex", ProbeXClassifier(epochs=epochs, seed=0, device="cpu")), ("dense", DenseExpert(epochs=epochs, seed=0, device="cpu"))):
            started = time.perf_counter()
            expert.fit(X_train, y_train, val=(X_val, y_val))
            row[f"{name}_test_accuracy"] = round(float(expert.score(X_test, y_test)), 4)
            row[f"{name}_train_accuracy"] = round(float(expert.score(X_train, y_train)), 4)
            row[f"{name}_parameters"] = int(expert.n_parameters_)
            row[f"{name}_fit_s"] = round(time.perf_counter() - started, 1)
        print(json.dumps(row), flush=True)
        results.append(row)
    return results


def raw_retrieval(out: Path, layers: list[str]) -> list[dict]:
    rows = []
    for layer in layers:
        data = load_layer(out, layer)
        matrices = torch.cat([data["val_holdout"][0], data["test_holdout"][0]]).flatten(1)
        labels = data["val_holdout"][1] + data["test_holdout"][1]
        vectors = torch.nn.functional.normalize(matrices - matrices.mean(0), dim=1)
        similarity = vectors @ vectors.T
        similarity.fill_diagonal_(-2)
        nearest = similarity.argmax(1).tolist()
        shared = sum(labels[i] == labels[j] for i, j in enumerate(nearest)) / len(labels)
        row = {"layer": layer, "held_out_models": len(labels), "nearest_shares_concept": round(shared, 4)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def sample_grid(out: Path, png: Path, samples: int = 6, scale: int = 4) -> None:
    from PIL import Image

    unet, _ = load_root(out / ROOT_FOLDER)
    prompts = [f"a photo of a {name}" for name in GRID_CONCEPTS for _ in range(samples)]
    images = generate_images(unet, prompts, seed=0)  # [C*S, 3, 16, 16]
    size = images.shape[-1]
    grid = images.reshape(len(GRID_CONCEPTS), samples, 3, size, size).permute(0, 3, 1, 4, 2).reshape(len(GRID_CONCEPTS) * size, samples * size, 3)
    picture = Image.fromarray((grid * 255).round().byte().numpy())
    picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST).save(png)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="the generative tree's folder (JUNGLE/generative)")
    parser.add_argument("--existing", action="store_true", help="measure a tree already built there")
    parser.add_argument("--size", default="full", choices=sorted(RECIPES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--root", type=Path, help="a saved root folder: skip pre-training")
    parser.add_argument("--models-per-concept", type=int)
    parser.add_argument("--layers", nargs="+", default=list(DEFAULT_LAYERS))
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--grid", type=Path, default=Path("/tmp/jungle_generative_samples.png"))
    parser.add_argument("--label", help="the key of this run in the JSON (default: the size)")
    parser.add_argument("--skip-prediction", action="store_true", help="only build, disk, grid and raw retrieval")
    args = parser.parse_args()

    torch.set_num_threads(1)
    report: dict = {"machine": platform.machine(), "torch": torch.__version__, "threads": 1}
    if not args.existing:
        report["build"] = build(args.out, args.size, args.seed, args.root, args.models_per_concept)
        print(json.dumps(report["build"]), flush=True)
    report["disk"] = disk(args.out)
    print(json.dumps(report["disk"]), flush=True)
    sample_grid(args.out, args.grid)
    report["sample_grid"] = str(args.grid)
    report["raw_retrieval"] = raw_retrieval(args.out, args.layers)
    if not args.skip_prediction:
        report["concept_prediction"] = concept_prediction(args.out, args.layers, args.epochs)
    report["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    target = Path(__file__).with_suffix(".json")
    previous = json.loads(target.read_text()) if target.exists() else {}
    previous[args.label or report.get("build", {}).get("size", "existing")] = report
    target.write_text(json.dumps(previous, indent=2) + "\n")
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
