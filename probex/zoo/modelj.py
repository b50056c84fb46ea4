"""The two Model-J layouts of the paper's dataset (ProbeX, CVPR 2025), as they sit on disk.

Generative (SD_200, SD_1k: one Hub repo per subset)::

    ROOT/{split}/model_idx_XXXX/pytorch_lora_weights.safetensors
    ROOT/{split}/model_idx_XXXX/training_images/*.png

Splits train, val, test, val_holdout, test_holdout. The metadata's ``imagenet_class_id`` (an
index 0..999 or a synset id such as ``n01440764``) gives the label, read as its ImageNet
name. ROOT may also be one split folder, the Hugging Face cache folder
``models--ProbeX--Model-J__SD_200`` (its ``refs/main`` snapshot), or a cache holding that one
repo. Tree: the subset named by a ``Model-J__SUBSET`` folder on the path, or by an ``SD_200`` /
``SD_1k`` folder (where ``probex download modelj`` puts them), else the metadata's
``base_model`` / ``pretrained_model_name_or_path``, else ``"generative"``.

Discriminative (Sup.ViT, DINO, MAE, ResNet: one Hub repo per model) in the Hugging Face cache
layout, one cache folder per split::

    ROOT/{split}/models--ProbeX--Model-J__MAE__model_idx_0929/refs/main
    ROOT/{split}/models--ProbeX--Model-J__MAE__model_idx_0929/snapshots/<rev>/model.safetensors

``config.json``, ``trainer_state.json`` and the pickle ``training_args.bin`` beside it are
never loaded. Labels: the metadata's ``dataset_chosen_targets``, a Python-literal list of
CIFAR-100 class names (parsed with ``ast.literal_eval``, never evaluated; integers are read as
CIFAR-100 indices). Tree: the subset (``MAE``). ROOT may also be one split's cache folder, or an
``HF_HOME`` with a ``hub/`` folder. Other repos in the cache (a user's fine-tunes from
``probex download repos``) are read too: id ``owner/name``, tree from the metadata's
``base_model`` or a PEFT ``adapter_config.json``, labels from ``config.json``'s ``id2label``
when those are names rather than ``LABEL_0``.

Ids are the folder names (``model_idx_0929``). When two models of one root share a name (two
subsets or two splits in one folder), every id is qualified, ``MAE/model_idx_0929``.

A model whose file is missing, truncated or malformed, or whose label metadata is present but
unreadable, is left out and listed in ``skipped`` with the reason; a model without label
metadata is kept with no labels.
"""

from __future__ import annotations

import ast
import json
import os
import re
from pathlib import Path
from typing import Any

from probex.errors import ZooError
from probex.progress import Progress
from probex.storage import read_regular_bytes
from probex.zoo.classnames import cifar100_names, imagenet_name
from probex.zoo.folders import (HeaderBudget, ZooScan, list_images, read_header_or_skip, report_progress, skip_reason,
                                split_order, subdirs)
from probex.zoo.records import ALIGNED, CLASSIFIER, HELD_OUT_SPLITS, ModelRecord, TreeRole

GENERATIVE_LAYOUT = "modelj-generative"
DISCRIMINATIVE_LAYOUT = "modelj-discriminative"

LORA_WEIGHTS = "pytorch_lora_weights.safetensors"
IMAGES_FOLDER = "training_images"
KNOWN_SPLITS = ("train", "val", "validation", "test", "val_holdout", "test_holdout")

# Weight files a Hub snapshot may hold, in order of preference.
_SNAPSHOT_WEIGHTS = ("model.safetensors", "adapter_model.safetensors", LORA_WEIGHTS)
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
_MODELJ_REPO = re.compile(r"^Model-J__(?P<subset>.+?)__(?P<model>model_idx_\d+)$")
_GENERATIVE_SUBSETS = ("SD_200", "SD_1k")  # the folder names probex download gives them
_MODELJ_SUBSET_FOLDER = re.compile(r"^(?:models--[^/]+?--)?Model-J__(?P<subset>[^/]+)$")
_REVISION = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
_MAX_LITERAL_CHARS = 200_000
_MAX_JSON_SIDE_FILE = 4 * 1024 * 1024


