"""The shipped class-name tables: CIFAR-100 fine labels and ImageNet-1k synsets."""

import importlib.util

import pytest

from probex.errors import ZooError
from probex.zoo.classnames import CLASSNAMES_DIR, cifar100_names, imagenet_class, imagenet_classes, imagenet_name


def test_cifar100_has_the_100_fine_labels_in_standard_order():
    names = cifar100_names()
    assert len(names) == 100 and len(set(names)) == 100
    assert names[0] == "apple" and names[1] == "aquarium_fish" and names[99] == "worm"
    assert names.index("maple_tree") == 47 and names.index("tractor") == 89


def test_cifar100_names_returns_a_copy_callers_may_change():
    cifar100_names().append("not a class")
    assert len(cifar100_names()) == 100


def test_imagenet_table_has_1000_classes_with_unique_synsets_in_index_order():
    classes = imagenet_classes()
    assert len(classes) == 1000
    assert [item.index for item in classes] == list(range(1000))
    assert len({item.synset for item in classes}) == 1000


def test_every_imagenet_class_has_its_own_name():
    names = [item.name for item in imagenet_classes()]
    assert len(set(names)) == 1000, sorted({name for name in names if names.count(name) > 1})


def test_the_classes_that_share_a_first_lemma_keep_the_official_names():
    assert imagenet_name("n02012849") == "crane, bird"
    assert imagenet_name("n03126707") == "construction crane"
    assert imagenet_name("n03710637") == "maillot"
    assert imagenet_name("n03710721") == "maillot, tank suit"


def test_imagenet_name_accepts_an_index_a_decimal_string_or_a_synset():
    assert imagenet_name(0) == imagenet_name("0") == imagenet_name("n01440764") == "tench"
    assert imagenet_name(207) == "golden retriever"
    assert imagenet_class("n02504458").index == 386


@pytest.mark.parametrize("bad", [1000, -1, "n99999999", "golden retriever", ""])
def test_imagenet_name_rejects_unknown_ids_with_zoo_error(bad):
    with pytest.raises(ZooError, match="ImageNet"):
        imagenet_name(bad)


@pytest.mark.skipif(importlib.util.find_spec("timm") is None, reason="the table is extracted from the timm wheel's data files")
def test_extraction_script_reproduces_the_shipped_table():
    spec = importlib.util.spec_from_file_location("extract_imagenet", CLASSNAMES_DIR / "extract_imagenet.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = module.imagenet_rows(module.timm_info_folder())
    assert [(item.synset, item.index, item.name) for item in imagenet_classes()] == rows
