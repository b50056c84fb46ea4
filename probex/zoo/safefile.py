"""Safe safetensors reading: the one place in probex that parses a safetensors file.

A safetensors file is an 8-byte little-endian header length ``n``, a UTF-8 JSON header of
``n`` bytes, then the data section. The header maps each tensor name to its ``dtype``,
``shape`` and ``data_offsets`` (relative to the data section); the optional ``__metadata__``
entry maps strings to strings.

Files come from strangers (the Hub, a user's folder), so nothing in the header is trusted
before it is checked: only regular files are opened (a FIFO or a device would block the
reader), the header length and the number of tensors are bounded before anything is
allocated or parsed (:mod:`probex.zoo.limits`), every entry is type-checked in time linear in
its size, byte sizes must agree with the shapes, offsets must lie inside the data section and
tensors must not overlap. Every failure is a :class:`~probex.errors.ZooError` that names the
file and what is wrong, without quoting the file's bytes. Nothing is ever unpickled.

The local reader (:func:`read_tensors`) and the remote byte-range reader
(:mod:`probex.zoo.remote`) share :func:`parse_header` and :func:`tensor_from_bytes`.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import torch

from probex.errors import LimitError, ZooError
from probex.storage import open_regular
from probex.zoo.limits import DEFAULTS, MAX_DIMENSIONS, check_limit, limit

#: Default largest header (``PROBEX_MAX_HEADER_BYTES`` overrides it). Real headers are kilobytes
#: (a few MB for huge LLM shards); safetensors itself stops at 100 MB.
MAX_HEADER_BYTES = DEFAULTS["PROBEX_MAX_HEADER_BYTES"]

#: Bytes of the length field that starts every safetensors file.
LENGTH_FIELD_BYTES = 8

#: safetensors dtype code -> (torch dtype, bytes per element).
DTYPES: dict[str, tuple[torch.dtype, int]] = {
    "BOOL": (torch.bool, 1),
    "U8": (torch.uint8, 1),
    "I8": (torch.int8, 1),
    "F8_E4M3": (torch.float8_e4m3fn, 1),
    "F8_E5M2": (torch.float8_e5m2, 1),
    "I16": (torch.int16, 2),
    "U16": (torch.uint16, 2),
    "F16": (torch.float16, 2),
    "BF16": (torch.bfloat16, 2),
    "I32": (torch.int32, 4),
    "U32": (torch.uint32, 4),
    "F32": (torch.float32, 4),
    "C64": (torch.complex64, 8),
    "I64": (torch.int64, 8),
    "U64": (torch.uint64, 8),
    "F64": (torch.float64, 8),
}

# No tensor is larger than this (16 EiB); byte counts past it are not worth computing exactly.
_NBYTES_BOUND = 2**64

_ENTRY_KEYS = frozenset({"dtype", "shape", "data_offsets"})


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lies in a safetensors file and what it holds."""

    name: str
    dtype: str  # safetensors dtype code, e.g. "F16", "BF16", "F32"
    shape: tuple[int, ...]
    start: int  # byte offsets relative to the start of the data section
    end: int

    @property
    def nbytes(self) -> int:
        """Size of the tensor's data in bytes (``end - start``)."""
        return self.end - self.start

    @property
    def numel(self) -> int:
        """Number of elements (``prod(shape)``; 1 for a scalar)."""
        return math.prod(self.shape)


@dataclass(frozen=True)
class SafetensorsHeader:
    """The validated header of one safetensors file."""

    tensors: dict[str, TensorInfo]  # in file order (by data offset), "__metadata__" excluded
    metadata: dict[str, str]  # the file's __metadata__ (empty when absent)
    data_offset: int  # 8 + header length: where the data section starts in the file
    source: str  # file path or URL, for messages

    @property
    def data_size(self) -> int:
        """Bytes of the data section that the tensors cover (largest end offset)."""
        return max((info.end for info in self.tensors.values()), default=0)