def hf_snapshot(repo_dir: Path) -> Path:
    """The snapshot folder ``refs/main`` points to in a Hugging Face cache repo folder.

    Raises:
        ZooError: no usable ref or snapshot.
    """
    ref = repo_dir / "refs" / "main"
    snapshots = repo_dir / "snapshots"
    if os.path.lexists(ref):
        revision = read_regular_bytes(ref, 4096, "ref file").decode("utf-8", errors="replace").strip()
        if not _REVISION.match(revision) or revision in (".", ".."):
            raise ZooError(f"{ref}: not a revision hash ({revision[:60]!r})")
        snapshot = snapshots / revision
        if not snapshot.is_dir():
            raise ZooError(f"{repo_dir}: refs/main names revision {revision}, but snapshots/{revision} is missing; download the repo again")
        return snapshot
    candidates = sorted(subdirs(snapshots)) if snapshots.is_dir() else []
    if len(candidates) == 1:
        return candidates[0]
    raise ZooError(f"{repo_dir}: no refs/main and {len(candidates)} snapshots; cannot tell which revision to read")


def _by_split(groups: list[tuple[str | None, list[Path]]]) -> list[tuple[str | None, list[Path]]]:
    return sorted(groups, key=lambda group: split_order(group[0]))


def _split_name(folder: Path) -> str | None:
    return folder.name if folder.name in KNOWN_SPLITS else None


def _read_json_side_file(path: Path) -> dict[str, Any]:
    """A small JSON file beside a model (config.json, adapter_config.json), or {} if absent or unreadable."""
    try:
        value = json.loads(read_regular_bytes(path, _MAX_JSON_SIDE_FILE, "JSON file").decode("utf-8"))
    except (OSError, ZooError, UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}


def _make_ids_unique(
    records: list[ModelRecord], qualifiers: list[str | None], skipped: list[tuple[Path, str]]
) -> list[ModelRecord]:
    """Qualify ids (``qualifier/id``, then ``split/qualifier/id``) when two models share one; drop exact duplicates."""
    ids = [record.id for record in records]
    if len(set(ids)) != len(ids):
        ids = [f"{qualifier}/{base}" if qualifier else base for qualifier, base in zip(qualifiers, ids)]
    if len(set(ids)) != len(ids):
        ids = [f"{record.split}/{qualified}" if record.split else qualified for record, qualified in zip(records, ids)]
    unique: list[ModelRecord] = []
    seen: dict[str, Path] = {}
    for record, new_id in zip(records, ids):
        if new_id in seen:
            skipped.append((record.path, f"same model id {new_id!r} as {seen[new_id]}"))
            continue
        seen[new_id] = record.path
        record.id = new_id
        unique.append(record)
    return unique


# ---------------------------------------------------------------------------------------------
# generative: {split}/model_idx_XXXX/pytorch_lora_weights.safetensors


def _generative_groups(root: Path) -> list[tuple[str | None, list[Path]]]:
    """(split, model folders) of a generative zoo rooted at ``root``; empty if it is not one."""
    direct = list(subdirs(root))
    # lexists, not is_file: a model whose file is a FIFO or a broken link is found, then skipped with a reason
    if any(os.path.lexists(folder / LORA_WEIGHTS) for folder in direct):
        return [(_split_name(root), direct)]
    groups = []
    for split_folder in direct:
        models = list(subdirs(split_folder))
        if any(os.path.lexists(folder / LORA_WEIGHTS) for folder in models):
            groups.append((split_folder.name, models))
    return _by_split(groups)


def generative_root(root: Path) -> Path | None:
    """The folder that holds a generative zoo's splits: ``root`` itself or a Hub snapshot inside it."""
    if _generative_groups(root):
        return root
    repos = [root] if root.name.startswith("models--") else _hf_repo_dirs(root)
    found = []
    for repo in repos:
        try:
            snapshot = hf_snapshot(repo)
        except ZooError:
            continue
        if _generative_groups(snapshot):
            found.append(snapshot)
    if len(found) > 1:
        raise ZooError(f"{root}: holds {len(found)} generative Model-J zoos; open one of them: " + ", ".join(str(path) for path in found))
    return found[0] if found else None


