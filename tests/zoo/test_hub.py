"""Hub downloads, driven through the real huggingface_hub code against a fake Hub on loopback (``fake_hub.py``)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save

from fake_hub import COMMIT, SD_LAYER_46, FakeHub, add_modelj_mae, add_sd_200, add_sd_unet_repo, discriminative_repo

import probex.zoo.hub as hub
from probex.errors import HubUnavailableError, ZooError
from probex.zoo.safefile import read_header, read_tensors


@pytest.fixture
def fake_hub(loopback, monkeypatch, tmp_path):
    from huggingface_hub import constants

    hub_server = FakeHub(loopback)
    monkeypatch.setenv("HF_ENDPOINT", hub_server.url)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    # tests/conftest.py turns huggingface_hub offline for the whole session; this test is online (on loopback).
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr(hub.retry, "RETRY_DELAYS", (0.0,) * 8)
    return hub_server


# --- user repos ---------------------------------------------------------------------------------


def test_download_repos_writes_the_hf_cache_layout_without_pickles(fake_hub, tmp_path):
    repo = discriminative_repo(7)
    fake_hub.add("alice/vit-cifar", repo)

    out = hub.download_repos(["alice/vit-cifar"], tmp_path / "zoo").root

    folder = out / "models--alice--vit-cifar"
    assert (folder / "refs" / "main").read_text() == COMMIT
    snapshot = folder / "snapshots" / COMMIT
    assert (snapshot / "model.safetensors").read_bytes() == repo["model.safetensors"]
    assert (snapshot / "config.json").exists()
    assert not (snapshot / "training_args.bin").exists()
    assert not fake_hub.downloads(".bin")


def test_download_repos_reports_progress_per_repo(fake_hub, tmp_path):
    fake_hub.add("alice/a", discriminative_repo(1))
    fake_hub.add("alice/b", discriminative_repo(2))
    calls = []

    hub.download_repos(["alice/a", "alice/b"], tmp_path, progress=lambda done, total, message: calls.append((done, total)))

    assert calls == [(1, 2), (2, 2)]


def test_a_second_download_fetches_no_file_again(fake_hub, tmp_path):
    fake_hub.add("alice/vit-cifar", discriminative_repo(7))
    hub.download_repos(["alice/vit-cifar"], tmp_path)
    first = len(fake_hub.downloads())

    hub.download_repos(["alice/vit-cifar"], tmp_path)

    assert first > 0 and len(fake_hub.downloads()) == first


def test_a_transient_server_error_is_retried(fake_hub, tmp_path, caplog):
    repo = discriminative_repo(3)
    fake_hub.add("alice/flaky", repo)
    fake_hub.fail_next["model.safetensors"] = 1

    out = hub.download_repos(["alice/flaky"], tmp_path).root

    assert fake_hub.served_503 == 1
    assert "alice/flaky" in caplog.text and "retrying" in caplog.text
    assert (out / "models--alice--flaky" / "snapshots" / COMMIT / "model.safetensors").read_bytes() == repo["model.safetensors"]


def test_a_missing_repo_fails_while_the_others_download_and_the_report_says_which(fake_hub, tmp_path):
    fake_hub.add("alice/present", discriminative_repo(1))

    with pytest.raises(hub.DownloadIncompleteError, match="1 of 2 models .* are missing .first: alice/absent") as caught:
        hub.download_repos(["alice/absent", "alice/present"], tmp_path)

    report = caught.value.report
    assert (tmp_path / "models--alice--present" / "snapshots" / COMMIT / "model.safetensors").exists()
    assert report.downloaded == ["alice/present"] and [item for item, _ in report.failed] == ["alice/absent"]


def test_layers_only_download_writes_just_those_tensors_and_transfers_little(fake_hub, tmp_path):
    repo = discriminative_repo(5)
    fake_hub.add("alice/vit-cifar", repo)
    layer = "vit.encoder.layer.3.attention.query"  # a module: its weight and bias

    out = hub.download_repos(["alice/vit-cifar"], tmp_path, layers=[layer]).root

    path = out / "models--alice--vit-cifar" / "snapshots" / COMMIT / "model.safetensors"
    got = read_tensors(path)
    assert set(got) == {f"{layer}.weight", f"{layer}.bias"}
    original = save_path(tmp_path / "original.safetensors", repo["model.safetensors"])
    assert all(torch.equal(got[name], read_tensors(original, [name])[name]) for name in got)
    assert read_header(path).metadata["dataset_chosen_targets"] == "['apple', 'bee']"
    weight_requests = [r for r in fake_hub.server.requests if r.path.endswith("model.safetensors")]
    assert weight_requests and all("range" in r.headers for r in weight_requests)  # never the whole file


def save_path(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_layers_only_download_of_a_missing_layer_names_the_closest_layers(fake_hub, tmp_path, caplog):
    fake_hub.add("alice/vit-cifar", discriminative_repo(5))

    with pytest.raises(ZooError, match="closest available: vit.encoder.layer.3.attention.query"):
        hub.download_repos(["alice/vit-cifar"], tmp_path, layers=["vit.encoder.layer.3.attention.querry"])


# --- Model-J ------------------------------------------------------------------------------------


def test_modelj_model_ids_come_from_the_metadata_dataset(fake_hub, tmp_path):
    add_modelj_mae(fake_hub, {"train": [3, 1], "val": [2], "test": [4]})

    ids = hub.modelj_model_ids("MAE", "train", cache_dir=tmp_path)

    assert ids == ["ProbeX/Model-J__MAE__model_idx_0003", "ProbeX/Model-J__MAE__model_idx_0001"]


def test_download_modelj_discriminative_fills_one_cache_folder_per_split(fake_hub, tmp_path):
    add_modelj_mae(fake_hub, {"train": [0, 1], "val": [2], "test": [3]})

    root = hub.download_modelj("mae", tmp_path).root

    assert root == tmp_path / "MAE"
    found = {split: sorted(p.name for p in (root / split).glob("models--*")) for split in ("train", "val", "test")}
    assert found == {
        "train": ["models--ProbeX--Model-J__MAE__model_idx_0000", "models--ProbeX--Model-J__MAE__model_idx_0001"],
        "val": ["models--ProbeX--Model-J__MAE__model_idx_0002"],
        "test": ["models--ProbeX--Model-J__MAE__model_idx_0003"],
    }
    snapshot = root / "val" / "models--ProbeX--Model-J__MAE__model_idx_0002" / "snapshots" / COMMIT
    assert read_header(snapshot / "model.safetensors").metadata["dataset_chosen_targets"] == "['apple', 'bee']"
    assert not list(root.rglob("*.bin"))


def test_download_modelj_generative_fetches_the_asked_splits_without_images_or_pickles(fake_hub, tmp_path):
    add_sd_200(fake_hub)

    root = hub.download_modelj("SD_200", tmp_path, splits=["train", "val_holdout"]).root

    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and not p.name.startswith(".") and ".cache" not in p.parts)
    assert files == [
        "train/model_idx_0000/pytorch_lora_weights.safetensors",
        "train/model_idx_0001/pytorch_lora_weights.safetensors",
        "val_holdout/model_idx_0004/pytorch_lora_weights.safetensors",
    ]
    assert read_header(root / files[0]).metadata == {"imagenet_class_id": "n01440764"}


def test_download_modelj_generative_with_images_fetches_training_images(fake_hub, tmp_path):
    add_sd_200(fake_hub)

    root = hub.download_modelj("SD_200", tmp_path, splits=["test"], images=True).root

    assert (root / "test" / "model_idx_0003" / "training_images" / "0.png").read_bytes() == b"\x89PNG fake image"
    assert not list(root.rglob("*.bin"))


def test_download_modelj_generative_layers_only_keeps_the_lora_pair_of_the_module(fake_hub, tmp_path):
    add_sd_200(fake_hub)
    module = "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_q"

    root = hub.download_modelj("SD_200", tmp_path, splits=["val"], layers=[module]).root

    header = read_header(root / "val" / "model_idx_0002" / "pytorch_lora_weights.safetensors")
    assert set(header.tensors) == {f"{module}.lora.down.weight", f"{module}.lora.up.weight"}


def test_unknown_subset_and_split_are_clear_zoo_errors():
    with pytest.raises(ZooError, match="unknown Model-J subset 'ImageNet'"):
        hub.download_modelj("ImageNet", "out")
    with pytest.raises(ZooError, match="has no split 'holdout'"):
        hub.download_modelj("MAE", "out", splits=["holdout"])


# --- offline ------------------------------------------------------------------------------------


def test_reachability_check_of_a_closed_port_fails_fast_with_one_paragraph(closed_port, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    started = time.perf_counter()

    with pytest.raises(HubUnavailableError) as caught:
        hub.check_hub_reachable(f"http://127.0.0.1:{closed_port}")

    message = str(caught.value)
    assert time.perf_counter() - started < 6
    assert "unreachable" in message and "ModelZoo.open(PATH)" in message and "\n" not in message


def test_reachability_check_of_a_silent_server_gives_up_after_its_timeout(silent_port, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    started = time.perf_counter()

    with pytest.raises(HubUnavailableError, match="unreachable"):
        hub.check_hub_reachable(f"http://127.0.0.1:{silent_port}", timeout=0.5)

    assert time.perf_counter() - started < 3


def test_hf_hub_offline_fails_at_once_before_any_request(loopback, monkeypatch):
    server = loopback.serve_files({})
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    with pytest.raises(HubUnavailableError, match="HF_HUB_OFFLINE"):
        hub.download_repos(["alice/a"], "out")

    with pytest.raises(HubUnavailableError, match="HF_HUB_OFFLINE"):
        hub.check_hub_reachable(server.url)
    assert server.requests == []


def run_cli(args: list[str], env_changes: dict[str, str], cwd: Path) -> tuple[subprocess.CompletedProcess, float]:
    env = {**os.environ, **env_changes}
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "probex.cli", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=60
    )
    return result, time.perf_counter() - started


@pytest.mark.parametrize("offline", ["closed port", "HF_HUB_OFFLINE=1"])
def test_cli_download_modelj_sd_200_without_network_exits_non_zero_quickly_without_traceback(offline, closed_port, tmp_path):
    env = {"HF_ENDPOINT": f"http://127.0.0.1:{closed_port}", "HF_HUB_OFFLINE": "1" if offline == "HF_HUB_OFFLINE=1" else "0"}

    result, elapsed = run_cli(["download", "modelj", "SD_200", "--out", str(tmp_path / "out")], env, tmp_path)

    assert result.returncode != 0
    assert elapsed < 30
    assert "Traceback" not in result.stderr
    paragraph = result.stderr.strip()
    assert "\n" not in paragraph and ("unreachable" in paragraph or "HF_HUB_OFFLINE" in paragraph)
    assert "probex zoo info PATH" in paragraph


def test_cli_download_repos_against_the_fake_hub_writes_the_snapshot(fake_hub, tmp_path):
    fake_hub.add("alice/vit-cifar", discriminative_repo(9))
    env = {"HF_ENDPOINT": fake_hub.url, "HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path / "hf-home")}

    result, _ = run_cli(["download", "repos", "alice/vit-cifar", "--out", str(tmp_path / "zoo")], env, tmp_path)

    assert result.returncode == 0, result.stderr
    assert (tmp_path / "zoo" / "models--alice--vit-cifar" / "snapshots" / COMMIT / "model.safetensors").exists()
    assert "1 Hub repo in" in result.stdout and "downloaded: 1" in result.stdout and "failed: 0" in result.stdout


# --- what the downloads write is what ModelZoo reads ---------------------------------------------


def test_model_zoo_opens_a_downloaded_generative_subset_with_its_images(fake_hub, tmp_path):
    from probex.zoo import ModelZoo

    add_sd_200(fake_hub)
    report = hub.download_modelj("SD_200", tmp_path, images=True)

    zoo = ModelZoo.open(report)  # a report stands for its folder

    assert zoo.trees == ["SD_200"] and report.root == tmp_path / "SD_200"
    assert sorted(record.split for record in zoo.records) == sorted(["train", "train", "val", "test", "val_holdout", "test_holdout"])
    assert all(len(record.images) == 1 for record in zoo.records)


def test_model_zoo_builds_a_layer_bank_from_a_layers_only_download(fake_hub, tmp_path):
    from probex.zoo import ModelZoo

    add_modelj_mae(fake_hub, {"train": [0, 1], "val": [2], "test": [3]})
    root = hub.download_modelj("MAE", tmp_path, layers=["vit.encoder.layer.3.attention.query.weight"]).root

    zoo = ModelZoo.open(root)
    bank = zoo.bank("vit.encoder.layer.3.attention.query.weight", split="train")

    assert tuple(bank.X.shape) == (2, 32, 32)
    assert [record.labels for record in zoo.records] == [["apple", "bee"]] * 4


# --- rate limits, resumption and the summary -------------------------------------------------------

def weight_reads(requests: list[tuple[str, str, str]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for method, path, _ in requests:
        if method == "GET" and path.endswith(".safetensors"):
            counts[path] = counts.get(path, 0) + 1
    return counts


def test_a_rate_limited_hub_is_waited_out_and_every_model_arrives(fake_hub, tmp_path):
    weights = add_sd_unet_repo(fake_hub)
    fake_hub.limit_every = 3

    report = hub.download_modelj("SD_200", tmp_path, layers=["46"])

    assert report.complete and len(report.downloaded) == len(weights)
    for name in weights:
        header = read_header(report.root / name)
        assert set(header.tensors) == {f"{SD_LAYER_46}.lora.down.weight", f"{SD_LAYER_46}.lora.up.weight"}
        assert json.loads(header.metadata["probex_paper_layers"]) == {SD_LAYER_46: 46}
    # two requests per model: the whole header, then the layer's two factors in one range (a 429 retries
    # only the request it refused)
    assert sorted(weight_reads(fake_hub.answered).values()) == [2] * len(weights)


def test_retry_after_is_honoured(fake_hub, tmp_path, monkeypatch):
    add_sd_unet_repo(fake_hub, {"train": 2})
    fake_hub.limit_every, fake_hub.retry_after = 3, "7"
    waits: list[float] = []
    monkeypatch.setattr(hub.retry, "_sleep", waits.append)

    hub.download_modelj("SD_200", tmp_path, splits=["train"], layers=[SD_LAYER_46])

    assert waits and set(waits) == {7.0}


def test_a_model_that_cannot_be_fetched_ends_in_the_report_and_the_others_arrive(fake_hub, tmp_path):
    weights = add_sd_unet_repo(fake_hub, {"train": 3})
    fake_hub.unavailable.add(weights[1])

    with pytest.raises(hub.DownloadIncompleteError) as caught:
        hub.download_modelj("SD_200", tmp_path, splits=["train"], layers=["46"])

    report = caught.value.report
    assert report.downloaded == ["train/model_idx_0000", "train/model_idx_0002"]
    assert [item for item, _ in report.failed] == ["train/model_idx_0001"] and "404" in report.failed[0][1]
    assert "failed: 1\n    train/model_idx_0001: " in report.summary()


def test_a_finished_download_is_not_asked_for_again_even_offline(fake_hub, tmp_path, monkeypatch, closed_port):
    add_sd_unet_repo(fake_hub, {"train": 2, "val": 1})
    hub.download_modelj("SD_200", tmp_path, layers=["46"])
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port}")  # no Hub at all now

    report = hub.download_modelj("SD_200", tmp_path, layers=["46"])

    assert report.downloaded == [] and [reason for _, reason in report.skipped] == ["already present (finished by an earlier run)"] * 3


def cli_env(fake_hub: FakeHub, tmp_path: Path) -> dict[str, str]:
    return {"HF_ENDPOINT": fake_hub.url, "HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path / "hf-home"), "HF_TOKEN": ""}


def test_cli_download_under_a_rate_limit_killed_and_rerun_asks_for_nothing_finished(fake_hub, tmp_path):
    weights = add_sd_unet_repo(fake_hub)
    fake_hub.limit_every = 3  # 429 on every third request
    fake_hub.hang_after = 9  # weight reads answered before the first run hangs (and is killed)
    out = tmp_path / "Model-J"
    args = ["download", "modelj", "SD_200", "--layers", "46", "--out", str(out)]
    env = {**os.environ, **cli_env(fake_hub, tmp_path)}

    first = subprocess.Popen([sys.executable, "-m", "probex.cli", *args], env=env, cwd=tmp_path,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert fake_hub.hanging.wait(60), "the first run never reached the hanging read"
    first.send_signal(signal.SIGKILL)
    first.wait(30)
    answered_first = list(fake_hub.answered)
    finished_first = {name for name in weights if (out / "SD_200" / name).exists()}
    fake_hub.hang_after = None
    fake_hub.release.set()

    result, _ = run_cli(args, cli_env(fake_hub, tmp_path), tmp_path)

    assert result.returncode == 0, result.stderr
    assert all((out / "SD_200" / name).exists() for name in weights)
    assert 0 < len(finished_first) < len(weights)
    downloaded = int(re.search(r"downloaded: (\d+)", result.stdout).group(1))
    skipped = int(re.search(r"(\d+): already present \(finished by an earlier run\)", result.stdout).group(1))
    # a model written but not yet recorded when the kill came is taken from disk, without a request
    assert downloaded + skipped == len(weights) and skipped <= len(finished_first)
    assert "failed: 0" in result.stdout
    rerun = fake_hub.answered[len(answered_first):]
    asked_again = [path for _, path, _ in rerun if any(path.endswith(name) for name in finished_first)]
    assert asked_again == []  # no finished model is asked for again
    assert [path for _, path, _ in rerun if path.startswith("/api/") and not path.startswith("/api/models?")] == []  # listings kept
    assert len(rerun) == len(set(rerun))  # and nothing is asked twice within the rerun


def test_cli_download_with_a_missing_model_exits_2_with_a_summary_and_one_line(fake_hub, tmp_path):
    weights = add_sd_unet_repo(fake_hub, {"train": 2})
    fake_hub.unavailable.add(weights[0])

    result, _ = run_cli(["download", "modelj", "SD_200", "--splits", "train", "--layers", "46", "--out", str(tmp_path / "out")],
                        cli_env(fake_hub, tmp_path), tmp_path)

    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "1 of 2 models of Model-J SD_200 are missing" in result.stderr
    assert "downloaded: 1" in result.stdout and "failed: 1\n    train/model_idx_0000: " in result.stdout


# --- what RemoteSafetensors learns from the Hub's redirect -----------------------------------------


def redirecting_hub(loopback, versions: list[bytes]):
    """A Hub that redirects resolve URLs to a CDN host, naming the commit and ETag only on the redirect.

    ``versions``: the file's content per request (a push to main between two reads changes it).
    """
    served = []

    def cdn(method, path, headers):
        body = versions[min(len(served), len(versions) - 1)]
        served.append(path)
        return loopback.file_reply(method, body, headers, True, {"ETag": '"cdn-etag"'})

    cdn_server = loopback.serve(cdn)

    def resolve(method, path, headers):
        body = versions[min(len(served), len(versions) - 1)]
        return loopback.Reply(302, b"", {"Location": cdn_server.url + "/blob", "X-Repo-Commit": COMMIT,
                                         "X-Linked-Etag": f'"{hashlib.sha256(body).hexdigest()}"'})

    return loopback.serve(resolve)


def big_file(seed: int) -> bytes:
    """A file larger than the first range request, so that reading its tensors takes a second one."""
    return save({"w": torch.randn(64, 64, generator=torch.Generator().manual_seed(seed))})


def test_remote_safetensors_reads_the_commit_from_the_redirect(loopback):
    from probex.zoo.remote import RemoteSafetensors

    blob = big_file(0)
    server = redirecting_hub(loopback, [blob])

    remote = RemoteSafetensors(f"{server.url}/alice/lora/resolve/main/pytorch_lora_weights.safetensors")
    remote.read_tensors()

    assert remote.commit == COMMIT and remote.etag == f'"{hashlib.sha256(blob).hexdigest()}"'


def test_a_file_that_changes_on_main_while_it_is_read_is_an_error(loopback):
    from probex.zoo.remote import RemoteSafetensors

    server = redirecting_hub(loopback, [big_file(0), big_file(1)])
    remote = RemoteSafetensors(f"{server.url}/alice/lora/resolve/main/pytorch_lora_weights.safetensors")

    with pytest.raises(ZooError, match=f"changed on the server while it was read.*revision={COMMIT}"):
        remote.read_tensors()