def header_length(first_bytes: bytes, file_size: int | None, source: str) -> int:
    """Read and bound-check the header length from the first 8 bytes of a file.

    Checked before anything else is read or allocated: the length must be at most
    :data:`MAX_HEADER_BYTES` and, when ``file_size`` is known, fit inside the file.
    """
    if file_size is not None and file_size < LENGTH_FIELD_BYTES:
        raise ZooError(
            f"{source}: not a safetensors file: it is {file_size} bytes long, shorter than the "
            f"{LENGTH_FIELD_BYTES}-byte header length field"
        )
    if len(first_bytes) < LENGTH_FIELD_BYTES:
        raise ZooError(
            f"{source}: not a safetensors file: only {len(first_bytes)} bytes, shorter than the "
            f"{LENGTH_FIELD_BYTES}-byte header length field"
        )
    # The length is never quoted in a message: for a file that is not safetensors at all (a
    # config, a key file opened by mistake) it is the file's first 8 bytes read as a number.
    length = int.from_bytes(first_bytes[:LENGTH_FIELD_BYTES], "little")
    bound = limit("PROBEX_MAX_HEADER_BYTES")
    if length > bound:
        if length > 4 * DEFAULTS["PROBEX_MAX_HEADER_BYTES"]:
            raise ZooError(f"{source}: not a safetensors file, or a corrupt one: its first 8 bytes do not hold a "
                           "plausible header length")
        raise LimitError(f"{source}: the header is larger than the limit of {bound:,} bytes; if the file is "
                         "genuine, raise the limit with the environment variable PROBEX_MAX_HEADER_BYTES")
    if file_size is not None and LENGTH_FIELD_BYTES + length > file_size:
        raise ZooError(
            f"{source}: the header length in its first 8 bytes runs past the end of the file "
            f"({file_size} bytes); the file is truncated, corrupt or not a safetensors file"
        )
    return length


def parse_header(prefix: bytes, file_size: int | None, source: str) -> SafetensorsHeader:
    """Validate and parse a safetensors header.

    Args:
        prefix: the first bytes of the file, at least ``8 + header length`` of them.
        file_size: total size of the file in bytes, or None when unknown (offsets are then
            not checked against the end of the file).
        source: file path or URL, used in error messages.

    Raises:
        ZooError: naming ``source`` and what is wrong, for any malformed header.
    """
    length = header_length(prefix, file_size, source)
    data_offset = LENGTH_FIELD_BYTES + length
    if len(prefix) < data_offset:
        raise ZooError(
            f"{source}: header is truncated: expected {length} header bytes, got "
            f"{len(prefix) - LENGTH_FIELD_BYTES}"
        )
    header_bytes = bytes(prefix[LENGTH_FIELD_BYTES:data_offset])
    # Every tensor entry names "data_offsets": counting them (fast, in C) bounds the tensors
    # before the JSON parse, which is the slow part for a header of a million tiny entries.
    check_limit("PROBEX_MAX_TENSORS", header_bytes.count(b'"data_offsets"'), f"{source}: the number of tensors declared")
    raw = _decode_json(header_bytes, source)
    check_limit("PROBEX_MAX_TENSORS", len(raw) - ("__metadata__" in raw), f"{source}: the number of tensors")

    metadata = _check_metadata(raw.pop("__metadata__", {}), source)
    data_size = None if file_size is None else file_size - data_offset
    infos = [_check_entry(name, entry, data_size, source) for name, entry in raw.items()]
    infos.sort(key=lambda info: (info.start, info.end, info.name))
    _check_no_overlap(infos, source)
    return SafetensorsHeader(
        tensors={info.name: info for info in infos},
        metadata=metadata,
        data_offset=data_offset,
        source=source,
    )


def read_header(path: str | os.PathLike) -> SafetensorsHeader:
    """Read and validate the header of a local safetensors file (reads only the header bytes)."""
    source = str(path)
    try:
        with open_regular(path) as handle:
            file_size = os.fstat(handle.fileno()).st_size
            first_bytes = handle.read(LENGTH_FIELD_BYTES)
            # Bound-check the length before reading (and allocating) the header itself.
            length = header_length(first_bytes, file_size, source)
            prefix = first_bytes + handle.read(length)
    except OSError as error:
        raise ZooError(f"{source}: cannot read the file ({error.strerror or error})") from error
    return parse_header(prefix, file_size, source)


