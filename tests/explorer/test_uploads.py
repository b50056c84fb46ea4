"""Uploaded model files: refused with a clear message when bad, opened as a one-model zoo when good."""

import pytest
import torch
from safetensors.torch import save

from explorer.uploads import UploadError, open_upload
from probex.errors import ProbeXError


def test_a_good_upload_opens_as_a_zoo_of_one_model_with_its_layers():
    zoo = open_upload("my-model.safetensors", save({"fc.weight": torch.ones(3, 4)}))
    assert zoo.ids == ["my-model"]
    assert [info.name for info in zoo.catalog()] == ["fc.weight"]


def test_the_same_content_uploaded_twice_is_written_once():
    data = save({"fc.weight": torch.arange(12.0).reshape(3, 4)})
    assert open_upload("a.safetensors", data).records[0].path.parent == open_upload("b.safetensors", data).records[0].path.parent


@pytest.mark.parametrize("name, data, reason", [
    ("model.pt", b"\x80\x04", "not a .safetensors file"),
    ("model.safetensors", b"", "empty"),
    ("model.safetensors", b"\x08\0\0\0\0\0\0\0{broken}", "not valid JSON"),
], ids=["pickle", "empty", "corrupt-header"])
def test_a_bad_upload_raises_an_upload_error_naming_the_file_and_the_problem(name, data, reason):
    with pytest.raises(UploadError) as caught:
        open_upload(name, data)
    assert isinstance(caught.value, ProbeXError)
    assert str(caught.value).startswith(name) and reason in str(caught.value)


def test_an_upload_over_the_limit_is_refused_before_it_is_written():
    with pytest.raises(UploadError, match="larger than"):
        open_upload("big.safetensors", b"\0" * 2048, max_bytes=1024)
