"""The safe safetensors reader: round trips, selective reads, validation and fuzzing."""

from __future__ import annotations

import json
import struct
import time
import tracemalloc
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from probex.errors import ZooError
from probex.zoo import safefile
from probex.zoo.safefile import (
    DTYPES,
    MAX_HEADER_BYTES,
    SafetensorsHeader,
    parse_header,
    read_header,
    read_tensors,
)


def sample_tensors() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {
        "encoder.layer.0.weight": torch.randn(6, 5, generator=generator),
        "encoder.layer.0.bias": torch.randn(6, generator=generator).half(),
        "encoder.layer.1.weight": torch.randn(4, 3, 2, generator=generator).bfloat16(),
        "head.weight": torch.randn(3, 3, generator=generator).double(),
        "counts": torch.arange(7, dtype=torch.int64),
        "codes": torch.tensor([[-3, 4]], dtype=torch.int8),
        "mask": torch.tensor([True, False, True]),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 4),
    }


METADATA = {"dataset_chosen_targets": "['apple', 'bee']", "lr": "0.001"}


def write_raw(path: Path, header: object, data: bytes = b"", length: int | None = None) -> Path:
    """Write a file with an arbitrary (possibly invalid) JSON header."""
    header_bytes = json.dumps(header).encode() if not isinstance(header, bytes) else header
    length = len(header_bytes) if length is None else length
    path.write_bytes(struct.pack("<Q", length) + header_bytes + data)
    return path


def one_tensor_header(**changes: object) -> dict:
    entry = {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}
    entry.update(changes)
    return {"w": entry}


# --- round trips --------------------------------------------------------------------------------


def test_read_tensors_round_trips_every_tensor_written_by_safetensors(tmp_path):
    expected = sample_tensors()
    path = tmp_path / "model.safetensors"
    save_file(expected, str(path), metadata=METADATA)

    got = read_tensors(path)

    assert set(got) == set(expected)
    for name, tensor in expected.items():
        assert got[name].dtype == tensor.dtype, name
        assert got[name].shape == tensor.shape, name
        assert torch.equal(got[name], tensor), name
        assert got[name].is_contiguous() and got[name].device.type == "cpu"


