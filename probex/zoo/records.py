"""The records a zoo is made of: one :class:`ModelRecord` per model, one :class:`LayerInfo` per layer, one :class:`TreeRole` per tree."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from probex.errors import ProbeXError, ZooError
from probex.zoo.safefile import SafetensorsHeader, read_header

#: What changes when a file's content may have changed: (size, mtime_ns, ctime_ns, inode, device).
#: ctime cannot be set back by a user (``touch -d`` and ``os.utime`` set mtime, not ctime).
FileIdentity = tuple[int, int, int, int, int]


def file_identity(path: str | os.PathLike) -> FileIdentity:
    """The identity of a file's current content as the filesystem tells it (OSError if it is gone)."""
    stat = os.stat(path)
    return stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino, stat.st_dev


@dataclass
class ModelRecord:
    """One model of a zoo: where its weights are and what it was trained on.

    Attributes:
        id: unique within its zoo (e.g. ``model_idx_0042``).
        path: its safetensors weight file.
        split: ``"train"``, ``"val"``, ``"test"``, ... or None when the layout has no splits.
        tree: the Model Tree it belongs to (its base model or Model-J subset), None if unknown.
        labels: readable names of the classes it was fine-tuned on.
        metadata: hyperparameters and other facts (the safetensors ``__metadata__`` and the
            layout's own fields; values are strings unless the layout says otherwise).
        images: its training images (empty when the zoo ships none): a folder's images sorted, or
            the files a manifest lists for it (e.g. renders of its training classes, shared by
            reference with other models of its tree, in the order of its labels).
        header: the validated safetensors header, read when the zoo was opened.
        header_identity: the weight file's :func:`file_identity` when ``header`` was read;
            :meth:`read_header` reads the header again when the file has changed since.
    """

    id: str
    path: Path
    split: str | None = None
    tree: str | None = None
    labels: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    images: list[Path] = field(default_factory=list)
    header: SafetensorsHeader | None = field(default=None, repr=False, compare=False)
    header_identity: FileIdentity | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Layouts pass the header they just read: the file as it is now is the one it describes.
        if self.header is not None and self.header_identity is None:
            try:
                self.header_identity = file_identity(self.path)
            except OSError:
                self.header = None  # gone already: read_header will say so

    def read_header(self) -> SafetensorsHeader:
        """The validated safetensors header of its weight file as it is now.

        Read again when the file changed (size, times, inode) since the header was read, so a
        header is never used with another file's bytes.

        Raises:
            ZooError: the file is unreadable or malformed, or keeps changing while it is read.
        """
        for _ in range(3):
            try:
                before = file_identity(self.path)
            except OSError:
                return read_header(self.path)  # raises a ZooError naming the file
            if self.header is not None and before == self.header_identity:
                return self.header
            header = read_header(self.path)
            if file_identity(self.path) == before:
                self.header, self.header_identity = header, before
                return header
        raise ZooError(f"{self.path} ({self.id}): the file keeps changing while it is read; wait until whatever "
                       "writes it is done, then run again")


@dataclass(frozen=True)
class LayerInfo:
    """One usable weight layer of a model, as a LayerBank presents it.

    Attributes:
        name: the layer name used to ask for it (a tensor name, or a LoRA layer's module name).
        shape: ``(d_W, d_H)``, the 2-D matrix ProbeX reads (conv kernels flattened with the
            output channels first, 1-D tensors as a column, LoRA pairs merged).
        source_shape: the stored shape of each source tensor, aligned with ``tensors``.
        kind: ``"linear"`` (2-D), ``"conv"`` (3-D or more, flattened), ``"conv-modelj"`` (a
            Model-J ResNet kernel as the official loader reads it), ``"vector"`` (1-D),
            ``"embedding"`` (leading singleton axes dropped, e.g. ``pos_embed`` [1, 197, 768])
            or ``"lora"`` (a merged LoRA pair).
        tensors: names of the stored tensors it is made from (for a LoRA layer: up, down and
            the alpha tensor when there is one).
        dtype: stored safetensors dtype code of its (first) tensor, e.g. ``"F32"``.
    """

    name: str
    shape: tuple[int, int]
    source_shape: tuple[tuple[int, ...], ...]
    kind: str
    tensors: tuple[str, ...]
    dtype: str

    @property
    def numel(self) -> int:
        """Number of values of the presented matrix (``d_W * d_H``)."""
        return math.prod(self.shape)


#: Models fine-tuned on sets of classes: their experts predict the training classes (the paper's Table 1).
CLASSIFIER = "classifier"
#: One named concept per model: weights are aligned with text, and held-out concepts test zero-shot (Tables 2-4).
ALIGNED = "aligned"
#: Independently initialised models that share no root: the inter-tree control, never clustered into a tree.
FOREST = "forest"
TREE_ROLES = (CLASSIFIER, ALIGNED, FOREST)
#: The held-out splits of Model-J's SD subsets (and the demo jungle's aligned tree), validation first.
HELD_OUT_SPLITS = ("val_holdout", "test_holdout")


@dataclass(frozen=True)
class TreeRole:
    """What a Model Tree is for in the analyses: which task its experts learn, and what it holds out.

    A zoo declares its trees' roles (a manifest's ``"trees"`` section; Model-J's layouts by
    their subset); where it does not, they are read off the models: a tree whose splits include
    held-out ones (``*_holdout``) is aligned, one whose models carry labels is a classifier.

    Attributes:
        role: ``"classifier"``, ``"aligned"`` or ``"forest"`` (see the constants above).
        held_out_splits: for an aligned tree, the splits of concepts never seen in training,
            validation first (``("val_holdout", "test_holdout")``); empty otherwise.
        declared: True when the zoo said so, False when it was inferred.
        views: the probe views the tree's ProbeX experts read, where the zoo asks for other views than
            ProbeX's own (``"xtxu"``, ``"all"``, ...: :mod:`probex.experts.views`); None: ProbeX's ``"xu"``.
            Sweeps, reports and the app's training use them for this tree.
    """

    role: str
    held_out_splits: tuple[str, ...] = ()
    declared: bool = True
    views: Optional[str] = None

    def __post_init__(self) -> None:
        if self.role not in TREE_ROLES:
            raise ProbeXError(f"unknown tree role {self.role!r}; roles: {', '.join(TREE_ROLES)}")

    def to_json(self) -> dict[str, Any]:
        """The manifest entry of this role."""
        entry: dict[str, Any] = {"role": self.role}
        if self.held_out_splits:
            entry["held_out_splits"] = list(self.held_out_splits)
        if self.views is not None:
            entry["views"] = self.views
        return entry
