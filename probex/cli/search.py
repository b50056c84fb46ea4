"""``probex search | zero-shot | export | align``: the weight-language space from the command line.

PATH defaults to the shipped demo jungle and ``--expert`` to the aligned expert shipped with a
zoo (``experts/<tree>/`` of one of its aligned trees).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from probex.cli import checks, open_zoo
from probex.errors import ProbeXError

_EXPERT_HELP = "an aligned expert's folder (default: the one shipped with the zoo for its aligned tree)"


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    search = subparsers.add_parser(
        "search", usage="probex search [-h] [--expert DIR] [-k K] [--json] [PATH] PROMPT", help="rank a zoo's models by a text prompt (aligned expert)",
        description="Rank the models of a zoo by how well they match a text prompt in an aligned expert's space; "
                    "print rank, score, model id, concept(s), split and the first training image.")
    search.add_argument("args", nargs="+", metavar="[PATH] PROMPT", help="the zoo (default: the demo jungle) and the prompt")
    search.add_argument("--expert", type=checks.existing_folder, metavar="DIR", help=_EXPERT_HELP)
    search.add_argument("-k", type=checks.positive_int, default=10, help="how many models (default 10)")
    search.add_argument("--json", action="store_true", help="print the hits as JSON")
    search.set_defaults(func=run_search)

    zero_shot = subparsers.add_parser(
        "zero-shot", usage="probex zero-shot [-h] [--labels A,B,C | --labels-file F] [--expert DIR] [-k K] [PATH] MODEL_FILE",
        help="the best-matching labels of one model file (aligned expert)",
        description="Encode one model file (e.g. a LoRA .safetensors) with an aligned expert and print the "
                    "candidate labels it matches best; without --labels, every class name the zoo knows.")
    zero_shot.add_argument("args", nargs="+", metavar="[PATH] MODEL_FILE", help="the zoo (default: the demo jungle) and the model file")
    labels = zero_shot.add_mutually_exclusive_group()
    labels.add_argument("--labels", type=checks.text, help="candidate labels, comma-separated: 'red star,blue moon'")
    labels.add_argument("--labels-file", type=checks.existing_file, help="candidate labels, one per line")
    zero_shot.add_argument("--expert", type=checks.existing_folder, metavar="DIR", help=_EXPERT_HELP)
    zero_shot.add_argument("-k", type=checks.positive_int, default=5, help="how many labels (default 5)")
    zero_shot.set_defaults(func=run_zero_shot)

    export = subparsers.add_parser(
        "export", usage="probex export [-h] [--expert DIR] [PATH] OUT", help="write a zoo's embeddings and metadata (CSV or parquet)",
        description="Encode the models of the expert's tree and write id, split, tree, labels, path, first image "
                    "and the embedding columns e0..e{d-1} to OUT (.csv or .parquet).")
    export.add_argument("args", nargs="+", metavar="[PATH] OUT", help="the zoo (default: the demo jungle) and the output file")
    export.add_argument("--expert", type=checks.existing_folder, metavar="DIR", help=_EXPERT_HELP)
    export.set_defaults(func=run_export)

    align = subparsers.add_parser(
        "align", help="train an aligned ProbeX expert on a tree and print its figures",
        description="Train a ProbeX aligner on a tree's train split (best epoch by the held-out validation split) "
                    "and print in-distribution, zero-shot, kNN, one-class and retrieval figures with their chance "
                    "levels. Needs an aligned tree with train, test and two held-out splits (Model-J SD: "
                    "val_holdout, test_holdout).")
    align.add_argument("path", nargs="?", type=checks.existing_folder, help="the zoo (default: the demo jungle)")
    align.add_argument("--tree", type=checks.text, help="the tree (default: the zoo's aligned tree, when it has one)")
    align.add_argument("--layers", type=checks.text, help="comma-separated layers (default: the shipped expert's, else the recommended layer)")
    align.add_argument("--epochs", type=checks.epochs, default=100, help="training epochs (default 100, patience 20)")
    align.add_argument("--no-activation", action="store_true",
                       help="the linear ProbeX (no ReLU): the paper's ablation")
    align.add_argument("--text-encoder", type=checks.text_encoder, default="minilm", help="text encoder spec (default minilm)")
    align.add_argument("--out", type=checks.expert_folder,
                       help="save the trained expert in this folder (new, empty, or an expert saved before)")
    align.set_defaults(func=run_align)


# -- the commands ------------------------------------------------------------------------------


def run_search(args: argparse.Namespace) -> int:
    path, prompt = _split_args(args.args, "PROMPT", "search")
    index = _index(path, args.expert)
    hits = index.search(prompt, k=args.k)
    if args.json:
        print(json.dumps([_hit_dict(hit) for hit in hits], indent=2))
        return 0
    print(f"{len(hits)} of {len(index)} models of tree {index.tree or '-'} for {prompt!r}:")
    width = max([len(hit.model_id) for hit in hits] + [5])
    print(f"  {'rank':>4} {'score':>6}  {'model':<{width}}  {'concept(s)':<22} {'split':<12} image")
    for hit in hits:
        image = str(hit.images[0]) if hit.images else "-"
        print(f"  {hit.rank:>4} {hit.score:6.3f}  {hit.model_id:<{width}}  {'; '.join(hit.labels) or '-':<22} "
              f"{hit.split or '-':<12} {image}")
    return 0


def run_zero_shot(args: argparse.Namespace) -> int:
    path, model_file = _split_args(args.args, "MODEL_FILE", "zero-shot")
    candidates = _candidates(args.labels, args.labels_file)
    index = _index(path, args.expert, encode=False)
    top = index.top_labels(Path(model_file), candidates=candidates, k=args.k)
    source = f"{len(candidates)} given labels" if candidates else f"the {len(index.classes)} class names of tree {index.tree or '-'}"
    print(f"{model_file}: best of {source}")
    for rank, (label, score) in enumerate(top, start=1):
        print(f"  {rank:>2} {score:6.3f}  {label}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from probex.storage import check_output_file

    path, out = _split_args(args.args, "OUT", "export")
    if Path(out).suffix.lower() not in (".csv", ".parquet"):
        raise ProbeXError(f"{out}: export writes .csv or .parquet files; choose one of those suffixes")
    check_output_file(out, "export")
    index = _index(path, args.expert)
    written = index.export(out)
    print(f"wrote {len(index)} models x {index.embeddings.shape[1]} dimensions of tree {index.tree or '-'} to {written}")
    return 0


def run_align(args: argparse.Namespace) -> int:
    from probex.experiments.harness import alignment_figures, aligned_splits, chance_levels
    from probex.experts.aligner import ProbeXAligner, names_of
    from probex.progress import tqdm_progress

    zoo = open_zoo(args.path)
    path = Path(zoo.root)
    tree = _tree(zoo, args.tree)
    tree_zoo = zoo.select(tree=tree)
    needed = aligned_splits(tree_zoo)
    missing = [split for split in needed if split not in tree_zoo.splits]
    if missing:
        raise ProbeXError(f"{path}: tree {tree!r} has no split(s) {', '.join(missing)}; align measures zero-shot figures "
                          f"on held-out concepts and needs {', '.join(needed)} (it has {', '.join(tree_zoo.splits)})")
    held_val, held_test = needed[2], needed[3]
    layers = _layers(path, tree, tree_zoo, args.layers)
    with tqdm_progress("reading layers", unit="model") as progress:
        banks = {split: [tree_zoo.bank(layer, split=split, progress=progress) for layer in layers] for split in needed}
    expert = ProbeXAligner(activation="none" if args.no_activation else "relu", epochs=args.epochs, patience=20,
                           text_encoder=args.text_encoder)
    with tqdm_progress("training", unit="epoch") as progress:
        expert.fit(banks["train"], val=(banks[held_val], None), progress=progress)
    held_out = sorted(set(names_of(banks[held_test][0].labels)))
    training = sorted(set(names_of(banks["train"][0].labels)))
    figures = alignment_figures(expert, banks, held_out, (held_val, held_test))
    chance = chance_levels(len(training), len(held_out))
    names = {"in_distribution": "in-distribution top-1", "zero_shot": "zero-shot top-1 (held out)", "knn": "kNN (k=1)",
             "occ_knn": "one-class AUC (kNN)", "occ_ledoit_wolf": "one-class AUC (Ledoit-Wolf)",
             "retrieval": "retrieval precision@1", "search_top1": "prompt search top-1"}
    activation = "none (linear ProbeX)" if args.no_activation else "ReLU"
    print(f"aligned ProbeX on tree {tree} ({len(training)} training concepts, {len(held_out)} held out), "
          f"layers {' + '.join(layers)}, activation {activation}, best epoch {expert.best_epoch_}")
    print(f"  {'figure':<30} {'value':>7} {'chance':>7}")
    for key, label in names.items():
        value = "n/a" if figures[key] is None else f"{figures[key]:.3f}"
        print(f"  {label:<30} {value:>7} {chance[key]:7.3f}")
    if args.out is not None:
        expert.save(args.out, metadata={"tree": tree, "task": "align", "layers": layers,
                                        **{key: None if value is None else round(float(value), 4)
                                           for key, value in figures.items()}})
        print(f"expert saved to {args.out}")
    return 0


# -- helpers -----------------------------------------------------------------------------------


def _split_args(values: list[str], last: str, command: str) -> tuple[str | None, str]:
    for value in values:
        if not value.strip() or "\0" in value:
            raise ProbeXError(f"an empty argument (or one holding a NUL byte); give some text: "
                              f"probex {command} [PATH] {last}")
    if len(values) == 1:
        return None, values[0]
    if len(values) == 2:
        if not Path(values[0]).exists():
            raise ProbeXError(f"no zoo at {values[0]!r} (read as PATH); quote a prompt with spaces "
                              f"(probex {command} \"{' '.join(values)}\") or give an existing zoo folder")
        return values[0], values[1]
    raise ProbeXError(f"expected [PATH] {last}, got {len(values)} arguments: {values}; quote a prompt with spaces "
                      f"(probex {command} PATH \"a red star\")")


def _load_expert(folder: Path):
    from probex.experts.base import load_expert

    try:
        return load_expert(folder)
    except ValueError as error:
        if isinstance(error, ProbeXError):
            raise
        raise ProbeXError(f"--expert {folder}: {error}") from None


def _default_expert_dir(zoo) -> Path:
    from probex.zoo import ALIGNED
    from probex.zoo.extras import expert_dirs

    path = Path(zoo.root)
    experts = expert_dirs(path)
    for tree in zoo.trees_with_role(ALIGNED):
        if tree in experts:
            return experts[tree]
    for folder in experts.values():
        config = json.loads((folder / "config.json").read_text())
        if config.get("class", "").endswith("Aligner"):
            return folder
    raise ProbeXError(f"{path}: no aligned expert ships with this zoo; pass one with --expert DIR "
                      "(train one with `probex align PATH --out DIR`)")


def _index(path: str | None, expert_dir: Path | None, encode: bool = True):
    """The ModelIndex of the zoo at ``path`` (demo jungle by default) in the chosen expert's space."""
    from probex.progress import tqdm_progress
    from probex.language.search import ModelIndex

    zoo = open_zoo(path)
    expert = _load_expert(expert_dir or _default_expert_dir(zoo))
    if not encode:  # zero-shot reads one file: the zoo only gives the tree's class names
        return _classes_only_index(expert, zoo)
    with tqdm_progress("encoding models", unit="model") as progress:
        return ModelIndex.build(expert, zoo, progress=progress)


