"""``probex zoo info`` and ``probex zoo bank`` on miniature zoos."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "zoo"))  # the zoo builders live beside the zoo tests

from zoo_fixtures import write_discriminative_zoo, write_garbage_header, write_generative_zoo  # noqa: E402

from probex.cli import main  # noqa: E402


def test_zoo_info_prints_layout_counts_labels_layers_and_skipped_files(tmp_path, capsys):
    written = write_discriminative_zoo(tmp_path, splits={"train": 3, "val": 1}, subset="MAE")
    write_discriminative_zoo(tmp_path, splits={"train": 2}, subset="ResNet", first_index=20)
    broken = written[1].path.resolve()  # the blob behind the snapshot symlink
    write_garbage_header(broken)
    assert main(["zoo", "info", str(tmp_path), "--layers", "2"]) == 0
    out = capsys.readouterr().out
    assert "modelj-discriminative" in out and "models: 5 readable, 1 skipped" in out
    mae_row = next(line for line in out.splitlines() if line.strip().startswith("MAE"))
    assert mae_row.split() == ["MAE", "2", "1", "3"]  # train, val, total
    assert "architectures: 2" in out
    assert "classifier.weight" in out and "10 x 8" in out and "resnet.embedder.embedder.convolution.weight" in out
    assert "more (--layers 0 lists all)" in out
    assert "labels: " in out and "apple" in out
    assert "Model-J__MAE__model_idx_0001" in out and "not valid UTF-8" in out


def test_zoo_info_of_a_folder_without_zoo_exits_2_with_one_paragraph(tmp_path, capsys):
    assert main(["zoo", "info", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("probex zoo: ") and "no model zoo found" in err and "Traceback" not in err


def test_zoo_bank_builds_the_cache_and_reports_the_shape(tmp_path, capsys):
    write_generative_zoo(tmp_path / "zoo", splits={"train": 2, "val": 1}, images_per_model=0)
    layer = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k"
    argv = ["zoo", "bank", str(tmp_path / "zoo"), layer, "--split", "train", "--dtype", "float16", "--cache-dir", str(tmp_path / "cache")]
    assert main(argv) == 0
    assert f"{layer}: 2 models x 8 x 6 (float16)" in capsys.readouterr().out
    assert len(list((tmp_path / "cache").glob("*.json"))) == 1


def test_zoo_info_folds_a_forest_of_one_model_trees_into_one_row(tmp_path, capsys):
    import torch

    from probex.zoo.manifest import save_model_file, write_manifest
    from probex.zoo.records import ModelRecord

    records = []
    for i in range(15):
        path = tmp_path / f"m{i}.safetensors"
        save_model_file(path, {"w": torch.randn(3, 2)}, id=f"m{i}", split="train", tree=f"forest-{i + 1:03d}")
        records.append(ModelRecord(id=f"m{i}", path=path, split="train", tree=f"forest-{i + 1:03d}", labels=[], metadata={}, images=[]))
    write_manifest(tmp_path, records, name="forest")
    assert main(["zoo", "info", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "(15 one-model trees: forest-001 ... forest-015)" in out
    assert "forest-007 " not in out.split("labels:")[0]
