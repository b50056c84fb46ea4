"""Which fine-tuning recipe lets ProbeX beat Dense on a hidden layer? A study for issue 20, acceptance 2.

    python benchmarks/study_recipes.py --tree mixer-supervised --head masked
    python benchmarks/study_recipes.py --tree cnn-supervised --head own --steps 2
    python benchmarks/study_recipes.py --tree mixer-supervised --head pairs --models 300 --seeds 0 1 2
    python benchmarks/study_recipes.py --tree mixer-supervised --architecture wider-mixer --save-root /tmp/roots
    python benchmarks/study_recipes.py --tree cnn-own-heads --architecture wide-cnn --head own --layers conv3
    python benchmarks/study_recipes.py --tree cnn-own-heads --architecture vit --head own --seeds 0 1 2 \
        --experts probex "linear probex" dense multi-view --views xtxu
    python benchmarks/study_recipes.py --tree cnn-supervised --head own --models-file /tmp/own.safetensors \
        --experts probex dense multi-view --views xtxu all --seeds 0 1 2

Fine-tunes one classifier tree of the demo jungle in memory with a variant of its recipe (the head
layout of :data:`probex.jungle.discriminative.HEAD_LAYOUTS`, a step scale, a LoRA rank, another
architecture), from the shipped jungle's root of that tree (pre-trained anew when absent or of
another architecture), splits the models 70/10/20 as the
build does, and on every hidden matrix layer (LoRA layers merged, the head left out) trains ProbeX
(ReLU), the linear ProbeX and Dense (and, asked for, the multi-view ProbeX once per ``--views`` set)
on ``train`` with the sweep's settings (epochs chosen on ``val``), then scores ``test`` (mean binary accuracy over the tree's 24 classes). Beside them it prints two
computed baselines: chance (0.5) and the majority rule (each class's majority answer on ``train``).
Nothing is written into the jungle; the figures go to ``--out`` (default: study_recipes.json beside
this script). ``--models-file`` keeps the fine-tuned models for later runs (trusted only for the same
recipe, root, model count and step scale). One CPU thread unless PROBEX_THREADS says otherwise.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from probex.experiments.sweep import SWEEP_DEFAULTS
from probex.experts.classifier import DenseExpert, ProbeXClassifier
from probex.experts.training import set_threads
from probex.errors import ProbeXError
from probex.experts.views import parse_views, views_name
from probex.jungle import discriminative as disc
from probex.jungle import SHIPPED
from probex.jungle.architectures import ARCHITECTURES, make_model
from probex.storage import atomic_path

#: The seed the jungle builds with (models and splits).
BUILD_SEED = 0

EXPERTS = {
    "probex": lambda **params: ProbeXClassifier(**params),
    "linear probex": lambda **params: ProbeXClassifier(activation="none", **params),
    "dense": lambda **params: DenseExpert(**params),
    "multi-view": lambda views="all", **params: ProbeXClassifier(views=views, **params),
}
#: Not run unless asked (``--experts``): the default set stays the three the study was first run with.
DEFAULT_EXPERTS = ("probex", "linear probex", "dense")


def _root(recipe: disc.TreeRecipe, roots: Path, steps: int, save: Path | None = None) -> torch.nn.Module:
    """The tree's root from ``roots`` when one of the recipe's architecture is there, else pre-trained anew."""
    path = roots / f"{recipe.name}.safetensors"
    model = make_model(recipe.architecture, 16)
    if path.is_file():
        state = load_file(str(path))
        if {k: tuple(v.shape) for k, v in state.items()} == {k: tuple(v.shape) for k, v in model.state_dict().items()}:
            model.load_state_dict(state)
            return model.eval()
        print(f"the root at {path} is not a {recipe.architecture}", flush=True)
    print(f"pre-training a {recipe.architecture} root ({steps} steps)", flush=True)
    started = time.perf_counter()
    model = disc.pretrain_root(recipe, steps)
    print(f"root: {time.perf_counter() - started:.0f} s, accuracy {disc.root_accuracy(model, recipe):.3f}", flush=True)
    if save is not None:
        save.mkdir(parents=True, exist_ok=True)
        save_file(model.state_dict(), str(save / f"{recipe.name}.safetensors"))
        print(f"root written to {save} (pass --roots {save} to reuse it)", flush=True)
    return model


def _root_digest(root: torch.nn.Module) -> str:
    """SHA-256 of a root's tensors, names and all: a models file is trusted only for the root it grew from."""
    digest = hashlib.sha256()
    for name, tensor in sorted(root.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _fine_tuned(recipe: disc.TreeRecipe, root: torch.nn.Module, n_models: int, steps: float,
                models_file: Path | None) -> tuple[list[disc.FineTune], float, bool]:
    """The tree's fine-tuned models: from ``models_file`` when it holds exactly this recipe's, else fine-tuned
    (and written there when it names no file yet). Returns (models, the seconds their fine-tuning took, read).

    A models file is safetensors: tensor ``<i>/<name>`` is weight ``name`` of the i-th model, and the metadata hold
    the key (recipe, root digest, count, steps, seed), the fine-tuning seconds and, as JSON, each model's description
    with its weights' names in order.
    """
    key = None
    if models_file is not None:
        key = json.dumps({"recipe": repr(recipe), "root": _root_digest(root), "models": n_models, "steps": steps,
                          "seed": BUILD_SEED}, sort_keys=True)
    if models_file is not None and models_file.is_file():
        try:
            with safe_open(str(models_file), framework="pt") as handle:
                metadata = handle.metadata() or {}
        except Exception as error:  # not a file this script wrote
            print(f"error: {models_file} is not a models file ({type(error).__name__})", file=sys.stderr)
            sys.exit(2)
        if metadata.get("key") != key:
            print(f"error: {models_file} holds other models (another recipe, root or count); pass another --models-file",
                  file=sys.stderr)
            sys.exit(2)
        tensors = load_file(str(models_file))
        models = [disc.FineTune(**entry, weights={name: tensors[f"{position}/{name}"] for name in names})
                  for position, (entry, names) in enumerate(json.loads(metadata["models"]))]
        print(f"models read from {models_file}", flush=True)
        return models, float(metadata["seconds"]), True
    started = time.perf_counter()
    models = disc.fine_tune_tree(recipe, root, n_models, seed=BUILD_SEED, step_scale=steps,
                                 progress=lambda done, total, text: print(text, flush=True))
    seconds = time.perf_counter() - started
    if models_file is not None and not models_file.exists():  # never overwrites what appeared meanwhile
        tensors = {f"{position}/{name}": tensor.contiguous() for position, model in enumerate(models)
                   for name, tensor in model.weights.items()}
        described = [({field: value for field, value in vars(model).items() if field != "weights"}, list(model.weights))
                     for model in models]  # each model's description, and its weights' names in their order
        with atomic_path(models_file) as tmp:
            save_file(tensors, str(tmp), metadata={"key": key, "seconds": repr(seconds), "models": json.dumps(described)})
        print(f"models written to {models_file} (pass it again to reuse them)", flush=True)
    return models, seconds, False


def hidden_layers(weights: dict[str, torch.Tensor]) -> dict[str, str]:
    """{layer name: how to read it} for every matrix layer but the head; LoRA pairs become one merged layer.

    A parameter that is not a module's weight (a ViT's learned positions) is not a layer."""
    layers = {}
    for name, tensor in weights.items():
        if ".lora." in name:
            layers[name.split(".lora.")[0]] = "lora"
        elif tensor.ndim >= 2 and name.endswith(".weight") and not name.startswith("head."):
            layers[name.removesuffix(".weight")] = "dense"
    return layers


def check_layers(tree: str, wanted: list[str] | None, available: list[str]) -> None:
    """Raise a one-line ProbeXError when ``wanted`` names a layer that ``available`` lacks."""
    unknown = sorted(set(wanted or []) - set(available))
    if unknown:
        raise ProbeXError(f"no hidden layer {', '.join(unknown)} in {tree}'s models (they have: {', '.join(available)})")


def layer_stack(models: list[disc.FineTune], layer: str, kind: str) -> torch.Tensor:
    """[N, d_W, d_H] float32: a convolution's kernels output-first, a LoRA layer's update B A."""
    if kind == "lora":
        return torch.stack([m.weights[f"{layer}.lora.up.weight"] @ m.weights[f"{layer}.lora.down.weight"] for m in models]).float()
    stack = torch.stack([m.weights[f"{layer}.weight"] for m in models]).float()
    return stack.reshape(stack.shape[0], stack.shape[1], -1)


def majority_baseline(train_labels: list[list[str]], test_labels: list[list[str]]) -> float:
    """Mean binary accuracy on test of answering each class with its majority answer on train."""
    classes = sorted({name for labels in train_labels + test_labels for name in labels})
    accuracy = []
    for name in classes:
        present = np.mean([name in labels for labels in train_labels]) >= 0.5
        accuracy.append(np.mean([(name in labels) == present for labels in test_labels]))
    return float(np.mean(accuracy))


def study(recipe: disc.TreeRecipe, models: list[disc.FineTune], seeds: list[int], layers: list[str] | None = None,
          experts: tuple[str, ...] = DEFAULT_EXPERTS, views: tuple[str, ...] = ("all",)) -> dict:
    """Every expert on every hidden layer of the fine-tuned ``models``: test/val score and parameters per seed.

    The multi-view expert runs once per view set in ``views``, as "multi-view <views>"."""
    n = len(models)
    split = [disc.split_of(m.index, n, BUILD_SEED + sum(map(ord, recipe.name))) for m in models]  # as the build splits
    parts = {name: [i for i, s in enumerate(split) if s == name] for name in ("train", "val", "test")}
    labels = {name: [models[i].classes for i in rows] for name, rows in parts.items()}
    found = hidden_layers(models[0].weights)
    check_layers(recipe.name, layers, list(found))
    rows = {"majority": majority_baseline(labels["train"], labels["test"]), "chance": 0.5, "layers": {}}
    runs = [(f"multi-view {views_name(spec)}", key, {"views": spec}) if key == "multi-view" else (key, key, {})
            for key in experts for spec in (views if key == "multi-view" else (None,))]
    for layer in layers or list(found):
        X = layer_stack(models, layer, found[layer])
        data = {name: (X[idx], labels[name]) for name, idx in parts.items()}
        row = {"shape": list(X.shape[1:])}
        for name, key, options in runs:
            for seed in seeds:
                started = time.perf_counter()
                expert = EXPERTS[key](**SWEEP_DEFAULTS, **options, device="cpu", seed=seed).fit(*data["train"], val=data["val"])
                row.setdefault(name, []).append({"test": round(expert.score(*data["test"]), 4),
                                                "val": round(expert.score(*data["val"]), 4),
                                                "parameters": int(expert.n_parameters_),
                                                "seconds": round(time.perf_counter() - started, 1)})
        rows["layers"][layer] = row
        print(format_row(layer, row), flush=True)
    return rows


def format_row(layer: str, row: dict) -> str:
    cells = []
    for key, runs in row.items():
        if key == "shape":
            continue
        tests = [run["test"] for run in runs]
        cells.append(f"{key} {np.mean(tests):.3f} ({runs[0]['parameters']:,} params)")
    return f"{layer:28s} {'x'.join(map(str, row['shape'])):>9s}  " + "  ".join(cells)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", default="mixer-supervised", choices=[recipe.name for recipe in disc.TREES])
    parser.add_argument("--architecture", default=None, choices=sorted(ARCHITECTURES),
                        help="the tree's architecture (default: its recipe's); a new one is pre-trained anew")
    parser.add_argument("--head", default="pairs", choices=disc.HEAD_LAYOUTS)
    parser.add_argument("--steps", type=float, default=1.0, help="fine-tuning steps as a fraction of the tree's recipe")
    parser.add_argument("--lora-rank", type=int, default=None, help="LoRA rank of a LoRA tree (default: its recipe's)")
    parser.add_argument("--models", type=int, default=300)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="expert seeds (the models stay the same)")
    parser.add_argument("--layers", nargs="+", default=None)
    parser.add_argument("--experts", nargs="+", default=list(DEFAULT_EXPERTS), choices=list(EXPERTS),
                        help="multi-view = ProbeX with each of --views")
    parser.add_argument("--views", nargs="+", default=["all"], help="the multi-view expert's view sets, each all, "
                                                                    "first, second, or xu, xxtu, xtu, xtxu joined by '+'")
    parser.add_argument("--models-file", type=Path, default=None,
                        help="a file of fine-tuned models: read when it holds this recipe's, written when absent")
    parser.add_argument("--roots", type=Path, default=Path(SHIPPED) / "roots")
    parser.add_argument("--root-steps", type=int, default=disc.SIZES["full"].root_steps,
                        help="pre-training steps of a new root (default: the full build's)")
    parser.add_argument("--save-root", type=Path, default=None, help="a folder to write a newly pre-trained root to (an existing file is never overwritten)")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("study_recipes.json"))
    args = parser.parse_args()
    set_threads(int(os.environ.get("PROBEX_THREADS", "1")))

    recipe = replace({r.name: r for r in disc.TREES}[args.tree], head=args.head)
    if args.architecture is not None:
        recipe = replace(recipe, architecture=args.architecture)
    if args.save_root is not None and (args.save_root / f"{recipe.name}.safetensors").exists():
        print(f"error: {args.save_root / f'{recipe.name}.safetensors'} exists; --save-root never overwrites a file",
              file=sys.stderr)
        sys.exit(2)
    if args.models_file is not None and args.models_file.exists() and not args.models_file.is_file():
        print(f"error: --models-file {args.models_file} is not a file", file=sys.stderr)
        sys.exit(2)
    for spec in args.views:  # checked before any work
        try:
            parse_views(spec)
        except ProbeXError as error:
            print(f"error: --views {spec}: {error}", file=sys.stderr)
            sys.exit(2)
    if recipe.lora is not None and args.lora_rank is not None:
        recipe = replace(recipe, lora=replace(recipe.lora, rank=args.lora_rank))
    # checked before any work: the models will have the LoRA targets, or the architecture's matrix layers but the head
    try:
        check_layers(recipe.name, args.layers, list(recipe.lora.targets) if recipe.lora is not None
                     else list(hidden_layers(make_model(recipe.architecture, 16).state_dict())))
    except ProbeXError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    root = _root(recipe, args.roots, args.root_steps, args.save_root)
    models, fine_tune_seconds, read = _fine_tuned(recipe, root, args.models, args.steps, args.models_file)
    print(f"{recipe.name}, head {recipe.head}, step scale {args.steps}: {len(models)} models, fine-tuned in "
          f"{fine_tune_seconds:.0f} s{' (when the models file was written)' if read else ''}")
    result = study(recipe, models, args.seeds, args.layers, args.experts, tuple(args.views))
    print(f"baselines: chance 0.500, majority rule {result['majority']:.3f}")
    figures = {"recipe": {"tree": recipe.name, "architecture": recipe.architecture, "head": recipe.head, "steps": args.steps,
                          "lora_rank": recipe.lora.rank if recipe.lora else None, "models": args.models},
               "seeds": args.seeds, "fine_tune_seconds": round(fine_tune_seconds, 1),
               "models_read_from_file": read, **result,
               "torch": torch.__version__, "machine": platform.machine(), "threads": torch.get_num_threads()}
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
