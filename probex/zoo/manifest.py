"""Our own zoo layout: a JSON manifest at the zoo root plus one safetensors file per model.

The demo jungle and users' own folders are written in it. ``probex_zoo.json``::

    {
      "format": "probex-zoo",
      "version": 1,
      "name": "demo-jungle",
      "description": "optional free text",
      "models": [
        {
          "id": "vit-tiny/ft-0001",                       # unique in the zoo (required)
          "path": "models/ft-0001/model.safetensors",     # relative to the manifest (required)
          "split": "train",                               # or null
          "tree": "vit-tiny",                             # its base model / Model Tree, or null
          "labels": ["cat", "dog"],                       # readable class names (may be empty)
          "metadata": {"lr": "0.001", "epochs": "10"},    # hyperparameters, JSON values
          "images": "models/ft-0001/training_images"      # folder of its training images, a list of
                                                          # image files, {"per_label": folder}, or null
        }
      ],
      "trees": {                                          # optional: what each tree is for
        "vit-tiny": {"role": "classifier"},
        "sd-loras": {"role": "aligned", "held_out_splits": ["val_holdout", "test_holdout"]},
        "scratch-001": {"role": "forest"},
        "cnn-own-heads": {"role": "classifier", "views": "xtxu"}   # its experts read other probe views
      }
    }

Only ``id`` and ``path`` are required; a tree's role (:class:`~probex.zoo.records.TreeRole`:
``classifier``, ``aligned`` with its held-out splits, or ``forest``, independently initialised
models that share no root) is read off its models when the manifest does not give it. A role may
name the probe views the tree's experts read (``"views"``, :mod:`probex.experts.views`) where
ProbeX's own view does not read that tree. Paths use
forward slashes and are relative to the manifest's folder. A path may leave the zoo's folder
(``../shared/model.safetensors``, or an absolute path, as :func:`write_manifest` writes for files
elsewhere): such models are read, and opening the zoo logs one warning naming how many do and the
first of them, so a manifest from someone else cannot point probex at other files unseen. Only
regular files are read. A path holding a NUL byte leaves that one model out (listed in
``skipped``), not the zoo. Each weight file's own safetensors metadata repeats ``id``, ``split``,
``tree``, ``labels`` (a JSON list) and the metadata entries as strings, so a file moved out of
its zoo still says what it is (:func:`save_model_file` writes it so). Where the two differ the
manifest wins. Opening reads the manifest and each file's header (to validate it and list its
layers), never the tensors.

Images shared by many models (renders of each class, written once per tree) are named by
reference: ``{"per_label": "trees/cnn/class_images"}`` gives a model the images of
``class_images/<safe_name(label)>/`` for each of its labels, in the order of its labels
(:func:`class_images_folder`), so the manifest stays small however many models share them.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch

from probex.errors import ZooError
from probex.progress import Progress
from probex.storage import atomic_write_json, read_regular_bytes, safe_name
from probex.zoo.folders import HeaderBudget, ZooScan, list_images, read_header_or_skip, report_progress
from probex.zoo.limits import limit
from probex.zoo.records import TREE_ROLES, ModelRecord, TreeRole
from probex.zoo.safefile import write_safetensors

logger = logging.getLogger(__name__)

LAYOUT = "probex-manifest"
MANIFEST_NAME = "probex_zoo.json"
MANIFEST_FORMAT = "probex-zoo"
MANIFEST_VERSION = 1

#: Keys of a weight file's own metadata that describe the model rather than its training.
RESERVED_KEYS = ("id", "split", "tree", "labels")

_ENTRY_KEYS = frozenset({"id", "path", "split", "tree", "labels", "metadata", "images"})


def read_manifest(root: str | os.PathLike) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The manifest's zoo fields (format, version, name, description, trees) and its checked model entries.

    Raises:
        ZooError: the manifest is not valid JSON, not our format, or an entry is malformed
            (the message names the file and the entry).
    """
    path = Path(root) / MANIFEST_NAME
    try:
        document = json.loads(read_regular_bytes(path, limit("PROBEX_MAX_HEADER_BYTES"), "zoo manifest").decode("utf-8"))
    except OSError as error:
        raise ZooError(f"{path}: cannot read the zoo manifest ({error.strerror or error})") from error
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ZooError(f"{path}: the zoo manifest is not valid JSON ({error})") from error
    if not isinstance(document, dict) or document.get("format") != MANIFEST_FORMAT:
        raise ZooError(f"{path}: not a probex zoo manifest (expected \"format\": \"{MANIFEST_FORMAT}\")")
    version = document.get("version")
    if not isinstance(version, int) or version > MANIFEST_VERSION:
        raise ZooError(
            f"{path}: manifest version {version!r} is not supported (this probex reads up to "
            f"version {MANIFEST_VERSION}); upgrade probex"
        )
    models = document.get("models")
    if not isinstance(models, list):
        raise ZooError(f"{path}: \"models\" must be a list of model entries")
    entries = [_check_entry(entry, index, path) for index, entry in enumerate(models)]
    seen: set[str] = set()
    for entry in entries:
        if entry["id"] in seen:
            raise ZooError(f"{path}: model id {entry['id']!r} appears twice; ids must be unique")
        seen.add(entry["id"])
    fields = {key: document.get(key) for key in ("format", "version", "name", "description")}
    fields["trees"] = _check_roles(document.get("trees"), path)
    return fields, entries


