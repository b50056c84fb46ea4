"""ModelZoo: a population of models on disk, as records you can filter, inspect and turn into LayerBanks.

    zoo = ModelZoo.open("~/modelj/SD_200")          # detects the layout
    zoo.splits, zoo.trees, zoo.label_names            # what is in it
    zoo.roles                                         # tree -> TreeRole (classifier, aligned, forest)
    zoo.catalog()                                     # usable layers of the first model
    train = zoo.bank("unet.mid_block.attentions.0.transformer_blocks.0.attn1.to_q", split="train")
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator

import torch

from probex.errors import ZooError
from probex.progress import Progress
from probex.zoo.catalog import architecture_name, architecture_signature, layer_catalog
from probex.zoo.folders import split_order
from probex.zoo.layouts import scan_zoo
from probex.zoo.records import ALIGNED, CLASSIFIER, LayerInfo, ModelRecord, TreeRole

if TYPE_CHECKING:
    from probex.zoo.bank import LayerBank


class ModelZoo:
    """A population of models: their records (id, weight file, split, tree, labels, images).

    Open one with :meth:`open`; :meth:`select` gives sub-zoos, :meth:`bank` stacks one layer
    of every model into a :class:`~probex.zoo.bank.LayerBank`.

    Attributes:
        root: the folder it was opened from.
        layout: ``"probex-manifest"``, ``"modelj-generative"`` or ``"modelj-discriminative"``.
        records: the readable models, in the layout's order.
        skipped: (path, reason) of each model left out because it could not be read.
        name, description: from the manifest (the folder name otherwise).
        declared_roles: tree -> TreeRole as the zoo declares it (see :attr:`roles` for every tree).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        layout: str,
        records: Iterable[ModelRecord],
        skipped: Iterable[tuple[Path, str]] = (),
        name: str = "",
        description: str = "",
        roles: dict[str, TreeRole] | None = None,
        population: Iterable[ModelRecord] | None = None,
    ) -> None:
        self.root = Path(root)
        self.layout = layout
        self.records = list(records)
        self.skipped = list(skipped)
        self.name = name or self.root.name
        self.description = description
        self.declared_roles = dict(roles or {})
        self._roles: dict[str, TreeRole] | None = None
        self._by_id = {record.id: record for record in self.records}
        if len(self._by_id) != len(self.records):
            raise ZooError(f"{self.root}: model ids must be unique within a zoo")
        # the records of the zoo as opened: a sub-zoo's banks are views of the whole zoo's
        self._population = self.records if population is None else list(population)

    @classmethod
    def open(cls, path: str | os.PathLike, progress: Progress | None = None) -> "ModelZoo":
        """Open the zoo in folder ``path``, detecting its layout (reads each model's header, not its weights).

        Raises:
            ZooError: no zoo layout matches (the message says what was looked for).
        """
        scan = scan_zoo(path, progress=progress)
        return cls(scan.root, scan.layout, scan.records, scan.skipped, scan.name, scan.description, scan.roles)

    # -- what is in it ---------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[ModelRecord]:
        return iter(self.records)

    def __contains__(self, model_id: object) -> bool:
        return model_id in self._by_id

    def __repr__(self) -> str:
        trees = self.trees
        shown = ", ".join(repr(tree) for tree in trees[:6]) + (f", ... ({len(trees)} trees)" if len(trees) > 6 else "")
        return f"ModelZoo({self.name!r}, layout={self.layout!r}, models={len(self)}, splits={self.splits}, trees=[{shown}])"

    def record(self, model_id: str) -> ModelRecord:
        """The record of one model, by id (ZooError naming close ids if there is none)."""
        try:
            return self._by_id[model_id]
        except KeyError:
            raise ZooError(f"{self.root}: no model {model_id!r}{_closest(model_id, self._by_id)}") from None

    @property
    def ids(self) -> list[str]:
        """Model ids, in record order."""
        return [record.id for record in self.records]

    @property
    def splits(self) -> list[str]:
        """The splits present (train, val, test first, then the others alphabetically)."""
        return _ordered_splits({record.split for record in self.records if record.split is not None})

    @property
    def trees(self) -> list[str]:
        """The trees present, sorted."""
        return sorted({record.tree for record in self.records if record.tree is not None})

    @property
    def roles(self) -> dict[str, TreeRole]:
        """tree -> its role, for every tree that has one: declared by the zoo, else read off its models.

        Undeclared trees: held-out splits (``*_holdout``) make a tree aligned, labels a classifier;
        a tree with neither has no role (it can be clustered, not taught). A forest is never inferred.
        """
        if self._roles is None:
            splits: dict[str, set] = {}
            labelled: set[str] = set()
            for record in self.records:
                if record.tree is None:
                    continue
                splits.setdefault(record.tree, set()).add(record.split)
                if record.labels:
                    labelled.add(record.tree)
            roles = {}
            for tree, tree_splits in splits.items():
                if tree in self.declared_roles:
                    roles[tree] = self.declared_roles[tree]
                    continue
                held_out = sorted((split for split in tree_splits if split and split.endswith("holdout")),
                                  key=lambda split: (not split.startswith("val"), split))
                if held_out and tree in labelled:
                    roles[tree] = TreeRole(ALIGNED, tuple(held_out), declared=False)
                elif tree in labelled:
                    roles[tree] = TreeRole(CLASSIFIER, declared=False)
            self._roles = roles
        return self._roles

    def role(self, tree: str) -> TreeRole | None:
        """The role of one tree (None when it has none)."""
        return self.roles.get(tree)

    def trees_with_role(self, *roles: str) -> list[str]:
        """The trees whose role is one of ``roles`` (``"classifier"``, ``"aligned"``, ``"forest"``), sorted."""
        return [tree for tree in self.trees if tree in self.roles and self.roles[tree].role in roles]

    def held_out_splits(self) -> tuple[str, ...]:
        """The splits of classes held out from training (validation first), for zero-shot; () when none.

        Those its aligned trees declare (or that were read off them); in a zoo without trees,
        the splits named ``*_holdout``.
        """
        for tree in self.trees_with_role(ALIGNED):
            held_out = tuple(split for split in self.roles[tree].held_out_splits if split in self.splits)
            if held_out:
                return held_out
        if self.trees:
            return ()
        return tuple(sorted((split for split in self.splits if split.endswith("holdout")),
                            key=lambda split: (not split.startswith("val"), split)))

    @property
    def label_names(self) -> list[str]:
        """The label vocabulary: every class name any model was trained on, sorted."""
        return sorted({label for record in self.records for label in record.labels})

    # -- sub-zoos --------------------------------------------------------------------------

    def select(
        self,
        split: str | Iterable[str] | None = None,
        tree: str | Iterable[str] | None = None,
        ids: Iterable[str] | None = None,
    ) -> "ModelZoo":
        """The sub-zoo of the models in ``split`` and ``tree`` (a name or a list) and, if given, ``ids`` (in that order).

        Raises:
            ZooError: a split, tree or id that the zoo does not have (with the available ones).
        """
        records = self.records
        if split is not None:
            wanted = _as_set(split, "split", self.splits, self.root)
            records = [record for record in records if record.split in wanted]
        if tree is not None:
            wanted = _as_set(tree, "tree", self.trees, self.root)
            records = [record for record in records if record.tree in wanted]
        if ids is not None:
            ids = [ids] if isinstance(ids, str) else list(ids)
            for model_id in ids:
                if model_id not in self._by_id:
                    raise ZooError(f"{self.root}: no model {model_id!r}{_closest(model_id, self._by_id)}")
            kept = {record.id for record in records}
            records = [self._by_id[model_id] for model_id in ids if model_id in kept]
        return self._with(records)

    def _with(self, records: list[ModelRecord]) -> "ModelZoo":
        """A sub-zoo of these records, keeping the zoo's name, skipped files, declared roles and population
        (a sub-zoo's banks are views of the whole zoo's)."""
        return ModelZoo(self.root, self.layout, records, self.skipped, self.name, self.description,
                        self.declared_roles, self._population)

    # -- layers ----------------------------------------------------------------------------

    def catalog(self, record: ModelRecord | str | None = None, conv_layout: str | None = None) -> list[LayerInfo]:
        """The usable weight layers of one model (by record or id; default the first), in file order.

        ``conv_layout`` as in :meth:`bank`.
        """
        if record is None:
            if not self.records:
                raise ZooError(f"{self.root}: the zoo holds no readable model, so it has no layers")
            record = self.records[0]
        elif isinstance(record, str):
            record = self.record(record)
        return list(layer_catalog(record.read_header(), conv_layout))

    def architectures(self) -> dict[str, "ModelZoo"]:
        """Sub-zoos of models with the same layer names and shapes, keyed by a short readable signature.

        Models of different architectures never share a LayerBank (nor a tree).
        """
        groups: dict[tuple, list[ModelRecord]] = {}
        names: dict[tuple, str] = {}
        for record in self.records:
            catalog = layer_catalog(record.read_header())
            signature = architecture_signature(catalog)
            if signature not in groups:
                groups[signature] = []
                names[signature] = architecture_name(catalog)
            groups[signature].append(record)
        return {names[signature]: self._with(records) for signature, records in groups.items()}

    def layer_name(self, layer: str | int) -> str:
        """The catalog name of ``layer``: a name is returned as is; in a Model-J zoo the paper's number ("59") is looked up.

        Raises:
            ZooError: a number in a zoo that is not Model-J's, or one its files do not hold.
        """
        from probex.zoo.modelj_layers import is_layer_number, resolve_layer

        if not is_layer_number(layer) or not self.records:
            return str(layer)
        record = self.records[0]
        return resolve_layer(record.read_header(), layer, {info.name for info in self.catalog(record)})

    def bank(
        self,
        layer: str | int,
        split: str | Iterable[str] | None = None,
        dtype: torch.dtype | None = None,
        progress: Progress | None = None,
        cache: bool | str | os.PathLike = True,
        conv_layout: str | None = None,
    ) -> "LayerBank":
        """One layer of every model (of ``split``, if given) stacked into a LayerBank: X [N, d_W, d_H], or
        a LoRA layer's factors B [N, d_W, r] and A [N, r, d_H] (see :mod:`probex.zoo.bank`).

        The zoo as opened has one cached bank per layer; the bank of a split or a sub-zoo is a
        view of it (built once, stored once).

        Args:
            layer: a name from :meth:`catalog` (a LoRA layer by its module name), or in a
                Model-J zoo the paper's layer number (``"59"``; see :meth:`layer_name`).
            split: only the models of this split (or these splits).
            dtype: None (default) keeps the files' dtype (float16 files stay float16, others
                float32); ``torch.float32`` or ``torch.float16`` ask for one.
            progress: called as ``progress(done, total, message)`` while the bank is built.
            cache: True for the default cache folder (``$PROBEX_CACHE/banks``, else
                ``~/.cache/probex/banks``), a folder to cache in, or False to build in memory.
            conv_layout: how conv kernels become matrices: ``"out-first"`` ([out, in*kh*kw]) or
                ``"modelj"`` (the official Model-J loader's reshape to [in*kh*kw, out]); None
                (default) reads Model-J ResNet checkpoints as ``"modelj"`` and every other file as
                ``"out-first"`` (see :mod:`probex.zoo.modelj_layers`).

        Raises:
            ZooError: a model lacks the layer (names the file and the closest layer names), or
                the models disagree on its shape.
        """
        from probex.zoo.bank_build import build_bank

        zoo = self.select(split=split) if split is not None else self
        return build_bank(zoo.records, self.layer_name(layer), dtype=dtype, progress=progress, cache=cache,
                          zoo_root=self.root, population=self._population, conv_layout=conv_layout)


def _ordered_splits(splits: set[str]) -> list[str]:
    return sorted(splits, key=split_order)


def _as_set(value: str | Iterable[str], what: str, available: list[str], root: Path) -> set[str]:
    wanted = {value} if isinstance(value, str) else set(value)
    unknown = sorted(wanted - set(available))
    if unknown:
        raise ZooError(f"{root}: no {what} {unknown[0]!r} in this zoo; available {what}s: {', '.join(available) or 'none'}")
    return wanted


def _closest(name: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=5, cutoff=0.5)
    return f"; closest: {', '.join(close)}" if close else ""
