"""The limits probex puts on what it reads, so that a hostile or broken file fails fast instead of
hanging the reader or exhausting memory.

Every limit has a documented default and an environment variable that raises (or lowers) it,
read each time a limit is checked::

    ==============================  ===============  ===============================================
    variable                        default          what it bounds
    ==============================  ===============  ===============================================
    PROBEX_MAX_HEADER_BYTES         100_000_000      the JSON header of one safetensors file
    PROBEX_MAX_TENSORS              100_000          tensors declared in one safetensors file
    PROBEX_MAX_ZOO_HEADER_BYTES     1_073_741_824    header bytes of all the files of one zoo
    PROBEX_MAX_ZOO_TENSORS          5_000_000        tensors of all the files of one zoo
    PROBEX_MAX_LAYER_BYTES          134_217_728      one layer as a float32 matrix [d_W, d_H] (128 MiB,
                                                     e.g. 8192 x 4096), and any one tensor read from
                                                     a server
    PROBEX_REMOTE_DEADLINE          300              seconds one remote read may take in all
    ==============================  ===============  ===============================================

The layer limit sits well above the largest matrices of the models ProbeX is used on (Stable Diffusion's
largest LoRA-merged layer is 1280 x 10240, 52 MB; ViT-L's 4096 x 1024): a rank-1 LoRA pair of a
few kilobytes may declare a 100000 x 100000 layer (40 GB once merged), and is refused before the
merge. A tensor shape has at most :data:`MAX_DIMENSIONS` axes (no real checkpoint comes near it).
Going over a limit raises :class:`~probex.errors.LimitError` (a ``ZooError``), whose message
names the file, the figure, the limit and the variable to set.
"""

from __future__ import annotations

import math
import os

from probex.errors import LimitError, ProbeXError

#: The most axes a tensor shape may have.
MAX_DIMENSIONS = 64

DEFAULTS: dict[str, int] = {
    "PROBEX_MAX_HEADER_BYTES": 100_000_000,
    "PROBEX_MAX_TENSORS": 100_000,
    "PROBEX_MAX_ZOO_HEADER_BYTES": 1 << 30,
    "PROBEX_MAX_ZOO_TENSORS": 5_000_000,
    "PROBEX_MAX_LAYER_BYTES": 1 << 27,
    "PROBEX_REMOTE_DEADLINE": 300,
}


def limit(name: str) -> int:
    """The current value of one limit: ``$name`` when set (a positive whole number), else its default."""
    if name not in DEFAULTS:
        raise KeyError(f"no limit {name!r}; limits: {', '.join(DEFAULTS)}")
    text = os.environ.get(name, "").strip().replace("_", "")
    if not text:
        return DEFAULTS[name]
    try:
        value = int(text)
    except ValueError:
        raise ProbeXError(f"${name} must be a positive whole number; got {os.environ[name]!r}") from None
    if value < 1:
        raise ProbeXError(f"${name} must be a positive whole number; got {value}")
    return value


def human_bytes(n_bytes: float) -> str:
    """``1.5 GiB``-style size for messages."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n_bytes) < 1024 or unit == "PiB":
            return f"{n_bytes:.0f} {unit}" if unit == "B" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1024
    return f"{n_bytes:.1f} PiB"  # pragma: no cover


def check_limit(name: str, value: int, what: str) -> None:
    """Raise LimitError ``"{what} ... over the limit"`` when ``value`` passes limit ``name``."""
    bound = limit(name)
    if value > bound:
        sized = name.endswith("_BYTES")
        shown = human_bytes(value) if sized else f"{value:,}"
        shown_bound = human_bytes(bound) if sized else f"{bound:,}"
        raise LimitError(f"{what} is {shown}, over the limit of {shown_bound}; if the file is genuine, "
                         f"raise the limit with the environment variable {name}")


def check_layer_bytes(shape: tuple[int, ...] | tuple[int, int], what: str) -> None:
    """Refuse a layer whose float32 matrix would pass ``PROBEX_MAX_LAYER_BYTES``, before it is allocated."""
    check_limit("PROBEX_MAX_LAYER_BYTES", 4 * math.prod(shape), f"{what} ({' x '.join(map(str, shape))} as float32)")