def _check_roles(trees: object, path: Path) -> dict[str, TreeRole]:
    """The manifest's ``"trees"`` section as tree -> TreeRole (ZooError naming the tree when malformed)."""
    if trees is None:
        return {}
    if not isinstance(trees, dict):
        raise ZooError(f"{path}: \"trees\" must be a JSON object of tree name -> {{\"role\": ...}}")
    roles = {}
    for tree, entry in trees.items():
        where = f"{path}: tree {tree!r}"
        if not isinstance(entry, dict) or entry.get("role") not in TREE_ROLES:
            raise ZooError(f"{where}: expected {{\"role\": one of {', '.join(TREE_ROLES)}}}")
        unknown = set(entry) - {"role", "held_out_splits", "views"}
        if unknown:
            raise ZooError(f"{where}: unknown keys {sorted(unknown)}; allowed: held_out_splits, role, views")
        held_out = entry.get("held_out_splits", [])
        if not isinstance(held_out, list) or not all(isinstance(split, str) for split in held_out):
            raise ZooError(f"{where}: \"held_out_splits\" must be a list of split names")
        views = entry.get("views")
        if views is not None and not (isinstance(views, str) and re.fullmatch(r"[a-z]+(\+[a-z]+)*", views)):
            raise ZooError(f"{where}: \"views\" must be probe views joined with '+' (e.g. \"xtxu\" or \"xu+xtxu\")")
        roles[tree] = TreeRole(entry["role"], tuple(held_out), views=views)
    return roles


def scan_manifest(root: Path, progress: Progress | None = None) -> ZooScan:
    """Read the manifest zoo at ``root``: its records, with each weight file's header validated."""
    fields, entries = read_manifest(root)
    records: list[ModelRecord] = []
    listed: dict[Path, list[Path]] = {}  # per-label image folders, listed once
    skipped: list[tuple[Path, str]] = []
    budget = HeaderBudget(root)
    outside = [entry for entry in entries
               if _leaves_folder(entry["path"]) or any(map(_leaves_folder, _image_paths(entry.get("images"))))]
    if outside:
        logger.warning("%s: %d model(s) of the manifest point outside the zoo's folder (../ or an absolute path), "
                       "e.g. %r -> %r; they are read from there", root / MANIFEST_NAME, len(outside),
                       outside[0]["id"], outside[0]["path"])
    for done, entry in enumerate(entries, start=1):
        path = root / entry["path"]
        header = read_header_or_skip(path, skipped, budget)
        report_progress(progress, done, len(entries), "reading model headers")
        if header is None:
            continue
        stored_id = header.metadata.get("id")
        if stored_id is not None and stored_id != entry["id"]:
            logger.warning("%s: file metadata says id %r, the manifest %r; using the manifest", path, stored_id, entry["id"])
        extra = {key: value for key, value in header.metadata.items() if key not in RESERVED_KEYS}
        images = _images_of(root, entry.get("images"), entry.get("labels", []), listed)
        records.append(
            ModelRecord(
                id=entry["id"],
                path=path,
                split=entry.get("split"),
                tree=entry.get("tree"),
                labels=list(entry["labels"]),
                metadata={**extra, **entry["metadata"]},
                images=images,
                header=header,
            )
        )
    return ZooScan(
        root=root,
        layout=LAYOUT,
        records=records,
        skipped=skipped,
        name=str(fields.get("name") or root.name),
        description=str(fields.get("description") or ""),
        roles=fields["trees"],
    )


#: The key of a manifest entry's shared, per-class images: ``{"per_label": folder}``.
PER_LABEL = "per_label"


def class_images_folder(folder: Path, label: str) -> Path:
    """Where the images of class ``label`` lie in a per-label images ``folder`` (one sub-folder per class)."""
    return Path(folder) / safe_name(label)


def _images_of(root: Path, images: str | list[str] | dict | None, labels: list[str],
               listed: dict[Path, list[Path]]) -> list[Path]:
    """A model's training images: its folder's, the files its list names, or its labels' shared images."""
    if not images:
        return []
    if isinstance(images, list):
        return [root / image for image in images]
    if isinstance(images, dict):
        found = []
        for label in labels:
            folder = class_images_folder(root / images[PER_LABEL], label)
            if folder not in listed:  # shared by many models: each folder is listed once
                listed[folder] = list_images(folder)
            found += listed[folder]
        return found
    return list_images(root / images)


def _image_paths(images: str | list[str] | dict | None) -> list[str]:
    """The paths a manifest entry's ``images`` names (a folder, files, or the per-label folder)."""
    if isinstance(images, dict):
        return [images[PER_LABEL]]
    return images if isinstance(images, list) else [images] if images else []


