"""``probex search | zero-shot | export | align``: the weight-language space from the command line.

PATH defaults to the shipped demo jungle. ``search`` asks every tree of the zoo that ships an
expert (:class:`probex.language.zoo_search.ZooIndex`); ``zero-shot`` and ``export`` use the
aligned expert shipped with a zoo (``experts/<tree>/`` of one of its aligned trees) unless
``--expert`` names another.
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
        "search", usage="probex search [-h] [--tree TREE] [--expert DIR] [-k K] [--json] [PATH] PROMPT",
        help="rank a zoo's models by a text prompt (every tree with an expert answers)",
        description="Rank the models of a whole zoo by how likely each was fine-tuned on what a text prompt names: "
                    "aligned trees answer through their aligned expert, classifier trees by reading the prompt as "
                    "their nearest class names and asking their expert which models were trained on them. Prints "
                    "rank, calibrated score (0-1, comparable across trees), tree, model, why it matched, concept(s), "
                    "split and first training image, then how each tree read the prompt, and a note when no "
                    "model is a strong match.")
    search.add_argument("args", nargs="+", metavar="[PATH] PROMPT", help="the zoo (default: the demo jungle) and the prompt")
    search.add_argument("--tree", type=checks.text, action="append", metavar="TREE",
                        help="search only this tree (repeat, or comma-separate, for several)")
    search.add_argument("--expert", type=checks.existing_folder, metavar="DIR",
                        help="a saved expert (aligned or classifier) to answer for its tree (the one --tree names, "
                             "else the one it was trained on); the search is then narrowed to that tree")
    search.add_argument("-k", type=checks.positive_int, default=10, help="how many models (default 10)")
    search.add_argument("--json", action="store_true", help="print the hits, the weak-match note and each tree's reading as JSON")
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
    from probex.language.zoo_search import ZooIndex
    from probex.progress import tqdm_progress

    path, prompt = _split_args(args.args, "PROMPT", "search")
    zoo = open_zoo(path)
    trees = [name.strip() for value in args.tree or [] for name in value.split(",") if name.strip()] or None
    experts, populations = {}, {}
    if args.expert is not None:
        experts, populations, trees = _given_expert(zoo, Path(args.expert), trees)
    index = ZooIndex(zoo, experts, populations=populations) if args.expert is not None else ZooIndex.from_zoo(zoo)
    with tqdm_progress("reading layers", unit="model") as progress:
        result = index.search(prompt, k=args.k, trees=trees, progress=progress)
    if not result.answering or all(answer.models == 0 for answer in result.answering):
        problems = "; ".join(f"{answer.tree}: {answer.note}" for answer in result.trees if answer.method is None)[:600]
        raise ProbeXError(f"{zoo.root}: no tree here can answer a prompt: none has a usable expert ({problems}); "
                          "pass one with --expert DIR (train one with `probex align PATH --out DIR` or in the app)")
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    _print_result(result, len(zoo))
    return 0


def _given_expert(zoo, folder: Path, trees: list[str] | None) -> tuple[dict, dict, list[str]]:
    """``--expert DIR``: the expert, the tree it answers for (and that tree's models when it is not one of the zoo's)."""
    from probex.language.search import _ids_with_layers, _input_shapes
    from probex.errors import ZooError

    expert = _load_expert(folder)
    if trees is not None and len(trees) > 1:
        raise ProbeXError(f"--expert {folder} answers for one tree; name at most one with --tree (got {', '.join(trees)})")
    recorded = (getattr(expert, "metadata_", None) or {}).get("tree")
    tree = trees[0] if trees else recorded if recorded in zoo.trees else None
    if tree is not None:
        return {tree: expert}, {}, [tree]
    layers = list(getattr(expert, "layers_", None) or [])
    if not layers:
        raise ProbeXError(f"--expert {folder}: it does not name the layers it reads; name its tree with --tree")
    ids = _ids_with_layers(zoo, layers, _input_shapes(expert))
    if not ids:
        raise ZooError(f"{zoo.root}: no model has the expert's layers {', '.join(layers)} in the shapes it reads; "
                       "is this a zoo of the expert's tree? (or name the tree with --tree)")
    name = recorded if isinstance(recorded, str) and recorded else f"models with {folder.name}'s layers"
    return {name: expert}, {name: zoo.select(ids=ids)}, [name]


def _print_result(result, total: int) -> None:
    """The merged hits as a table, how each tree read the prompt, and the weak-match note."""
    answering = result.answering
    kinds = ", ".join(f"{answer.tree} ({answer.method})" for answer in answering)
    print(f"{len(result.hits)} best of {total:,} models for {result.prompt!r}, from {len(answering)} of "
          f"{len(result.trees)} trees answering: {kinds}")
    width = max([len(hit.model_id) for hit in result.hits] + [5])
    tree_width = max([len(hit.tree) for hit in result.hits] + [4])
    why_width = max([len(hit.why) for hit in result.hits] + [3])
    print(f"  {'rank':>4} {'score':>5} {'pct':>5}  {'tree':<{tree_width}}  {'model':<{width}}  {'why':<{why_width}}  "
          f"{'concept(s)':<30} {'split':<12} image")
    for hit in result.hits:
        image = str(hit.images[0]) if hit.images else "-"
        print(f"  {hit.rank:>4} {hit.score:5.3f} {hit.percentile:5.3f}  {hit.tree:<{tree_width}}  {hit.model_id:<{width}}  "
              f"{hit.why:<{why_width}}  {_concepts(hit.labels):<30} {hit.split or '-':<12} {image}")
    print("how each tree read it:")
    for answer in answering:
        print(f"  {answer.tree}: {answer.note}")
    silent = [answer.tree for answer in result.trees if answer.method is None]
    if silent:
        shown = ", ".join(silent[:6]) + (f", ... ({len(silent)} in all)" if len(silent) > 6 else "")
        reasons = {answer.note for answer in result.trees if answer.method is None}
        reason = next(iter(reasons)) if len(reasons) == 1 else "see --json for each tree's reason"
        print(f"  and {len(silent)} tree(s) that cannot answer: {shown}: {reason}")
    if result.weak:
        print(f"weak match: {result.note}")


def _concepts(labels: list[str]) -> str:
    if len(labels) <= 2:
        return "; ".join(labels) or "-"
    return f"{'; '.join(labels[:2])} +{len(labels) - 2}"


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
    check_output_file(out, "export")  # before every model is encoded
    index = _index(path, args.expert)
    written = index.export(out)
    print(f"wrote {len(index)} models x {index.embeddings.shape[1]} dimensions of tree {index.tree or '-'} to {written}")
    return 0


def run_align(args: argparse.Namespace) -> int:
    from probex.experiments.harness import alignment_figures, aligned_splits, chance_levels
    from probex.experiments.sweep import seen_concepts
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
    _check_before_training(tree_zoo, args)
    with tqdm_progress("reading layers", unit="model") as progress:
        banks = {split: [tree_zoo.bank(layer, split=split, progress=progress) for layer in layers] for split in needed}
    training_concepts = sorted({record.labels[0] for record in tree_zoo.records if record.split == "train"})
    banks["test"] = [seen_concepts(bank, training_concepts) for bank in banks["test"]]  # the others: noted above
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
        value = figures.get(key)
        if value is None:  # e.g. a one-class AUC with one test model per concept
            print(f"  {label:<30} {'n/a':>7} {chance[key]:7.3f}  (not measurable on this population; -v says why)")
        else:
            print(f"  {label:<30} {value:7.3f} {chance[key]:7.3f}")
    if args.out is not None:
        expert.save(args.out, metadata={"tree": tree, "task": "align", "layers": layers,
                                        **{key: None if value is None else round(float(value), 4)
                                           for key, value in figures.items()}})
        print(f"expert saved to {args.out}")
    return 0


# -- helpers -----------------------------------------------------------------------------------


def _check_before_training(tree_zoo, args: argparse.Namespace) -> None:
    """What can fail after training, checked before it: the concepts and the text encoder (--out: when parsed)."""
    import sys

    from probex.experiments.sweep import check_alignment_concepts
    from probex.language.text import load_text_encoder

    notes = check_alignment_concepts(tree_zoo)
    try:
        load_text_encoder(args.text_encoder)  # loaded once per process: the expert reuses it
    except ValueError as error:
        raise ProbeXError(f"--text-encoder {args.text_encoder}: {error}") from None
    for note in notes:
        print(f"note: {note}", file=sys.stderr)


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