def _classes_only_index(expert, zoo):
    """An index without model embeddings: the expert and the class names of its tree (for top_labels of a file)."""
    import numpy as np

    from probex.language.search import ModelIndex, expert_layers

    expert_layers(expert)
    tree = (getattr(expert, "metadata_", None) or {}).get("tree")
    tree_zoo = zoo.select(tree=tree) if tree is not None and tree in zoo.trees else zoo
    return ModelIndex(expert, [], np.zeros((0, 1), np.float32), tree_zoo.label_names, tree)


def _candidates(labels: str | None, labels_file: Path | None) -> list[str] | None:
    if labels is not None:
        names = [name.strip() for name in labels.split(",") if name.strip()]
    elif labels_file is not None:
        try:
            names = [line.strip() for line in labels_file.read_text(encoding="utf-8").splitlines() if line.strip()]
        except OSError as error:
            raise ProbeXError(f"--labels-file {labels_file}: cannot read it ({error.strerror or error})") from None
    else:
        return None
    if not names:
        raise ProbeXError("no candidate labels given; pass --labels 'red star,blue moon' or a --labels-file")
    return names


def _tree(zoo, tree: str | None) -> str:
    from probex.zoo import ALIGNED

    if tree is not None:
        if tree not in zoo.trees:
            raise ProbeXError(f"{zoo.root}: no tree {tree!r}; trees: {', '.join(zoo.trees[:12]) or 'none'}")
        return tree
    aligned = zoo.trees_with_role(ALIGNED)
    if len(aligned) == 1:
        return aligned[0]
    if len(zoo.trees) == 1:
        return zoo.trees[0]
    raise ProbeXError(f"{zoo.root}: choose a tree with --tree ({len(zoo.trees)} trees: {', '.join(zoo.trees[:12])})")


def _layers(path: Path, tree: str, tree_zoo, layers: str | None) -> list[str]:
    from probex.zoo.extras import expert_dirs, recommended_layers

    if layers:
        names = [name.strip() for name in layers.split(",") if name.strip()]
        known = {info.name for info in tree_zoo.catalog()}
        unknown = [name for name in names if name not in known]
        if unknown:
            raise ProbeXError(f"{path}: tree {tree!r} has no layer {unknown[0]!r}; layers: {', '.join(sorted(known)[:12])}")
        return names
    shipped = expert_dirs(path).get(tree)
    if shipped is not None:
        config = json.loads((shipped / "config.json").read_text())
        if config.get("layers"):
            return list(config["layers"])
    recommended = recommended_layers(path).get(tree)
    if recommended:
        return [recommended]
    raise ProbeXError(f"{path}: no recommended layer for tree {tree!r}; name one with --layers "
                      "(see `probex zoo info PATH` or `probex jungle validate`)")


def _hit_dict(hit) -> dict:
    return {"rank": hit.rank, "score": round(hit.score, 6), "model_id": hit.model_id, "labels": hit.labels,
            "split": hit.split, "tree": hit.tree, "path": str(hit.path), "images": [str(image) for image in hit.images]}
