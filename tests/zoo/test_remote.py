"""Layer-selective remote reading over HTTP range requests, against a loopback server."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save

from probex.errors import HubUnavailableError, ZooError
from probex.zoo.remote import FIRST_REQUEST_BYTES, RemoteSafetensors, hub_file_url
from probex.zoo.safefile import parse_header, read_tensors


def model_bytes(n_layers: int = 12, width: int = 96) -> bytes:
    generator = torch.Generator().manual_seed(1)
    tensors = {}
    for index in range(n_layers):
        tensors[f"encoder.layer.{index}.attention.query.weight"] = torch.randn(width, width, generator=generator)
        tensors[f"encoder.layer.{index}.attention.query.bias"] = torch.randn(width, generator=generator).half()
    return save(tensors, metadata={"dataset_chosen_targets": "['apple', 'bee']"})


@pytest.fixture
def model_file(tmp_path):
    blob = model_bytes()
    path = tmp_path / "model.safetensors"
    path.write_bytes(blob)
    return path, blob


def test_remote_tensor_equals_the_local_read_and_costs_less_than_tensor_plus_header_plus_8_kib(loopback, model_file):
    path, blob = model_file
    server = loopback.serve_files({"/model.safetensors": blob})
    name = "encoder.layer.5.attention.query.weight"

    remote = RemoteSafetensors(server.url + "/model.safetensors")
    got = remote.read_tensors([name])

    local = read_tensors(path, [name])
    assert torch.equal(got[name], local[name]) and got[name].dtype == local[name].dtype
    info = remote.header.tensors[name]
    budget = info.nbytes + remote.header.data_offset + 8 * 1024
    assert remote.bytes_transferred < budget
    assert server.bytes_sent < budget  # counted on the wire, HTTP headers included
    assert server.bytes_sent < len(blob) / 4


def test_remote_header_equals_the_local_header_and_knows_the_file_size(loopback, model_file):
    path, blob = model_file
    server = loopback.serve_files({"/model.safetensors": blob})

    remote = RemoteSafetensors(server.url + "/model.safetensors")

    assert remote.header.tensors == parse_header(blob, len(blob), str(path)).tensors
    assert remote.header.metadata == {"dataset_chosen_targets": "['apple', 'bee']"}
    assert remote.file_size == len(blob)


def test_every_request_asks_for_a_byte_range(loopback, model_file):
    _, blob = model_file
    server = loopback.serve_files({"/model.safetensors": blob})

    remote = RemoteSafetensors(server.url + "/model.safetensors")
    remote.read_tensors(["encoder.layer.0.attention.query.bias"])

    assert server.requests and all(request.headers.get("range", "").startswith("bytes=") for request in server.requests)


def test_adjacent_tensors_are_fetched_in_one_request(loopback, model_file):
    _, blob = model_file
    server = loopback.serve_files({"/model.safetensors": blob})
    remote = RemoteSafetensors(server.url + "/model.safetensors")
    ordered = list(remote.header.tensors)
    before = len(server.requests)

    got = remote.read_tensors(ordered[3:6])

    assert len(server.requests) - before == 1
    assert list(got) == ordered[3:6]


def test_small_file_arrives_whole_in_the_first_request(loopback):
    blob = save({"w": torch.arange(10.0)})
    assert len(blob) < FIRST_REQUEST_BYTES
    server = loopback.serve_files({"/small.safetensors": blob})

    remote = RemoteSafetensors(server.url + "/small.safetensors")
    got = remote.read_tensors(["w"])

    assert torch.equal(got["w"], torch.arange(10.0))
    assert remote.requests_made == 1


def test_all_tensors_read_remotely_equal_the_local_read(loopback, model_file):
    path, blob = model_file
    server = loopback.serve_files({"/model.safetensors": blob})

    got = RemoteSafetensors(server.url + "/model.safetensors").read_tensors()

    local = read_tensors(path)
    assert list(got) == list(local)
    assert all(torch.equal(got[name], local[name]) for name in local)


def test_server_that_ignores_range_gives_a_clear_zoo_error_without_downloading_the_file(loopback):
    blob = model_bytes(n_layers=40)
    server = loopback.serve_files({"/model.safetensors": blob}, honour_range=False)

    with pytest.raises(ZooError, match="does not support HTTP range requests"):
        RemoteSafetensors(server.url + "/model.safetensors")


def test_missing_remote_tensor_names_the_url_and_the_closest_names(loopback, model_file):
    _, blob = model_file
    server = loopback.serve_files({"/model.safetensors": blob})
    remote = RemoteSafetensors(server.url + "/model.safetensors")

    with pytest.raises(ZooError) as caught:
        remote.read_tensors(["encoder.layer.5.attention.querry.weight"])

    message = str(caught.value)
    assert server.url + "/model.safetensors" in message
    assert "encoder.layer.5.attention.query.weight" in message


def test_missing_remote_file_is_a_zoo_error_saying_not_found(loopback):
    server = loopback.serve_files({})

    with pytest.raises(ZooError, match="not found"):
        RemoteSafetensors(server.url + "/absent.safetensors")


def test_corrupt_remote_header_is_refused_with_a_zoo_error(loopback):
    blob = (2**40).to_bytes(8, "little") + b"{}"
    server = loopback.serve_files({"/bad.safetensors": blob})

    with pytest.raises(ZooError, match="plausible header length"):
        RemoteSafetensors(server.url + "/bad.safetensors")


def test_empty_remote_file_is_a_zoo_error(loopback):
    server = loopback.serve_files({"/empty.safetensors": b""})

    with pytest.raises(ZooError, match="beyond the end of the file"):
        RemoteSafetensors(server.url + "/empty.safetensors")


def test_closed_port_raises_hub_unavailable_error(closed_port):
    with pytest.raises(HubUnavailableError, match="unreachable"):
        RemoteSafetensors(f"http://127.0.0.1:{closed_port}/model.safetensors", timeout=5)


def test_silent_server_times_out_with_hub_unavailable_error(silent_port):
    with pytest.raises(HubUnavailableError, match="unreachable"):
        RemoteSafetensors(f"http://127.0.0.1:{silent_port}/model.safetensors", timeout=0.5)


def test_redirect_to_another_host_is_followed_without_the_authorization_header(loopback, model_file):
    _, blob = model_file
    cdn = loopback.serve_files({"/blob": blob})
    cdn_url = cdn.url.replace("127.0.0.1", "localhost")  # another host name for the same server

    hub = loopback.serve(lambda method, path, headers: loopback.Reply(302, headers={"Location": cdn_url + "/blob"}))
    remote = RemoteSafetensors(hub.url + "/repo/resolve/main/model.safetensors", headers={"Authorization": "Bearer secret"})
    remote.read_tensors(["encoder.layer.0.attention.query.bias"])

    assert all(request.headers.get("authorization") == "Bearer secret" for request in hub.requests)
    assert cdn.requests and all("authorization" not in request.headers for request in cdn.requests)


def test_from_hub_reads_through_the_resolve_url_with_the_token(loopback, model_file, monkeypatch):
    _, blob = model_file
    server = loopback.serve_files({"/ProbeX/Model-J__MAE__model_idx_0001/resolve/main/model.safetensors": blob})
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")

    remote = RemoteSafetensors.from_hub("ProbeX/Model-J__MAE__model_idx_0001", "model.safetensors")

    assert remote.url == server.url + "/ProbeX/Model-J__MAE__model_idx_0001/resolve/main/model.safetensors"
    assert server.requests[0].headers["authorization"] == "Bearer hf_test_token"


def test_from_hub_fails_at_once_when_hf_hub_offline_is_set(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    with pytest.raises(HubUnavailableError, match="HF_HUB_OFFLINE"):
        RemoteSafetensors.from_hub("ProbeX/Model-J__MAE__model_idx_0001", "model.safetensors")


def test_hub_file_url_follows_the_resolve_scheme_and_hf_endpoint(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://mirror.example/")

    assert hub_file_url("ProbeX/Model-J__SD_200", "train/model_idx_0001/pytorch_lora_weights.safetensors") == (
        "http://mirror.example/ProbeX/Model-J__SD_200/resolve/main/train/model_idx_0001/pytorch_lora_weights.safetensors"
    )
    assert hub_file_url("a/b", "x y.json", revision="refs/pr/1", endpoint="https://hf.co", repo_type="dataset") == (
        "https://hf.co/datasets/a/b/resolve/refs%2Fpr%2F1/x%20y.json"
    )
