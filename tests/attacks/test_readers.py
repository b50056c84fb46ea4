"""Family 3: hostile files never hang a reader and never make it allocate past the documented limits.

- FIFOs, devices and folders where the layouts expect files (manifest, Hugging Face cache,
  generative layout, side files, expert folders, results files): refused at once with a reason;
  every case runs under a 5 s alarm (opening a FIFO for reading would otherwise block forever).
- Shapes of many axes, a million empty tensors, headers past the limit, rank-1 LoRA pairs that
  declare huge layers: refused quickly, before any large allocation; checked once more in a
  subprocess under an address-space ceiling (RLIMIT_AS).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from hostile import lora_pair_bytes, safetensors_bytes, tiny_zoo
from probex import MixtureOfExperts, TreeRouter
from probex.errors import LimitError, ProbeXError, ZooError
from probex.zoo import ModelZoo
from probex.zoo.catalog import layer_catalog, layer_matrix
from probex.zoo.safefile import read_header, read_tensors

SECONDS = 5


class StillRunning(BaseException):
    """Raised into a reader that runs too long (not an OSError or Exception, which a reader may catch)."""


@contextmanager
def within(seconds: float = SECONDS):
    """Fail (instead of hanging) when the block runs longer than ``seconds``.

    A timer thread sends SIGALRM to this (the main) thread itself: a signal sent to the process
    may land on any other thread and leave a blocking ``open`` of a FIFO waiting forever.
    """
    def expire(signum, frame):
        raise StillRunning(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    main = threading.main_thread().ident
    timer = threading.Timer(seconds, signal.pthread_kill, (main, signal.SIGALRM))
    timer.daemon = True
    started = time.perf_counter()
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        signal.signal(signal.SIGALRM, previous)
    assert time.perf_counter() - started < seconds


# -- non-regular files --------------------------------------------------------------------------------

def _manifest_fifo_model(root: Path) -> Path:
    zoo = tiny_zoo(root, ["t"], per_tree=3)
    victim = zoo / "models" / "t0-m1.safetensors"
    victim.unlink()
    os.mkfifo(victim)
    return zoo


def _manifest_device_model(root: Path) -> Path:
    zoo = tiny_zoo(root, ["t"], per_tree=3)
    manifest = json.loads((zoo / "probex_zoo.json").read_text())
    manifest["models"][1]["path"] = "/dev/zero"
    manifest["models"][2]["path"] = "models"  # a folder
    (zoo / "probex_zoo.json").write_text(json.dumps(manifest))
    return zoo


def _hf_cache(root: Path, fifo: str) -> Path:
    snapshot = root / "train" / "models--someone--model" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (root / "train" / "models--someone--model" / "refs").mkdir()
    ref = root / "train" / "models--someone--model" / "refs" / "main"
    from safetensors.torch import save_file

    save_file({"w": torch.ones(3, 2)}, str(snapshot / "model.safetensors"))
    if fifo == "refs":
        os.mkfifo(ref)
    else:
        ref.write_text("abc123")
    if fifo == "weights":
        (snapshot / "model.safetensors").unlink()
        os.mkfifo(snapshot / "model.safetensors")
    if fifo == "side-files":
        os.mkfifo(snapshot / "config.json")
        os.mkfifo(snapshot / "adapter_config.json")
    return root


def _generative(root: Path, fifo: str) -> Path:
    folder = root / "train" / "model_idx_0000"
    (folder / "training_images").mkdir(parents=True)
    from safetensors.torch import save_file

    save_file({"unet.a.to_q.lora.down.weight": torch.ones(2, 4), "unet.a.to_q.lora.up.weight": torch.ones(3, 2)},
              str(folder / "pytorch_lora_weights.safetensors"))
    if fifo == "weights":
        (folder / "pytorch_lora_weights.safetensors").unlink()
        os.mkfifo(folder / "pytorch_lora_weights.safetensors")
    else:
        os.mkfifo(folder / "training_images" / "00.png")
    return root


ZOO_CASES = {
    "manifest: a model file is a FIFO": (_manifest_fifo_model, 2, "FIFO"),
    "manifest: a model file is a device, another a folder": (_manifest_device_model, 1, "not a regular file|character device|folder"),
    "HF cache: the weights are a FIFO": (lambda root: _hf_cache(root, "weights"), 0, "FIFO"),
    "HF cache: refs/main is a FIFO": (lambda root: _hf_cache(root, "refs"), 0, "FIFO"),
    "HF cache: config.json and adapter_config.json are FIFOs": (lambda root: _hf_cache(root, "side-files"), 1, None),
    "generative: the LoRA file is a FIFO": (lambda root: _generative(root, "weights"), 0, "FIFO"),
    "generative: a training image is a FIFO": (lambda root: _generative(root, "image"), 1, None),
}


@pytest.mark.parametrize("case", list(ZOO_CASES))
def test_a_zoo_with_a_fifo_or_device_opens_at_once_and_says_why_a_model_is_left_out(case, tmp_path):
    build, readable, reason = ZOO_CASES[case]
    root = build(tmp_path / "zoo")
    with within():
        zoo = ModelZoo.open(root)
        for record in zoo.records:
            assert all(path.is_file() for path in record.images)
    assert len(zoo) == readable
    if reason:
        assert zoo.skipped and all(re.search(reason, why) for _, why in zoo.skipped), zoo.skipped


def test_every_single_file_reader_refuses_a_fifo_at_once(tmp_path):
    from probex.experiments.sweep import check_results_file
    from probex.experts.base import load_expert
    from probex.zoo.manifest import read_manifest

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    (tmp_path / "manifest").mkdir()
    os.mkfifo(tmp_path / "manifest" / "probex_zoo.json")
    (tmp_path / "expert").mkdir()
    os.mkfifo(tmp_path / "expert" / "config.json")
    for folder, name in [("router", "router.json"), ("router-weights", "router.safetensors"),
                         ("mixture", "mixture.json")]:
        (tmp_path / folder).mkdir()
        if name == "router.safetensors":
            (tmp_path / folder / "router.json").write_text("{}")
        os.mkfifo(tmp_path / folder / name)
    readers = [lambda: read_header(fifo), lambda: read_tensors(fifo), lambda: read_manifest(tmp_path / "manifest"),
               lambda: ModelZoo.open(tmp_path / "manifest"), lambda: load_expert(tmp_path / "expert"),
               lambda: check_results_file(fifo), lambda: TreeRouter.load(tmp_path / "router"),
               lambda: TreeRouter.load(tmp_path / "router-weights"), lambda: MixtureOfExperts.load(tmp_path / "mixture")]
    for reader in readers:
        with within(), pytest.raises(ProbeXError):
            reader()
    assert len(readers) == 9


# -- hostile headers --------------------------------------------------------------------------------

def _long_shape_file() -> bytes:
    """About 600 KB: a shape of 300,000 ones, then 12 (once quadratic to check)."""
    shape = [1] * 300_000 + [12]
    return safetensors_bytes({"w": {"dtype": "F32", "shape": shape, "data_offsets": [0, 48]}}, b"\0" * 48)


def _empty_tensors_file(count: int = 1_000_000) -> bytes:
    """A million empty tensors in a header of about 56 MiB."""
    entries = b",".join(b'"t%07d":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}' % i for i in range(count))
    header = b"{" + entries + b"}"
    return len(header).to_bytes(8, "little") + header


HEADER_CASES = {
    "a shape of 300,000 ones then 12 (600 KB)": (_long_shape_file, "axes"),
    "a million empty tensors (56 MiB header)": (_empty_tensors_file, "number of tensors"),
    "a header length past the limit": (lambda: (200_000_000).to_bytes(8, "little") + b"{}", "larger than the limit"),
    "a header length that is the file's text": (lambda: b"API_KEY=sk-0123456789abcdef\n", "not a safetensors file"),
    "JSON nested 100,000 deep": (lambda: (200_000).to_bytes(8, "little") + b"[" * 100_000 + b"]" * 100_000,
                                 "not valid JSON"),
}


@pytest.mark.parametrize("case", list(HEADER_CASES))
def test_a_hostile_header_is_refused_within_seconds(case, tmp_path):
    build, message = HEADER_CASES[case]
    path = tmp_path / "hostile.safetensors"
    path.write_bytes(build())
    with within(), pytest.raises(ZooError, match=message) as caught:
        header = read_header(path)
        layer_catalog(header)
    assert "4420640699264356417" not in str(caught.value) and "API_KEY" not in str(caught.value)


@pytest.mark.parametrize("size", [8000, 100_000])
def test_a_rank_1_lora_pair_declaring_a_huge_layer_is_refused_before_the_merge(size, tmp_path):
    path = tmp_path / "lora.safetensors"
    path.write_bytes(lora_pair_bytes(size, size))
    header = read_header(path)
    (info,) = layer_catalog(header)
    assert info.shape == (size, size) and path.stat().st_size < 1_000_000
    with within(), pytest.raises(LimitError, match="PROBEX_MAX_LAYER_BYTES"):
        layer_matrix(info, read_tensors(path, info.tensors, header=header), source=str(path))


def test_the_layer_limit_can_be_raised_and_a_layer_under_it_is_read(tmp_path, monkeypatch):
    path = tmp_path / "lora.safetensors"
    path.write_bytes(lora_pair_bytes(300, 200))
    header = read_header(path)
    (info,) = layer_catalog(header)
    monkeypatch.setenv("PROBEX_MAX_LAYER_BYTES", str(300 * 200 * 4 - 1))
    with pytest.raises(LimitError):
        layer_matrix(info, read_tensors(path, info.tensors, header=header))
    monkeypatch.setenv("PROBEX_MAX_LAYER_BYTES", str(300 * 200 * 4))
    assert layer_matrix(info, read_tensors(path, info.tensors, header=header)).shape == (300, 200)


def test_per_zoo_limits_stop_a_zoo_whose_files_add_up_past_them(tmp_path, monkeypatch):
    zoo = tiny_zoo(tmp_path / "zoo", ["t"], per_tree=5)
    monkeypatch.setenv("PROBEX_MAX_ZOO_TENSORS", "7")  # 2 tensors a file: the 4th file passes it
    with pytest.raises(LimitError, match="PROBEX_MAX_ZOO_TENSORS"):
        ModelZoo.open(zoo)
    monkeypatch.setenv("PROBEX_MAX_ZOO_TENSORS", "10")
    monkeypatch.setenv("PROBEX_MAX_ZOO_HEADER_BYTES", "100")
    with pytest.raises(LimitError, match="PROBEX_MAX_ZOO_HEADER_BYTES"):
        ModelZoo.open(zoo)
    monkeypatch.delenv("PROBEX_MAX_ZOO_HEADER_BYTES")
    assert len(ModelZoo.open(zoo)) == 5


def test_the_cli_ends_a_huge_lora_layer_with_one_line(tmp_path, capsys):
    from probex.cli import main
    from probex.zoo.manifest import write_manifest
    from probex.zoo.records import ModelRecord

    records = []
    for i in range(3):
        path = tmp_path / "zoo" / f"m{i}.safetensors"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(lora_pair_bytes(100_000, 100_000))
        records.append(ModelRecord(id=f"m{i}", path=path))
    write_manifest(tmp_path / "zoo", records, name="huge")
    for argv in (["zoo", "bank", str(tmp_path / "zoo"), "unet.block.attn.to_q", "--cache-dir", str(tmp_path / "cache")],
                 ["route", str(tmp_path / "zoo")]):
        with within(30):
            assert main(argv) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "PROBEX_MAX_LAYER_BYTES" in err, err


# -- under an address-space ceiling ------------------------------------------------------------------

_CEILING_SCRIPT = textwrap.dedent("""
    import json, os, resource, sys
    import torch
    torch.set_num_threads(1)
    from probex.errors import ZooError
    from probex.zoo.catalog import layer_catalog, layer_matrix
    from probex.zoo.safefile import read_header, read_tensors

    def size():
        for line in open("/proc/self/status"):
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    ceiling = size() + int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_AS, (ceiling, ceiling))
    results = {}
    for path in sys.argv[2:]:
        try:
            header = read_header(path)
            for info in layer_catalog(header):
                layer_matrix(info, read_tensors(path, info.tensors, header=header), source=path)
            results[os.path.basename(path)] = "read"
        except ZooError as error:
            results[os.path.basename(path)] = "refused: " + type(error).__name__
        except MemoryError:
            results[os.path.basename(path)] = "MemoryError"
    print(json.dumps(results))
""")


def test_hostile_files_stay_under_the_documented_limits_with_an_address_space_ceiling(tmp_path):
    files = {"lora-8000.safetensors": lora_pair_bytes(8000, 8000),
             "lora-100000.safetensors": lora_pair_bytes(100_000, 100_000),
             "lora-4000.safetensors": lora_pair_bytes(4000, 4000),  # 61 MiB merged: under the limit, read
             "empty-tensors.safetensors": _empty_tensors_file(),
             "long-shape.safetensors": _long_shape_file()}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    limit = 64 * 2**20
    env = {**os.environ, "PROBEX_MAX_LAYER_BYTES": str(limit), "PROBEX_MAX_HEADER_BYTES": str(limit),
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    ceiling = 4 * limit  # the header and one layer at their limits, plus the work around them
    done = subprocess.run([sys.executable, "-c", _CEILING_SCRIPT, str(ceiling), *map(str, (tmp_path / n for n in files))],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    assert results == {"lora-8000.safetensors": "refused: LimitError", "lora-100000.safetensors": "refused: LimitError",
                       "lora-4000.safetensors": "read", "empty-tensors.safetensors": "refused: LimitError",
                       "long-shape.safetensors": "refused: ZooError"}
