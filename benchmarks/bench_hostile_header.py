"""Hostile safetensors headers: how fast ``parse_header`` refuses a shape of 200,000 huge dimensions.

    python benchmarks/bench_hostile_header.py
    python benchmarks/bench_hostile_header.py --dimensions 200000 --naive-dimensions 20000

A header whose one tensor has a shape of ``--dimensions`` entries, each 2**62, must be refused
(its element count overflows any file) without multiplying the whole shape out. Printed side by
side: the refusal, the parse of an ordinary one-tensor header, and a naive ``math.prod`` over
``--naive-dimensions`` of the same entries (a tenth, because the whole product takes minutes:
its cost grows with the square of the number of dimensions). The 1-minute load average is
recorded, as the machine may be shared. Results go to bench_hostile_header.json beside this
script. (The test suite keeps only a "does not hang" bound of 30 s on the refusal:
tests/zoo/test_safefile.py.)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import struct
import time
from pathlib import Path

from probex.errors import ZooError
from probex.zoo.safefile import parse_header

HUGE = 4611686018427387904  # 2**62


def blob(shape: str) -> bytes:
    header = f'{{"w": {{"dtype": "F32", "shape": [{shape}], "data_offsets": [0, 4]}}}}'.encode()
    return struct.pack("<Q", len(header)) + header + b"\0" * 4


def timed(call) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def refuse(data: bytes) -> None:
    try:
        parse_header(data, len(data), "hostile.safetensors")
    except ZooError:
        return
    raise AssertionError("the hostile header was accepted")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dimensions", type=int, default=200_000)
    parser.add_argument("--naive-dimensions", type=int, default=20_000)
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    hostile = blob(",".join([str(HUGE)] * args.dimensions))
    ordinary = blob("1")
    refusal = timed(lambda: refuse(hostile))
    normal = timed(lambda: parse_header(ordinary, len(ordinary), "ordinary.safetensors"))
    naive = timed(lambda: math.prod([HUGE] * args.naive_dimensions))
    result = {
        "dimensions": args.dimensions, "header_bytes": len(hostile), "refusal_seconds": round(refusal, 4),
        "ordinary_parse_seconds": round(normal, 6), "naive_dimensions": args.naive_dimensions,
        "naive_product_seconds": round(naive, 3), "naive_over_refusal": round(naive / refusal, 1),
        "load_average": [load_before, os.getloadavg()[0]], "cpus": os.cpu_count(),
    }
    print(f"refused a {args.dimensions:,}-dimension shape ({len(hostile) / 1e6:.1f} MB header) in {refusal:.3f} s; "
          f"an ordinary header parses in {normal * 1e6:.0f} us; a naive product of only {args.naive_dimensions:,} "
          f"dimensions takes {naive:.2f} s ({result['naive_over_refusal']}x the refusal; "
          f"load average {load_before:.1f} -> {result['load_average'][1]:.1f})")
    out = Path(__file__).with_suffix(".json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