def _leaves_folder(relative: str | None) -> bool:
    """True when a manifest path climbs out of the zoo's folder (``..``) or is absolute."""
    if not relative:
        return False
    normal = os.path.normpath(relative.replace("\\", "/"))
    return os.path.isabs(normal) or normal == ".." or normal.startswith("../")


def _check_entry(entry: object, index: int, path: Path) -> dict[str, Any]:
    where = f"{path}: model entry {index}"
    if not isinstance(entry, dict):
        raise ZooError(f"{where} is not a JSON object")
    if isinstance(entry.get("id"), str):
        where = f"{path}: model {entry['id']!r}"
    for key in ("id", "path"):
        if not isinstance(entry.get(key), str) or not entry[key]:
            raise ZooError(f"{where}: \"{key}\" must be a non-empty string")
    for key in ("split", "tree"):
        if entry.get(key) is not None and not isinstance(entry[key], str):
            raise ZooError(f"{where}: \"{key}\" must be a string or null")
    images = entry.get("images")
    if images is not None and not isinstance(images, str) and not (
            isinstance(images, list) and all(isinstance(image, str) and image for image in images)) and not (
            isinstance(images, dict) and set(images) == {PER_LABEL} and isinstance(images[PER_LABEL], str)
            and images[PER_LABEL]):
        raise ZooError(f"{where}: \"images\" must be a folder (a string), a list of image files, "
                       f"{{\"{PER_LABEL}\": folder}}, or null")
    labels = entry.get("labels", [])
    if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
        raise ZooError(f"{where}: \"labels\" must be a list of class names (strings)")
    metadata = entry.get("metadata", {})
    if not isinstance(metadata, dict):
        raise ZooError(f"{where}: \"metadata\" must be a JSON object")
    unknown = set(entry) - _ENTRY_KEYS
    if unknown:
        raise ZooError(f"{where}: unknown keys {sorted(unknown)}; allowed: {sorted(_ENTRY_KEYS)}")
    return {**entry, "labels": labels, "metadata": metadata}


def file_metadata(
    *, id: str, split: str | None = None, tree: str | None = None, labels: Iterable[str] = (), metadata: Mapping[str, Any] | None = None
) -> dict[str, str]:
    """The safetensors ``__metadata__`` (all strings) that describes one model of a manifest zoo."""
    strings = {key: value if isinstance(value, str) else json.dumps(value) for key, value in (metadata or {}).items()}
    clash = set(strings) & set(RESERVED_KEYS)
    if clash:
        raise ZooError(f"model {id!r}: metadata keys {sorted(clash)} are reserved for the model's own fields")
    strings.update(id=id, labels=json.dumps(list(labels)))
    if split is not None:
        strings["split"] = split
    if tree is not None:
        strings["tree"] = tree
    return strings


def save_model_file(
    path: str | os.PathLike,
    tensors: Mapping[str, torch.Tensor],
    *,
    id: str,
    split: str | None = None,
    tree: str | None = None,
    labels: Iterable[str] = (),
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write one model's weights as a safetensors file whose metadata says what the model is.

    Atomic, and byte-deterministic: the same model gives the same bytes.
    """
    strings = file_metadata(id=id, split=split, tree=tree, labels=labels, metadata=metadata)
    return write_safetensors(path, tensors, strings)


def write_manifest(
    root: str | os.PathLike,
    records: Iterable[ModelRecord],
    *,
    name: str,
    description: str = "",
    trees: Mapping[str, TreeRole] | None = None,
) -> Path:
    """Write ``probex_zoo.json`` for models whose files lie under ``root`` (atomically).

    A record's ``images`` are written as their folder when they are that folder's images, else as a
    list of files (images shared by several models).
    ``trees`` declares what each tree is for (see :class:`~probex.zoo.records.TreeRole`).
    """
    root = Path(root)
    models = []
    for record in records:
        entry: dict[str, Any] = {
            "id": record.id,
            "path": _relative(record.path, root),
            "split": record.split,
            "tree": record.tree,
            "labels": list(record.labels),
            "metadata": dict(record.metadata),
            "images": None,
        }
        if record.images:
            folders = {Path(image).parent for image in record.images}
            folder = folders.pop() if len(folders) == 1 else None
            if folder is not None and list_images(folder) == sorted(Path(image) for image in record.images):
                entry["images"] = _relative(folder, root)
            else:
                entry["images"] = [_relative(image, root) for image in record.images]
        models.append(entry)
    target = root / MANIFEST_NAME
    document: dict[str, Any] = {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "name": name,
                                "description": description, "models": models}
    if trees:
        document["trees"] = {tree: role.to_json() for tree, role in sorted(trees.items())}
    atomic_write_json(target, document)
    return target


def _relative(path: str | os.PathLike, root: Path) -> str:
    path = Path(path)
    if not path.is_absolute():
        return path.as_posix()
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return Path(os.path.relpath(path, root)).as_posix()