def read_tensors(
    path: str | os.PathLike,
    names: Iterable[str] | None = None,
    *,
    header: SafetensorsHeader | None = None,
) -> dict[str, torch.Tensor]:
    """Read the named tensors (all when ``names`` is None) from a local safetensors file.

    Only the byte ranges of the asked tensors are read. Returns contiguous CPU tensors in their
    stored dtype, keyed by name in the order asked. Pass ``header`` (from :func:`read_header`)
    to avoid parsing the header again.

    Raises:
        ZooError: the file is malformed or truncated, or a name is not in the file (the message
            lists the closest available names).
    """
    source = str(path)
    if header is None:
        header = read_header(path)
    infos = select_tensors(header, names)
    tensors: dict[str, torch.Tensor] = {}
    try:
        with open_regular(path) as handle:
            for info in infos:
                handle.seek(header.data_offset + info.start)
                buffer = bytearray(info.nbytes)
                got = handle.readinto(buffer)
                if got != info.nbytes:
                    raise ZooError(
                        f"{source}: tensor '{info.name}' is truncated: expected {info.nbytes} "
                        f"bytes at offset {header.data_offset + info.start}, the file has {got or 0}"
                    )
                tensors[info.name] = tensor_from_bytes(info, buffer)
    except OSError as error:
        raise ZooError(f"{source}: cannot read the file ({error.strerror or error})") from error
    return tensors


def select_tensors(header: SafetensorsHeader, names: Iterable[str] | None) -> list[TensorInfo]:
    """The :class:`TensorInfo` of each asked name (all tensors when None), in the order asked.

    Raises:
        ZooError: a name is missing; the message names the file and the closest names.
    """
    if names is None:
        return list(header.tensors.values())
    if isinstance(names, str):
        names = [names]
    wanted = list(dict.fromkeys(names))
    missing = [name for name in wanted if name not in header.tensors]
    if missing:
        name = missing[0]
        close = difflib.get_close_matches(name, list(header.tensors), n=5, cutoff=0.5)
        hint = f"closest available: {', '.join(close)}" if close else (
            f"available ({len(header.tensors)}): {', '.join(list(header.tensors)[:8])}"
            + (", ..." if len(header.tensors) > 8 else "")
        )
        more = f" (and {len(missing) - 1} more missing)" if len(missing) > 1 else ""
        raise ZooError(f"{header.source}: tensor '{name}' missing{more}; {hint}")
    return [header.tensors[name] for name in wanted]


def tensor_from_bytes(info: TensorInfo, data: bytes | bytearray | memoryview) -> torch.Tensor:
    """Turn the raw little-endian bytes of one tensor into a contiguous CPU tensor.

    ``data`` must be exactly ``info.nbytes`` long. A ``bytearray`` is used in place (no copy);
    other buffers are copied once.
    """
    torch_dtype, _ = DTYPES[info.dtype]
    if len(data) != info.nbytes:
        raise ZooError(f"tensor '{info.name}': expected {info.nbytes} bytes, got {len(data)}")
    if info.nbytes == 0:
        return torch.empty(info.shape, dtype=torch_dtype)
    buffer = data if isinstance(data, bytearray) else bytearray(data)
    if info.dtype == "BOOL":
        # Any non-zero byte is True; reading stray bytes straight as torch.bool is undefined.
        flat = torch.frombuffer(buffer, dtype=torch.uint8) != 0
    else:
        flat = torch.frombuffer(buffer, dtype=torch_dtype)
        if sys.byteorder != "little" and DTYPES[info.dtype][1] > 1:  # pragma: no cover
            flat = flat.view(torch.uint8).view(-1, DTYPES[info.dtype][1]).flip(1).contiguous().view(torch_dtype).flatten()
    return flat.reshape(info.shape)


# --- validation helpers ---------------------------------------------------------------------


def _reject_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result: dict[str, object] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result


class _DuplicateKey(Exception):
    pass


def _reject_constant(name: str) -> None:
    raise ValueError(f"non-standard JSON constant {name}")


def _decode_json(raw: bytes, source: str) -> dict:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ZooError(f"{source}: header is not valid UTF-8 ({error.reason} at byte {error.start})") from None
    try:
        value = json.loads(text, object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant)
    except _DuplicateKey as error:
        raise ZooError(f"{source}: header names '{error.args[0]}' twice") from None
    except (ValueError, RecursionError) as error:
        # ValueError covers JSONDecodeError and over-long integer literals.
        detail = str(error) if isinstance(error, ValueError) else "nested too deeply"
        raise ZooError(f"{source}: header is not valid JSON ({detail[:200]})") from None
    if not isinstance(value, dict):
        raise ZooError(f"{source}: header must be a JSON object, got {type(value).__name__}")
    return value


