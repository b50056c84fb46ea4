"""The scale benchmark on tiny zoos: the generator writes the real Model-J layouts and the measured figures beat chance.

No speed or memory is asserted here: bench_scale.py measures those on Model-J-sized zoos.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from probex.zoo import ModelZoo

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_scale.py"
SD_LAYER = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"


def bench(*arguments: str, timeout: int = 600) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, str(SCRIPT), *arguments], capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return result


@pytest.fixture(scope="module")
def sd_zoo(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sd-scale")
    bench("generate", "sd", "--models", "300", "--classes", "30", "--held-out", "8", "--modules", "tiny", "--out", str(out))
    return out


def test_the_generated_sd_zoo_is_read_as_model_j_generative_with_real_module_names_and_shapes(sd_zoo):
    summary = json.loads((sd_zoo / "scale_zoo.json").read_text())
    zoo = ModelZoo.open(summary["root"])
    assert zoo.layout == "modelj-generative" and len(zoo) == 300 and not zoo.skipped
    assert set(zoo.splits) == {"train", "val", "test", "val_holdout", "test_holdout"}
    assert zoo.trees == ["SD_200"]  # named by the Model-J__SD_200 folder, as the Hub repo is
    catalog = {info.name: (info.shape, info.kind) for info in zoo.catalog()}
    assert catalog[SD_LAYER] == ((320, 320), "lora")
    assert catalog["unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k"] == ((320, 768), "lora")  # text states
    record = zoo.records[0]
    assert record.metadata["imagenet_class_id"].isdigit() and record.metadata["rank"] == "16"
    assert len(zoo.label_names) == 30 and record.images
    held_out = {r.labels[0] for r in zoo.records if r.split.endswith("holdout")}
    trained = {r.labels[0] for r in zoo.records if r.split == "train"}
    assert len(held_out) == 8 and not held_out & trained


def test_the_paper_layer_keeps_its_sd_shape_and_index_46_in_the_full_unet():
    sys.path.insert(0, str(SCRIPT.parent))
    import scale_zoos

    modules = scale_zoos.sd15_lora_modules()
    names = [name for name, _, _ in modules]
    assert len(modules) == 128 and names.index(scale_zoos.PAPER_LAYER) == 46
    assert modules[46][1:] == (1280, 1280)
    assert all(scale_zoos.PAPER_LAYER in subset for name, subset in scale_zoos.SD_SUBSETS.items() if name in ("attn2", "minimal"))


def test_the_sd_steps_run_and_the_aligned_figures_beat_chance(sd_zoo, tmp_path):
    out = tmp_path / "bench.json"
    printed = bench("measure", str(sd_zoo), "--label", "test", "--steps", "open,bank,align,search", "--layer", SD_LAYER,
                    "--epochs", "40", "--work", str(tmp_path / "work"), "--out", str(out)).stdout
    run = json.loads(out.read_text())["runs"]["test"]["sd-300"]
    assert all(run[step]["status"] == "ok" for step in ("open", "bank", "align", "search")), printed
    assert run["bank"]["bank_on_disk_gb"] > 0 and run["align"]["peak_rss_gb"] > 0
    figures = run["align"]["figures"]
    in_distribution = next(value for name, value in figures.items() if name.startswith("in-distribution"))
    zero_shot = next(value for name, value in figures.items() if name.startswith("zero-shot"))
    assert in_distribution["value"] >= in_distribution["chance"] + 0.3  # 1/22 training concepts
    assert zero_shot["value"] >= zero_shot["chance"] + 0.2  # 1/8 held-out concepts
    assert "align" in printed and "peak RSS" in printed


def test_the_vit_zoo_is_read_as_model_j_discriminative_float16_and_its_classifier_beats_chance(tmp_path):
    bench("generate", "vit", "--models", "80", "--out", str(tmp_path / "vit"))
    summary = json.loads((tmp_path / "vit" / "scale_zoo.json").read_text())
    zoo = ModelZoo.open(summary["root"])
    assert zoo.layout == "modelj-discriminative" and len(zoo) == 80 and zoo.trees == ["SupViT"]
    record = zoo.records[0]
    assert record.id.startswith("model_idx_") and len(record.labels) == 50
    header = record.read_header()
    layer = summary["layer"]
    assert header.tensors[layer].shape == (768, 768) and header.tensors[layer].dtype == "F16"
    out = tmp_path / "bench.json"
    bench("measure", str(tmp_path / "vit"), "--label", "test", "--steps", "route,classify", "--epochs", "30",
          "--work", str(tmp_path / "work"), "--out", str(out))
    run = json.loads(out.read_text())["runs"]["test"]["vit-80"]
    assert run["route"]["figures"]["trees_found"] == 1
    test = run["classify"]["figures"]["test"]
    assert test["value"] >= test["chance"] + 0.08  # mean binary accuracy over 100 CIFAR classes, 56 training models
