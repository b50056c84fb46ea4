"""Class-name tables shipped as data: the CIFAR-100 fine labels and ImageNet-1k classes.

Model-J stores labels as class names (discriminative models: CIFAR-100 names in
``dataset_chosen_targets``) or as ImageNet class ids (generative LoRA models:
``imagenet_class_id``, an index 0..999 or a WordNet synset id such as ``n01440764``). These
tables turn them into readable words. The files live in ``assets/classnames/`` of the
repository (``probex/assets/classnames`` in an installed wheel: :mod:`probex.shipped`);
``imagenet1k.tsv`` was extracted once from the timm wheel by
``assets/classnames/extract_imagenet.py``: the first WordNet lemma of each synset, except for
the two pairs of classes that share one ("crane": the bird n02012849 and the machine
n03126707; "maillot": n03710637 and n03710721), which keep the official ProbeX table's names
("crane, bird" / "construction crane", "maillot" / "maillot, tank suit"). Every one of the
1,000 classes has its own name, so no two classes share a label or a zero-shot text.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from probex.errors import ZooError
from probex.shipped import assets_dir

#: Where the class-name files live (the shipped ``assets/classnames``).
CLASSNAMES_DIR = assets_dir() / "classnames"


@dataclass(frozen=True)
class ImageNetClass:
    """One ImageNet-1k class: its WordNet synset id, its index 0..999 and its readable name."""

    synset: str
    index: int
    name: str


def _read_asset(filename: str) -> str:
    path = CLASSNAMES_DIR / filename
    try:
        return path.read_text(encoding="utf-8")
    except OSError as error:
        raise ZooError(
            f"{path}: class-name table missing ({error.strerror}); reinstall probex (its wheel "
            "carries assets/classnames as package data) or run it from a full checkout"
        ) from error


def cifar100_names() -> list[str]:
    """The 100 CIFAR-100 fine label names in the standard label order (0 = apple ... 99 = worm)."""
    return list(_cifar100_tuple())


@lru_cache(maxsize=None)
def _cifar100_tuple() -> tuple[str, ...]:
    return tuple(line.strip() for line in _read_asset("cifar100.txt").splitlines() if line.strip())


@lru_cache(maxsize=None)
def imagenet_classes() -> tuple[ImageNetClass, ...]:
    """The 1000 ImageNet-1k classes in index order."""
    classes = []
    for line in _read_asset("imagenet1k.tsv").splitlines()[1:]:  # first line: column names
        if line.strip():
            synset, index, name = line.split("\t")
            classes.append(ImageNetClass(synset=synset, index=int(index), name=name))
    return tuple(classes)


@lru_cache(maxsize=None)
def _imagenet_by_synset() -> dict[str, ImageNetClass]:
    return {item.synset: item for item in imagenet_classes()}


def imagenet_class(class_id: int | str) -> ImageNetClass:
    """The ImageNet-1k class of an index (0..999, int or decimal string) or a synset id ("n01440764").

    Raises:
        ZooError: the id is neither a valid index nor a known synset id.
    """
    text = str(class_id).strip()
    if text.lstrip("-").isdigit():
        index = int(text)
        classes = imagenet_classes()
        if 0 <= index < len(classes):
            return classes[index]
        raise ZooError(f"ImageNet class index {index} is out of range 0..{len(classes) - 1}")
    found = _imagenet_by_synset().get(text)
    if found is None:
        raise ZooError(
            f"unknown ImageNet class id {class_id!r}: expected an index 0..999 or an "
            "ImageNet-1k synset id such as 'n01440764'"
        )
    return found


def imagenet_name(class_id: int | str) -> str:
    """The readable name of an ImageNet-1k class: ``imagenet_name(0) == imagenet_name("n01440764") == "tench"``."""
    return imagenet_class(class_id).name