def _check_metadata(metadata: object, source: str) -> dict[str, str]:
    if not isinstance(metadata, dict):
        raise ZooError(f"{source}: __metadata__ must be an object of strings, got {type(metadata).__name__}")
    for key, value in metadata.items():
        if not isinstance(value, str):
            raise ZooError(
                f"{source}: __metadata__ entry '{key}' must be a string, got {type(value).__name__}"
            )
    return dict(metadata)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_entry(name: str, entry: object, data_size: int | None, source: str) -> TensorInfo:
    where = f"{source}: tensor '{name}'"
    if not isinstance(entry, dict):
        raise ZooError(f"{where}: entry must be an object with dtype, shape and data_offsets")
    if set(entry) != _ENTRY_KEYS:
        raise ZooError(
            f"{where}: entry must have exactly the keys dtype, shape, data_offsets; "
            f"got {', '.join(sorted(map(str, entry))) or 'none'}"
        )
    dtype = entry["dtype"]
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise ZooError(f"{where}: unknown dtype {dtype!r}; supported: {', '.join(DTYPES)}")
    shape = entry["shape"]
    if not isinstance(shape, list) or not all(_is_int(size) and size >= 0 for size in shape):
        raise ZooError(f"{where}: shape must be a list of non-negative integers, got {_short(shape)}")
    if len(shape) > MAX_DIMENSIONS:
        raise ZooError(f"{where}: shape has {len(shape)} axes; no real tensor has more than {MAX_DIMENSIONS}")
    offsets = entry["data_offsets"]
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) for o in offsets)):
        raise ZooError(f"{where}: data_offsets must be two integers [start, end], got {_short(offsets)}")
    start, end = offsets
    if not 0 <= start <= end:
        raise ZooError(f"{where}: data_offsets [{start}, {end}] must satisfy 0 <= start <= end")
    if data_size is not None and end > data_size:
        raise ZooError(
            f"{where}: data ends at byte {end} of the data section, which has only {data_size} "
            "bytes; the file is truncated or corrupt"
        )
    expected = _bounded_nbytes(shape, DTYPES[dtype][1])
    if end - start != expected:
        needs = f"{expected}" if expected <= _NBYTES_BOUND else f"more than {_NBYTES_BOUND}"
        raise ZooError(f"{where}: holds {end - start} bytes but shape {_short(shape)} of {dtype} needs {needs}")
    return TensorInfo(name=name, dtype=dtype, shape=tuple(shape), start=start, end=end)


def _bounded_nbytes(shape: list[int], itemsize: int) -> int:
    """``prod(shape) * itemsize``, stopping early once it passes :data:`_NBYTES_BOUND`.

    A hostile header can hold a shape of millions of huge integers; multiplying them all out
    would take minutes, and no real tensor is that large anyway.
    """
    if 0 in shape:
        return 0
    total = itemsize
    for size in shape:
        total *= size
        if total > _NBYTES_BOUND:
            return total
    return total


def _check_no_overlap(infos: list[TensorInfo], source: str) -> None:
    """``infos`` sorted by start offset; empty tensors overlap nothing."""
    previous: TensorInfo | None = None
    for info in infos:
        if info.nbytes == 0:
            continue
        if previous is not None and info.start < previous.end:
            raise ZooError(
                f"{source}: tensors '{previous.name}' [{previous.start}, {previous.end}) and "
                f"'{info.name}' [{info.start}, {info.end}) overlap"
            )
        previous = info


def _short(value: object, width: int = 80) -> str:
    if isinstance(value, list) and len(value) > width:  # no need to spell out a million items
        value = value[:width]
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def write_safetensors(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None) -> Path:
    """Write a safetensors file whose bytes depend only on its content, atomically.

    Header keys are sorted and tensors laid out by name (``safetensors.torch.save_file`` orders
    the metadata differently from run to run, so two identical builds would differ in bytes).
    """
    from probex.storage import atomic_path

    codes = {torch_dtype: code for code, (torch_dtype, _) in DTYPES.items()}
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = dict(sorted((str(k), str(v)) for k, v in metadata.items()))
    offset, chunks = 0, []
    for name in sorted(tensors):
        tensor = tensors[name].detach().contiguous().cpu()
        if tensor.dtype not in codes:
            raise ZooError(f"{path}: tensor {name!r} has dtype {tensor.dtype}, which safetensors cannot store")
        data = tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b""
        header[name] = {"dtype": codes[tensor.dtype], "shape": list(tensor.shape), "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    encoded = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(struct.pack("<Q", len(encoded)) + encoded + b"".join(chunks))
    return path