def _modelj_subset(root: Path) -> str | None:
    """The Model-J subset named by a folder on the path: ``Model-J__SD_200`` (the Hub cache) or
    ``SD_200`` / ``SD_1k`` (where ``probex download modelj`` puts it) -> ``SD_200``."""
    for folder in [root, *list(root.parents)[:3]]:
        match = _MODELJ_SUBSET_FOLDER.match(folder.name)
        if match:
            return match.group("subset")
        if folder.name in _GENERATIVE_SUBSETS:
            return folder.name
    return None


def scan_generative(root: Path, progress: Progress | None) -> ZooScan:
    subset = _modelj_subset(root)
    folders = [(split, folder) for split, models in _generative_groups(root) for folder in models]
    records: list[ModelRecord] = []
    skipped: list[tuple[Path, str]] = []
    budget = HeaderBudget(root)
    for done, (split, folder) in enumerate(folders, start=1):
        path = folder / LORA_WEIGHTS
        report_progress(progress, done, len(folders), "reading model headers")
        if not os.path.lexists(path):
            skipped.append((folder, f"no {LORA_WEIGHTS} in the model folder"))
            continue
        header = read_header_or_skip(path, skipped, budget)
        if header is None:
            continue
        metadata = dict(header.metadata)
        try:
            labels = _imagenet_labels(metadata)
        except ZooError as error:
            skipped.append((path, str(error)))
            continue
        tree = subset or metadata.get("base_model") or metadata.get("pretrained_model_name_or_path") or "generative"
        records.append(
            ModelRecord(
                id=folder.name,
                path=path,
                split=split,
                tree=tree,
                labels=labels,
                metadata=metadata,
                images=list_images(folder / IMAGES_FOLDER),
                header=header,
            )
        )
    records = _make_ids_unique(records, [record.split for record in records], skipped)
    name = f"Model-J {subset}" if subset else root.name
    # Model-J's SD subsets are aligned with text; their *_holdout splits hold the zero-shot concepts.
    held_out = tuple(split for split in HELD_OUT_SPLITS if any(record.split == split for record in records))
    roles = {record.tree: TreeRole(ALIGNED, held_out) for record in records if record.tree is not None}
    return ZooScan(root=root, layout=GENERATIVE_LAYOUT, records=records, skipped=skipped, name=name, roles=roles)


def _imagenet_labels(metadata: dict[str, str]) -> list[str]:
    """Model-J's ``imagenet_class_id`` as a readable name; else our own files' ``concept``."""
    class_id = metadata.get("imagenet_class_id")
    if class_id is not None and str(class_id).strip() != "":
        return [imagenet_name(class_id)]
    concept = metadata.get("concept")
    return [concept] if concept else []


# ---------------------------------------------------------------------------------------------
# discriminative: Hugging Face cache folders, one per split


def _hf_repo_dirs(folder: Path) -> list[Path]:
    repos = [path for path in subdirs(folder) if path.name.startswith("models--")]
    hub = folder / "hub"
    if hub.is_dir():
        repos += [path for path in subdirs(hub) if path.name.startswith("models--")]
    return repos


def discriminative_groups(root: Path) -> list[tuple[str | None, list[Path]]]:
    direct = _hf_repo_dirs(root)
    if direct:
        return [(_split_name(root), direct)]
    groups = []
    for split_folder in subdirs(root):
        repos = _hf_repo_dirs(split_folder)
        if repos:
            groups.append((split_folder.name, repos))
    return _by_split(groups)


def _snapshot_weights(snapshot: Path) -> Path:
    for name in _SNAPSHOT_WEIGHTS:
        if (snapshot / name).exists():
            return snapshot / name
    files = sorted(snapshot.glob("*.safetensors"))
    if len(files) == 1:
        return files[0]
    if len(files) > 1:
        raise ZooError(f"{len(files)} safetensors files (a sharded checkpoint?); probex reads models stored in one file")
    pickles = sorted(path.name for path in snapshot.iterdir() if path.suffix in _PICKLE_SUFFIXES)
    found = f" (found {', '.join(pickles)}: pickle files, which probex never loads)" if pickles else ""
    raise ZooError(f"no .safetensors weights{found}")


