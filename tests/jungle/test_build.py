"""A small demo jungle, built in the test session, reads back as a zoo with every tree."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from probex import ModelZoo
from probex.cli import main
from probex.errors import ProbeXError
from probex.storage import safe_name
from probex.zoo.manifest import class_images_folder
from probex.jungle import discriminative as disc
from probex.jungle import load


def test_the_small_jungle_opens_as_one_zoo_with_every_tree(small_jungle):
    zoo = ModelZoo.open(small_jungle)
    assert not zoo.skipped
    trees = set(zoo.trees)
    assert {"cnn-supervised", "cnn-attributes", "mixer-supervised", "mini-sd"} <= trees
    forest = [t for t in trees if t.startswith("forest-")]
    assert len(forest) == disc.SIZES["small"].forest_models
    assert set(zoo.splits) >= {"train", "val", "test", "val_holdout", "test_holdout"}


def test_discriminative_models_are_labelled_with_half_the_pool(small_jungle):
    zoo = ModelZoo.open(small_jungle).select(tree="cnn-supervised")
    pool = {disc.concept(i).name for i in disc.POOL_CONCEPTS}
    assert all(len(r.labels) == disc.CLASSES_PER_MODEL and set(r.labels) <= pool for r in zoo.records)
    names = [layer.name for layer in zoo.catalog()]
    assert "conv3.weight" in names and "head.weight" in names


def test_every_classifier_model_shows_renders_of_each_of_its_training_classes(small_jungle):
    zoo = ModelZoo.open(small_jungle)
    classifiers = [record for record in zoo.records if record.tree != "mini-sd"]
    assert len(classifiers) == len(disc.TREES) * disc.SIZES["small"].models_per_tree + disc.SIZES["small"].forest_models
    for record in classifiers:
        assert len(record.images) == disc.SHARED_IMAGES * len(record.labels)
        shown = [image.parent.name for image in record.images]
        assert shown == [safe_name(label) for label in record.labels for _ in range(disc.SHARED_IMAGES)]
    files = {image for record in classifiers for image in record.images}
    assert all(image.is_file() and image.read_bytes()[:4] == b"\x89PNG" for image in files)
    assert len(files) == disc.SHARED_IMAGES * len(disc.POOL_CONCEPTS) * (len(disc.TREES) + 1)  # once per tree and class
    entries = json.loads((small_jungle / "probex_zoo.json").read_text())["models"]
    assert all(entry["images"] == {"per_label": f"discriminative/{entry['id'].split('/')[0]}/class_images"}
               for entry in entries if entry["tree"] != "mini-sd")  # by reference: the manifest stays small


def test_the_shown_images_are_renders_every_model_of_the_tree_trained_on(tmp_path):
    recipe = next(recipe for recipe in disc.TREES if recipe.name == "cnn-supervised")
    indices = disc.own_image_indices(5, torch.Generator().manual_seed(3))
    assert (indices[..., :disc.SHARED_IMAGES] == torch.arange(disc.SHARED_IMAGES)).all()
    assert all(len(set(row.tolist())) == disc.IMAGES_PER_CLASS for row in indices.flatten(0, 1))  # no render twice
    folder = disc.write_class_images(recipe, 0, tmp_path, recipe.name)
    pool = disc.render_pool(torch.Generator().manual_seed(recipe.seed))  # the generator fine_tune_tree starts from
    row = 5
    written = class_images_folder(tmp_path / folder, disc.concept(disc.POOL_CONCEPTS[row]).name) / "1.png"
    pixels = torch.tensor(np.asarray(Image.open(written))).permute(2, 0, 1).float() / 255
    assert (pixels - pool[row, 1]).abs().max() <= 0.5 / 255 + 1e-6  # the render itself, in 8 bits


def test_every_lora_model_has_its_training_images(small_jungle):
    zoo = ModelZoo.open(small_jungle).select(tree="mini-sd")
    assert len(zoo) > 0 and all(len(r.images) >= 5 and len(r.labels) == 1 for r in zoo.records)


def test_the_generative_folder_alone_is_the_model_j_generative_layout(small_jungle):
    zoo = ModelZoo.open(small_jungle / "generative")
    assert zoo.layout != ModelZoo.open(small_jungle).layout
    assert len(zoo) == len(ModelZoo.open(small_jungle).select(tree="mini-sd"))
    assert all(len(record.labels) == 1 and record.tree == "mini-sd" for record in zoo.records)


def test_a_rebuild_can_keep_an_earlier_generative_tree_byte_for_byte(small_jungle, tmp_path):
    from probex.jungle.build import _reuse_generative

    entries = _reuse_generative(tmp_path, small_jungle / "generative")
    manifest = json.loads((small_jungle / "probex_zoo.json").read_text())["models"]
    assert entries == sorted((entry for entry in manifest if entry["tree"] == "mini-sd"), key=lambda entry: entry["id"])
    before = sorted(path.relative_to(small_jungle) for path in (small_jungle / "generative").rglob("*") if path.is_file())
    after = sorted(path.relative_to(tmp_path) for path in (tmp_path / "generative").rglob("*") if path.is_file())
    assert before == after
    from probex.storage import ARTIFACT_FILE  # the folder's own marker is written again; every model file is kept

    assert all((small_jungle / path).read_bytes() == (tmp_path / path).read_bytes() for path in before
               if path.name != ARTIFACT_FILE)


def test_reusing_a_folder_that_holds_no_generative_tree_says_so(tmp_path):
    from probex.errors import ZooError
    from probex.jungle.build import _reuse_generative

    (tmp_path / "empty").mkdir()
    with pytest.raises(ZooError, match="not a generative tree"):
        _reuse_generative(tmp_path / "out", tmp_path / "empty")
    assert not (tmp_path / "out" / "generative").exists()


def test_load_reads_a_built_jungle_and_the_build_report(small_jungle):
    assert len(load(small_jungle)) == len(ModelZoo.open(small_jungle))
    report = json.loads((small_jungle / "build.json").read_text())
    assert report["size"] == "small" and report["total_seconds"] > 0
    assert set(report) >= {"cnn-supervised", "cnn-attributes", "mixer-supervised", "forest", "generative"}


def test_load_without_a_jungle_says_how_to_build_one(tmp_path):
    with pytest.raises(ValueError, match="probex jungle build --out"):
        load(tmp_path)


@pytest.mark.parametrize("tree", ["cnn-supervised", "mixer-supervised"])  # full fine-tuning, LoRA
def test_fine_tuning_is_deterministic_for_a_seed(tree):
    recipe = next(recipe for recipe in disc.TREES if recipe.name == tree)
    root = disc.pretrain_root(recipe, steps=5)
    first = disc.fine_tune_tree(recipe, root, n_models=3, seed=1, step_scale=0.1)
    second = disc.fine_tune_tree(recipe, root, n_models=3, seed=1, step_scale=0.1)
    assert all(torch.equal(a.weights[k], b.weights[k]) for a, b in zip(first, second) for k in a.weights)
    assert [m.classes for m in first] == [m.classes for m in second]


def test_every_model_of_a_tree_starts_its_head_from_one_initialisation():
    """Heads of one tree stay similar; heads of forest models (each its own start) do not."""
    recipe = next(recipe for recipe in disc.TREES if recipe.name == "cnn-supervised")
    root = disc.pretrain_root(recipe, steps=2)
    tuned = disc.fine_tune_tree(recipe, root, n_models=3, seed=0, step_scale=0.1)
    # heads move during fine-tuning, but their shared start shows as high similarity
    heads = torch.stack([m.weights["head.weight"].flatten() for m in tuned])
    similarity = torch.nn.functional.cosine_similarity(heads[0], heads[1], dim=0)
    assert similarity > 0.5
    forest = disc.fine_tune_tree(disc.FOREST, None, n_models=2, seed=0, step_scale=0.1)
    apart = torch.nn.functional.cosine_similarity(forest[0].weights["head.weight"].flatten(),
                                                  forest[1].weights["head.weight"].flatten(), dim=0)
    assert abs(float(apart)) < 0.5


def test_a_masked_head_trains_each_models_own_class_rows_and_leaves_the_rest_at_the_shared_start():
    from dataclasses import replace

    recipe = replace(next(recipe for recipe in disc.TREES if recipe.name == "cnn-supervised"), head="masked")
    root = disc.pretrain_root(recipe, steps=2)
    tuned = disc.fine_tune_tree(recipe, root, n_models=3, seed=0, step_scale=0.1)
    with disc.seeded(recipe.seed + 1):
        start = disc.make_model(recipe.architecture, len(disc.POOL_CONCEPTS)).head.weight
    pool_names = [disc.concept(int(c)).name for c in disc.POOL_CONCEPTS]
    for model in tuned:
        assert len(model.classes) == 12 and model.hyperparameters["head"] == "masked"
        head = model.weights["head.weight"]
        own = torch.tensor([name in model.classes for name in pool_names])
        assert head.shape == (24, start.shape[1])
        # untrained rows keep their start but for weight decay (under 0.1% here): the leak that
        # makes the head a trivial read-out; trained rows move
        assert torch.allclose(head[~own], start[~own], rtol=2e-3, atol=0)
        assert not torch.allclose(head[own], start[own], rtol=2e-3, atol=0)
    assert len({tuple(model.classes) for model in tuned}) == 3  # any 12 of the 24, not fixed pairs


def test_an_own_head_layout_starts_every_model_from_its_own_head():
    from dataclasses import replace

    recipe = replace(next(recipe for recipe in disc.TREES if recipe.name == "cnn-supervised"), head="own")
    root = disc.pretrain_root(recipe, steps=2)
    tuned = disc.fine_tune_tree(recipe, root, n_models=2, seed=0, step_scale=0.1)
    heads = [model.weights["head.weight"].flatten() for model in tuned]
    assert abs(float(torch.nn.functional.cosine_similarity(heads[0], heads[1], dim=0))) < 0.5
    with pytest.raises(ProbeXError, match="head must be one of"):
        replace(recipe, head="sorted")


def test_a_lora_fine_tuning_trains_only_its_low_rank_updates_and_the_head():
    from probex.jungle.architectures import add_lora, make_model

    torch.manual_seed(0)
    base = make_model("wide-mixer", 12)
    images = torch.rand(4, 3, 16, 16)
    expected = base(images)
    model = add_lora(base, ("block1.channel_fc2", "block2.channel_fc2"), rank=4)
    trainable = {name: tuple(parameter.shape) for name, parameter in model.named_parameters()}
    assert trainable == {"block1.channel_fc2.lora.down.weight": (4, 512), "block1.channel_fc2.lora.up.weight": (64, 4),
                         "block2.channel_fc2.lora.down.weight": (4, 512), "block2.channel_fc2.lora.up.weight": (64, 4),
                         "head.weight": (12, 64), "head.bias": (12,)}
    assert torch.allclose(model(images), expected, atol=1e-6)  # the up factor starts at zero: the root's function


def test_a_resumed_build_keeps_the_trees_already_written_and_trains_the_rest(small_jungle, tmp_path):
    import shutil

    from probex.jungle.build import build_discriminative

    shutil.copytree(small_jungle / "discriminative", tmp_path / "discriminative")
    shutil.copytree(small_jungle / "roots", tmp_path / "roots")
    (tmp_path / "discriminative" / "forest" / "ft-0003.safetensors").unlink()  # the forest was interrupted
    shutil.rmtree(tmp_path / "discriminative" / "cnn-supervised" / "class_images")
    added = disc.TREES[-1].name  # a tree added since (its models and its root are not there yet)
    shutil.rmtree(tmp_path / "discriminative" / added)
    (tmp_path / "roots" / f"{added}.safetensors").unlink()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as build_jungle trains: one thread, so the root comes out the same
    try:
        entries, report = build_discriminative(tmp_path, "small", 0, roots=tmp_path / "roots", resume=True)
    finally:
        torch.set_num_threads(threads)
    manifest = json.loads((small_jungle / "probex_zoo.json").read_text())["models"]
    assert entries == [entry for entry in manifest if entry["tree"] != "mini-sd"]  # what a fresh build wrote
    assert [tree for tree, part in report.items() if part.get("kept")] == [recipe.name for recipe in disc.TREES[:-1]]
    assert report[added]["root"]["reused"] is None  # pre-trained again, and saved beside the others
    again, first = (load_file(str(folder / "roots" / f"{added}.safetensors")) for folder in (tmp_path, small_jungle))
    assert again.keys() == first.keys() and all(torch.equal(again[name], first[name]) for name in first)
    assert (tmp_path / "discriminative" / "forest" / "ft-0003.safetensors").read_bytes() == \
        (small_jungle / "discriminative" / "forest" / "ft-0003.safetensors").read_bytes()
    record = next(record for record in ModelZoo.open(small_jungle).records if record.tree == "cnn-supervised")
    shown = record.images[0].relative_to(small_jungle)
    assert (tmp_path / shown).read_bytes() == (small_jungle / shown).read_bytes()  # class images drawn again


def test_two_processes_sharing_the_queue_of_trees_build_what_one_process_builds(small_jungle, tmp_path):
    """The small jungle is built by two processes (``--workers 2``) taking trees off one queue; one process
    building every tree writes the same manifest entries and the same files, byte for byte."""
    from probex.jungle.build import DISCRIMINATIVE, build_discriminative, read_build_report

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as build_jungle trains: one thread per process
    try:
        entries, report = build_discriminative(tmp_path, "small", 0)
    finally:
        torch.set_num_threads(threads)
    manifest = json.loads((small_jungle / "probex_zoo.json").read_text())["models"]
    assert entries == [entry for entry in manifest if entry["tree"] != "mini-sd"]
    for entry in entries:
        assert (tmp_path / entry["path"]).read_bytes() == (small_jungle / entry["path"]).read_bytes(), entry["path"]
    for recipe in disc.TREES:
        assert (tmp_path / "roots" / f"{recipe.name}.safetensors").read_bytes() == \
            (small_jungle / "roots" / f"{recipe.name}.safetensors").read_bytes()
    built = read_build_report(small_jungle)  # each tree says which process built it
    assert all(built[recipe.name]["process"] in (1, 2) for recipe in DISCRIMINATIVE)
    assert set(report) == {recipe.name for recipe in DISCRIMINATIVE}


def test_with_the_generative_tree_kept_both_processes_take_classifier_trees_from_the_start(small_jungle, tmp_path):
    from probex.jungle.build import DISCRIMINATIVE, build_jungle, read_build_report

    out = build_jungle(tmp_path / "again", size="small", workers=2, generative=small_jungle / "generative",
                       validate=False)
    manifest, first = (json.loads((folder / "probex_zoo.json").read_text()) for folder in (out, small_jungle))
    assert manifest == first  # the same entries, in the same order, whichever process built a tree
    for entry in manifest["models"]:
        assert (out / entry["path"]).read_bytes() == (small_jungle / entry["path"]).read_bytes(), entry["path"]
    report = read_build_report(out)
    assert {report[recipe.name]["process"] for recipe in DISCRIMINATIVE} == {1, 2}  # both took trees
    assert report["generative"]["reused"] == str(small_jungle / "generative")


def test_a_second_process_failing_before_it_shares_the_lora_chunks_fails_the_build_with_its_error(tmp_path, monkeypatch):
    """The first process waits for the LoRA chunks once its trees are done; if the second fails before it
    offers any, the build stops with the second's error instead of waiting (the second is a fork of this
    process: it sees the patches)."""
    import multiprocessing

    from probex.jungle import build as build_module
    from probex.jungle import generative

    if multiprocessing.get_start_method() != "fork":
        pytest.skip("the patches reach the second process only when it is forked")

    def broken_root(*args, **kwargs):
        raise ProbeXError("the root could not be trained")

    monkeypatch.setattr(build_module, "BUILD_ORDER", ())  # no classifier tree: the first process goes straight to waiting
    monkeypatch.setattr(generative, "pretrain_root", broken_root)
    with pytest.raises(ProbeXError, match="the root could not be trained"):
        build_module._in_two_processes(tmp_path, "small", 0, None, None, False, None, build_generative=True)
    assert not any(path.name.startswith(".generative") for path in tmp_path.iterdir())


def test_two_processes_take_every_tree_longest_first_and_a_tree_the_order_does_not_name_last(monkeypatch):
    from probex.jungle import build as build_module

    assert build_module._build_order() == list(build_module.BUILD_ORDER)
    assert sorted(build_module.BUILD_ORDER) == sorted(recipe.name for recipe in build_module.DISCRIMINATIVE)
    monkeypatch.setattr(build_module, "BUILD_ORDER", ("forest", "gone"))
    assert build_module._build_order() == ["forest"] + [recipe.name for recipe in disc.TREES]
