"""Writing safetensors files: byte-deterministic, readable by our reader and by safetensors."""

import torch
from safetensors.torch import load_file

from probex.zoo.manifest import save_model_file
from probex.zoo.safefile import read_header, read_tensors, write_safetensors


def test_the_same_content_gives_the_same_bytes(tmp_path):
    tensors = {"b.weight": torch.randn(3, 4).half(), "a.bias": torch.arange(5, dtype=torch.int64), "c": torch.ones(2, dtype=torch.bool)}
    metadata = {f"key{i}": str(i) for i in range(30)}
    write_safetensors(tmp_path / "one.safetensors", tensors, metadata)
    write_safetensors(tmp_path / "two.safetensors", dict(reversed(list(tensors.items()))), dict(reversed(list(metadata.items()))))
    assert (tmp_path / "one.safetensors").read_bytes() == (tmp_path / "two.safetensors").read_bytes()


def test_written_files_read_back_exactly(tmp_path):
    tensors = {"w": torch.randn(4, 6), "h": torch.randn(2, 2).to(torch.bfloat16), "scalar": torch.tensor(3.5)}
    path = write_safetensors(tmp_path / "m.safetensors", tensors, {"concept": "red star"})
    assert read_header(path).metadata == {"concept": "red star"}
    for loaded in (read_tensors(path), load_file(str(path))):
        assert all(torch.equal(loaded[k], v) for k, v in tensors.items())


def test_model_files_of_a_manifest_zoo_are_deterministic(tmp_path):
    tensors = {"layer.weight": torch.randn(8, 8)}
    for name in ("x", "y"):
        save_model_file(tmp_path / f"{name}.safetensors", tensors, id="m", split="train", tree="t",
                        labels=["cat", "dog"], metadata={"lr": 0.001, "epochs": 3, "augment": True})
    assert (tmp_path / "x.safetensors").read_bytes() == (tmp_path / "y.safetensors").read_bytes()