def scan_discriminative(root: Path, groups: list[tuple[str | None, list[Path]]], progress: Progress | None) -> ZooScan:
    repos = [(split, repo) for split, repo_dirs in groups for repo in repo_dirs]
    records: list[ModelRecord] = []
    qualifiers: list[str | None] = []
    skipped: list[tuple[Path, str]] = []
    budget = HeaderBudget(root)
    for done, (split, repo) in enumerate(repos, start=1):
        report_progress(progress, done, len(repos), "reading model headers")
        try:
            snapshot = hf_snapshot(repo)
            path = _snapshot_weights(snapshot)
        except ZooError as error:
            skipped.append((repo, skip_reason(error, repo)))
            continue
        header = read_header_or_skip(path, skipped, budget)
        if header is None:
            continue
        owner, _, name = repo.name[len("models--"):].partition("--")
        metadata: dict[str, Any] = dict(header.metadata)
        metadata.update(repo_id=f"{owner}/{name}", revision=snapshot.name)
        modelj = _MODELJ_REPO.match(name)
        try:
            if modelj:
                model_id, tree, qualifier = modelj.group("model"), modelj.group("subset"), modelj.group("subset")
                metadata["subset"] = tree
                labels = _cifar_labels(header.metadata)
            else:
                model_id, qualifier = f"{owner}/{name}", split
                tree = metadata.get("base_model") or _read_json_side_file(snapshot / "adapter_config.json").get("base_model_name_or_path")
                labels = _cifar_labels(header.metadata) if "dataset_chosen_targets" in header.metadata else _config_labels(snapshot)
        except ZooError as error:
            skipped.append((path, str(error)))
            continue
        records.append(
            ModelRecord(id=model_id, path=path, split=split, tree=tree, labels=labels, metadata=metadata, images=[], header=header)
        )
        qualifiers.append(qualifier)
    records = _make_ids_unique(records, qualifiers, skipped)
    roles = {record.metadata["subset"]: TreeRole(CLASSIFIER) for record in records if "subset" in record.metadata}
    return ZooScan(root=root, layout=DISCRIMINATIVE_LAYOUT, records=records, skipped=skipped, name=root.name, roles=roles)


def _cifar_labels(metadata: dict[str, str]) -> list[str]:
    """The class names of ``dataset_chosen_targets`` (a Python literal list; ints are CIFAR-100 indices)."""
    text = metadata.get("dataset_chosen_targets")
    if text is None:
        return []
    if len(text) > _MAX_LITERAL_CHARS:
        raise ZooError(f"dataset_chosen_targets is {len(text)} characters long; expected a list of class names")
    try:
        value = ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as error:
        raise ZooError(f"dataset_chosen_targets is not a Python list literal ({type(error).__name__}: {text[:60]!r})") from None
    if not isinstance(value, (list, tuple)):
        raise ZooError(f"dataset_chosen_targets is a {type(value).__name__}, expected a list of class names")
    names = cifar100_names()
    labels = []
    for item in value:
        if isinstance(item, str):
            labels.append(item)
        elif isinstance(item, int) and not isinstance(item, bool) and 0 <= item < len(names):
            labels.append(names[item])
        else:
            raise ZooError(f"dataset_chosen_targets holds {item!r}, expected class names or CIFAR-100 indices")
    return labels


def _config_labels(snapshot: Path) -> list[str]:
    """Class names from a Transformers ``config.json`` ``id2label``, unless they are placeholders (LABEL_0)."""
    id2label = _read_json_side_file(snapshot / "config.json").get("id2label")
    if not isinstance(id2label, dict):
        return []
    labels = [str(value) for _, value in sorted(id2label.items(), key=lambda item: int(item[0]) if str(item[0]).isdigit() else 0)]
    if all(re.fullmatch(r"LABEL_\d+", label) for label in labels):
        return []
    return labels