def test_read_header_returns_metadata_dtypes_and_shapes(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file(sample_tensors(), str(path), metadata=METADATA)

    header = read_header(path)

    assert isinstance(header, SafetensorsHeader)
    assert header.metadata == METADATA
    assert header.tensors["encoder.layer.1.weight"].dtype == "BF16"
    assert header.tensors["encoder.layer.1.weight"].shape == (4, 3, 2)
    assert header.tensors["encoder.layer.0.bias"].nbytes == 6 * 2
    assert header.data_offset == 8 + int.from_bytes(path.read_bytes()[:8], "little")
    assert header.source == str(path)


def test_header_tensors_are_listed_in_data_order(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file(sample_tensors(), str(path))

    starts = [info.start for info in read_header(path).tensors.values()]

    assert starts == sorted(starts)


def test_read_tensors_returns_only_the_asked_names_in_the_asked_order(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file(sample_tensors(), str(path))

    got = read_tensors(path, ["head.weight", "counts"])

    assert list(got) == ["head.weight", "counts"]


def test_read_tensors_reuses_a_given_header(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file(sample_tensors(), str(path))
    header = read_header(path)

    got = read_tensors(path, ["counts"], header=header)

    assert torch.equal(got["counts"], torch.arange(7))


def test_file_without_metadata_has_empty_metadata(tmp_path):
    path = tmp_path / "plain.safetensors"
    save_file({"w": torch.ones(2)}, str(path))

    assert read_header(path).metadata == {}


# --- selective reading ----------------------------------------------------------------------


def test_read_tensors_reads_a_tensor_correctly_when_every_other_tensors_bytes_are_garbage(tmp_path):
    tensors = sample_tensors()
    path = tmp_path / "model.safetensors"
    save_file(tensors, str(path))
    header = read_header(path)
    wanted = header.tensors["encoder.layer.1.weight"]
    blob = bytearray(path.read_bytes())
    for index in range(header.data_offset, len(blob)):
        if not wanted.start <= index - header.data_offset < wanted.end:
            blob[index] = 0xA5
    path.write_bytes(bytes(blob))

    got = read_tensors(path, ["encoder.layer.1.weight"])

    assert torch.equal(got["encoder.layer.1.weight"], tensors["encoder.layer.1.weight"])


def test_read_tensors_reads_only_the_header_and_the_asked_byte_range(tmp_path, monkeypatch):
    path = tmp_path / "model.safetensors"
    save_file({f"layer{i}": torch.randn(64, 64) for i in range(10)}, str(path))
    header = read_header(path)
    bytes_read = []
    real_open = safefile.open_regular

    class CountingFile:
        def __init__(self, handle):
            self._handle = handle

        def read(self, size=-1):
            data = self._handle.read(size)
            bytes_read.append(len(data))
            return data

        def readinto(self, buffer):
            count = self._handle.readinto(buffer)
            bytes_read.append(count)
            return count

        def __getattr__(self, name):
            return getattr(self._handle, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._handle.close()

    monkeypatch.setattr(safefile, "open_regular", lambda *a, **k: CountingFile(real_open(*a, **k)))
    read_tensors(path, ["layer3"])

    assert sum(bytes_read) == header.data_offset + header.tensors["layer3"].nbytes
    assert sum(bytes_read) < path.stat().st_size / 5


# --- clear errors ---------------------------------------------------------------------------


def test_missing_tensor_names_the_file_the_name_and_the_closest_names(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file(sample_tensors(), str(path))

    with pytest.raises(ZooError) as caught:
        read_tensors(path, ["encoder.layer.0.weights"])

    message = str(caught.value)
    assert str(path) in message
    assert "'encoder.layer.0.weights' missing" in message
    assert "encoder.layer.0.weight" in message.split("closest available:")[1]


def test_missing_file_is_a_zoo_error_naming_the_file(tmp_path):
    path = tmp_path / "absent.safetensors"

    with pytest.raises(ZooError, match="absent.safetensors: cannot read"):
        read_header(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "shorter than the 8-byte"),
        (b"\x01\x02\x03", "shorter than the 8-byte"),
        (struct.pack("<Q", 2**63) + b"{}", "do not hold a plausible header length"),
        (struct.pack("<Q", MAX_HEADER_BYTES + 1) + b"{}", "larger than the limit"),
        (struct.pack("<Q", 500) + b"{}", "runs past the end of the file"),
        (struct.pack("<Q", 2) + b"\xff\xfe", "not valid UTF-8"),
        (struct.pack("<Q", 5) + b"{nope", "not valid JSON"),
        (struct.pack("<Q", 2) + b"[]", "must be a JSON object"),
        (struct.pack("<Q", 3) + b"1e5", "must be a JSON object"),
        (struct.pack("<Q", 19) + b'{"a": NaN, "b": 1} ', "not valid JSON"),
        (struct.pack("<Q", 3000) + b"[" * 3000, "not valid JSON"),
    ],
)
def test_malformed_prefix_raises_zoo_error_with_a_clear_message(tmp_path, content, message):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)

    with pytest.raises(ZooError, match=message) as caught:
        read_header(path)

    assert str(path) in str(caught.value)


@pytest.mark.parametrize(
    ("header", "data_size", "message"),
    [
        ({"w": [1, 2]}, 0, "entry must be an object"),
        ({"w": {"dtype": "F32", "shape": [1]}}, 4, "exactly the keys"),
        (one_tensor_header(extra=1), 24, "exactly the keys"),
        (one_tensor_header(dtype="F17"), 24, "unknown dtype 'F17'"),
        (one_tensor_header(dtype=4), 24, "unknown dtype 4"),
        (one_tensor_header(shape=[2, -3]), 24, "shape must be a list of non-negative integers"),
        (one_tensor_header(shape=[2, 3.0]), 24, "shape must be a list of non-negative integers"),
        (one_tensor_header(shape=[True, 6]), 24, "shape must be a list of non-negative integers"),
        (one_tensor_header(shape="2x3"), 24, "shape must be a list of non-negative integers"),
        (one_tensor_header(data_offsets=[0]), 24, "data_offsets must be two integers"),
        (one_tensor_header(data_offsets=[0, 24.0]), 24, "data_offsets must be two integers"),
        (one_tensor_header(data_offsets=[-24, 0]), 24, "must satisfy 0 <= start <= end"),
        (one_tensor_header(data_offsets=[24, 0]), 24, "must satisfy 0 <= start <= end"),
        (one_tensor_header(data_offsets=[0, 24]), 10, "data section, which has only 10 bytes"),
        (one_tensor_header(data_offsets=[0, 20]), 24, "holds 20 bytes but shape \\[2, 3\\] of F32 needs 24"),
        (one_tensor_header(shape=[2**62, 2**62]), 24, "needs more than 18446744073709551616"),
        (
            {
                "a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                "b": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]},
            },
            16,
            "overlap",
        ),
        ({"__metadata__": ["x"]}, 0, "__metadata__ must be an object of strings"),
        ({"__metadata__": {"lr": 0.1}}, 0, "__metadata__ entry 'lr' must be a string"),
    ],
)
def test_invalid_header_entry_raises_zoo_error_naming_the_problem(tmp_path, header, data_size, message):
    path = write_raw(tmp_path / "bad.safetensors", header, b"\0" * data_size)

    with pytest.raises(ZooError, match=message) as caught:
        read_header(path)

    assert str(path) in str(caught.value)


def test_duplicate_tensor_name_in_header_is_refused(tmp_path):
    entry = '{"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}'
    header = f'{{"w": {entry}, "w": {entry}}}'.encode()
    path = write_raw(tmp_path / "dup.safetensors", header, b"\0")

    with pytest.raises(ZooError, match="names 'w' twice"):
        read_header(path)


def test_tensor_cut_off_by_truncation_is_reported_by_read_tensors(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file({"w": torch.ones(100)}, str(path))
    header = read_header(path)
    path.write_bytes(path.read_bytes()[:-10])

    with pytest.raises(ZooError, match="truncated"):
        read_tensors(path, header=header)


def test_huge_claimed_tensor_is_refused_without_a_big_allocation(tmp_path):
    header = {"w": {"dtype": "F64", "shape": [2**35], "data_offsets": [0, 2**38]}}
    path = write_raw(tmp_path / "huge.safetensors", header, b"\0" * 64)
    tracemalloc.start()
    try:
        with pytest.raises(ZooError, match="data section"):
            read_tensors(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert peak < 1_000_000


def test_header_length_beyond_the_bound_is_refused_before_the_prefix_is_complete():
    prefix = struct.pack("<Q", MAX_HEADER_BYTES + 1)

    with pytest.raises(ZooError, match="larger than the limit"):
        parse_header(prefix, None, "remote.safetensors")


def test_truncated_prefix_is_refused_when_the_file_size_is_unknown():
    prefix = struct.pack("<Q", 1000) + b"{}"

    with pytest.raises(ZooError, match="header is truncated"):
        parse_header(prefix, None, "remote.safetensors")


def test_every_truncation_of_a_valid_file_raises_zoo_error(tmp_path):
    source = tmp_path / "model.safetensors"
    save_file({"a": torch.ones(3), "b": torch.zeros(2, 2).half()}, str(source), metadata={"k": "v"})
    blob = source.read_bytes()
    path = tmp_path / "cut.safetensors"
    for size in range(len(blob)):
        path.write_bytes(blob[:size])
        with pytest.raises(ZooError):
            read_tensors(path)


# --- fuzzing ------------------------------------------------------------------------------------

FUZZ_SETTINGS = dict(
    deadline=None,
    database=None,  # keep no example database in the working tree
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(max_size=6), children, max_size=4),
    ),
    max_leaves=8,
)
wild_ints = st.one_of(
    st.integers(min_value=-5, max_value=64),
    st.sampled_from([2**31, 2**32, 2**62, 2**63, 2**64, -(2**63)]),
    st.integers(),
)
entries = st.fixed_dictionaries(
    {
        "dtype": st.one_of(st.sampled_from(sorted(DTYPES)), st.sampled_from(["F4", "f32", "", "I128"]), json_scalars),
        "shape": st.one_of(st.lists(wild_ints, max_size=4), json_values),
        "data_offsets": st.one_of(st.lists(wild_ints, min_size=2, max_size=2), json_values),
    },
    optional={"extra": json_scalars},
)
plausible_headers = st.dictionaries(
    st.text(max_size=6),
    st.one_of(entries, json_values),
    max_size=4,
)
with_metadata = st.one_of(
    plausible_headers,
    st.tuples(plausible_headers, st.one_of(st.dictionaries(st.text(max_size=4), st.text(max_size=4)), json_values)).map(
        lambda pair: {**pair[0], "__metadata__": pair[1]}
    ),
)


def encode(header_bytes: bytes, data: bytes, length_delta: int = 0) -> bytes:
    length = max(0, len(header_bytes) + length_delta)
    return struct.pack("<Q", length) + header_bytes + data


malformed_files = st.one_of(
    st.binary(max_size=96),
    st.tuples(st.integers(min_value=0, max_value=2**64 - 1), st.binary(max_size=64)).map(
        lambda pair: struct.pack("<Q", pair[0]) + pair[1]
    ),
    st.tuples(json_values, st.binary(max_size=64)).map(lambda pair: encode(json.dumps(pair[0]).encode(), pair[1])),
    st.tuples(with_metadata, st.binary(max_size=128), st.integers(min_value=-4, max_value=4)).map(
        lambda triple: encode(json.dumps(triple[0]).encode(), triple[1], triple[2])
    ),
)


def valid_file_bytes() -> bytes:
    from safetensors.torch import save

    return save(
        {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.ones(3).half(), "m": torch.tensor([1, 0], dtype=torch.uint8)},
        metadata={"lr": "0.1"},
    )


VALID = valid_file_bytes()

mutated_valid_files = st.one_of(
    # overwrite a few bytes anywhere (length field, JSON text, data)
    st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), min_size=1, max_size=6).map(
        lambda edits: bytes(_apply_edits(bytearray(VALID), edits))
    ),
    # truncate, or append junk
    st.integers(0, len(VALID)).map(lambda size: VALID[:size]),
    st.binary(min_size=1, max_size=32).map(lambda tail: VALID + tail),
)


def _apply_edits(blob: bytearray, edits: list[tuple[int, int]]) -> bytearray:
    for index, value in edits:
        blob[index] = value
    return blob


def check_only_zoo_error(parse) -> None:
    """Either the blob parses, with consistent tensors, or a ZooError is raised."""
    try:
        header = parse()
    except ZooError as error:
        assert str(error)
        return
    assert isinstance(header, SafetensorsHeader)


@settings(max_examples=1300, **FUZZ_SETTINGS)
@given(blob=malformed_files)
def test_fuzzed_headers_raise_only_zoo_error(blob):
    check_only_zoo_error(lambda: parse_header(blob, len(blob), "fuzz.safetensors"))
    check_only_zoo_error(lambda: parse_header(blob, None, "fuzz.safetensors"))


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@settings(max_examples=800, **FUZZ_SETTINGS)
@given(blob=st.one_of(mutated_valid_files, malformed_files))
def test_fuzzed_files_read_as_tensors_or_raise_only_zoo_error(fuzz_dir, blob):
    path = fuzz_dir / "fuzz.safetensors"
    path.write_bytes(blob)
    try:
        header = read_header(path)
        tensors = read_tensors(path, header=header)
    except ZooError:
        return
    for name, info in header.tensors.items():
        assert tuple(tensors[name].shape) == info.shape
        assert tensors[name].dtype == DTYPES[info.dtype][0]


def test_hostile_header_with_a_very_long_shape_is_refused_quickly():
    shape = ",".join(["4611686018427387904"] * 200_000)
    header = f'{{"w": {{"dtype": "F32", "shape": [{shape}], "data_offsets": [0, 4]}}}}'.encode()
    blob = struct.pack("<Q", len(header)) + header + b"\0" * 4
    started = time.perf_counter()

    with pytest.raises(ZooError, match="200000 axes"):
        parse_header(blob, len(blob), "hostile.safetensors")

    # does not hang: multiplying out the 200,000 dimensions takes minutes (benchmarks/bench_hostile_header.py)
    assert time.perf_counter() - started < 30
